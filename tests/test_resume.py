"""Never lose a run: SIGKILL at any moment, resume, and end exactly where an uninterrupted run ends."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlm.checkpoint import is_resumable

from conftest import ROOT, make_text, run_command, tiny_overrides, train_command

STEPS, EVERY, VAL_EVERY = 40, 4, 10
# `python -c SLOW_CHECKPOINT_WRITES SCRIPT ARGS` runs SCRIPT as `python SCRIPT ARGS` would, but each checkpoint,
# once its bytes are written and synced to its temporary file, waits 0.25 s before it is renamed into place:
# a kill then lands inside a checkpoint write often enough to test one.
SLOW_CHECKPOINT_WRITES = """
import os, runpy, sys, time
rename = os.replace
def rename_slowly(src, dst, *args, **kwargs):
    if str(dst).endswith(".ckpt") and str(src).endswith(".tmp"):
        time.sleep(0.25)
    return rename(src, dst, *args, **kwargs)
os.replace = rename_slowly
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_args(model: str, corpus: Path, sampling: str) -> list[str]:
    return [
        *tiny_overrides(model),
        f"data.path={corpus}",
        f"data.sampling={sampling}",
        f"trainer.max_steps={STEPS}",
        f"trainer.val_check_interval={VAL_EVERY}",
        f"callbacks.model_checkpoint.every_n_train_steps={EVERY}",
        "model.dropout=0.1",
    ]


def start(run_dir: Path, args: list[str]) -> subprocess.Popen:
    script = str(ROOT / "scripts" / "train.py")
    return subprocess.Popen(
        [sys.executable, "-c", SLOW_CHECKPOINT_WRITES, script, f"hydra.run.dir={run_dir}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(condition, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for the training process"
        time.sleep(0.005)


def kill_then_resume(run: Path, args: list[str]) -> None:
    """Start a run, SIGKILL it once it has written a checkpoint, and finish it with ckpt_path=last."""
    proc = start(run, args)
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] < STEPS
    done = train_command(run, *args, "ckpt_path=last")
    assert done.returncode == 0, done.stderr[-3000:]


def final_state(run_dir: Path) -> tuple[dict, dict[int, float]]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return ckpt["state_dict"], {e.step: e.value for e in acc.Scalars("val/loss")}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(make_text(20000), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
    """Reference runs, one per (model, sampling), computed once."""
    cache = {}

    def get(model: str, sampling: str):
        if (model, sampling) not in cache:
            run = tmp_path_factory.mktemp("reference")
            done = train_command(run, *run_args(model, corpus, sampling))
            assert done.returncode == 0, done.stderr[-3000:]
            cache[model, sampling] = final_state(run)
        return cache[model, sampling]

    return get


def assert_same_run(resumed, reference) -> None:
    weights, val = resumed
    ref_weights, ref_val = reference
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
    assert sorted(val) == [10, 20, 30, 40]  # every validation present once per step in TensorBoard
    assert val[STEPS] == pytest.approx(ref_val[STEPS], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "sampling"), [("lstm", "stream"), ("transformer", "random")])
def test_kill_during_a_checkpoint_write_then_resume_matches_uninterrupted_run(
    model, sampling, corpus, tmp_path, uninterrupted
):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    proc = start(run, run_args(model, corpus, sampling))
    # The second write of last.ckpt: a complete one exists and a temporary one is being written.
    wait_for(lambda: (ckpts / "last.ckpt").exists() and any(ckpts.glob(".last.ckpt.*.tmp")))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert is_resumable(ckpts / "last.ckpt")  # the kill cannot have damaged it
    done = run_command("train.py", f"resume={run}")  # the shorthand: the run's own overrides + ckpt_path=last
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(final_state(run), uninterrupted(model, sampling))


@pytest.mark.slow
@pytest.mark.parametrize(("model", "sampling"), [("lstm", "stream"), ("lstm", "random")])
def test_kill_at_an_arbitrary_step_then_resume_matches_uninterrupted_run(
    model, sampling, corpus, tmp_path, uninterrupted
):
    run = tmp_path / "run"
    args = run_args(model, corpus, sampling)
    proc = start(run, args)
    wait_for(lambda: (run / "checkpoints" / "last.ckpt").exists())
    time.sleep(random.Random(hash((model, sampling))).uniform(0.1, 0.8))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = train_command(run, *args, "ckpt_path=last")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(final_state(run), uninterrupted(model, sampling))


@pytest.mark.slow
def test_an_averaged_run_killed_and_resumed_matches_an_uninterrupted_run(corpus, tmp_path):
    args = [*run_args("lstm", corpus, "random"), "averaging=ema", "averaging.decay=0.9"]
    reference = tmp_path / "reference"
    assert train_command(reference, *args).returncode == 0
    run = tmp_path / "run"
    kill_then_resume(run, args)
    assert_same_run(final_state(run), final_state(reference))  # the average: what was validated and saved
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["current_model_state"]
    ref_trained = torch.load(reference / "checkpoints" / "last.ckpt", weights_only=True)["current_model_state"]
    for name, tensor in ref_trained.items():
        torch.testing.assert_close(trained[name], tensor, rtol=1e-5, atol=1e-6, msg=name)


def test_resume_skips_a_damaged_last_checkpoint_or_names_it(corpus, tmp_path):
    run = tmp_path / "run"
    args = [*tiny_overrides("gru"), f"data.path={corpus}"]
    assert train_command(run, *args).returncode == 0
    # A best checkpoint older than last.ckpt (a best at the final step is last.ckpt's other name): steps 7-9
    # are not validated.
    resumed = train_command(run, *args, "trainer.max_steps=9", "ckpt_path=last", "trainer.limit_val_batches=0")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    assert not last.samefile(next((run / "checkpoints").glob("best-*.ckpt")))
    last.write_bytes(last.read_bytes()[:1000])  # as if a non-atomic writer had been killed
    done = train_command(run, *args, "trainer.max_steps=11", "ckpt_path=last")
    assert done.returncode == 0, done.stderr[-3000:]  # resumed from best-*.ckpt instead
    for best in (run / "checkpoints").glob("best-*.ckpt"):
        best.unlink()
    last.write_bytes(b"garbage")
    done = train_command(run, *args, "trainer.max_steps=13", "ckpt_path=last")
    assert done.returncode == 2 and "last.ckpt" in done.stderr and "damaged" in done.stderr
    assert "Traceback" not in done.stderr
