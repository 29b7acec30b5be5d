"""What a run leaves on disk: no directory for a run refused before it trained, a result.json for a run
that was interrupted, and a directory named by what the run is."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf
from test_errors import assert_one_line_error

from charlm.callbacks import RunResult
from charlm.cli.rundir import holds_only_hydra_files
from charlm.errors import RunInterrupted, one_line
from charlm.naming import run_name
from charlm.tooling.sweep import write_summary

from conftest import ROOT, compose_train, run_command, run_script, tiny_overrides, train_command

STAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
# a few overrides, so that the run's directory name is short enough to read whole
SHORT_RUN = [
    "model=bigram",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "trainer.enable_progress_bar=false",
    "threads=1",
]


def files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory and its bytes, but the logs (a refused run adds its error line there)."""
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.suffix != ".log"}


def run_dirs(cwd: Path) -> list[Path]:
    runs = cwd / "outputs" / "runs"
    return sorted(runs.iterdir()) if runs.is_dir() else []


# ---- a run refused before it trained leaves no directory


@pytest.mark.parametrize(
    ("overrides", "needles"),
    [
        (["data.path=/nonexistent"], ["error: data.path='/nonexistent' does not exist; give a text file"]),
        (["+nope=1"], ["error: unknown key 'nope'"]),
        pytest.param(
            ["trainer.accelerator=gpu"],
            ["error: trainer.accelerator=gpu needs a CUDA GPU and this machine has none"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU"),
        ),
        (["trainer.gradient_clip_algorithm=bad"], ["`gradient_clip_algorithm` bad is invalid"]),  # Lightning's
        (["data.path=${nope}"], ["error: Interpolation key 'nope' not found"]),  # OmegaConf's, in the job
    ],
    ids=["missing-corpus", "unknown-key", "gpu-without-gpu", "trainer-refusal", "bad-interpolation"],
)
def test_a_run_refused_before_training_leaves_no_run_directory(corpus, tmp_path, overrides, needles):
    done = run_command("train.py", *tiny_overrides("bigram"), f"data.path={corpus}", *overrides, cwd=tmp_path)
    assert_one_line_error(done, *needles)
    assert run_dirs(tmp_path) == []


def test_a_refused_run_keeps_a_directory_with_anything_else_in_it_and_logs_the_error_there(corpus, tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    done = train_command(run, *tiny_overrides("bigram"), f"data.path={corpus}", "+nope=1", cwd=tmp_path)
    assert_one_line_error(done, "unknown key 'nope'")
    assert (run / "notes.txt").read_text() == "keep me"
    assert "error: unknown key 'nope'" in (run / "train.log").read_text()
    assert (run / ".hydra" / "overrides.yaml").is_file()


def test_a_refused_run_into_a_trained_run_s_directory_leaves_it_as_it_was(corpus, tmp_path):
    run = tmp_path / "run"
    assert train_command(run, *tiny_overrides("bigram"), f"data.path={corpus}").returncode == 0
    before = files(run)
    done = train_command(run, *tiny_overrides("bigram"), f"data.path={corpus}", "trainer.max_steps=abc")
    assert_one_line_error(done, "trainer.max_steps='abc'")
    assert files(run) == before
    assert "error: trainer.max_steps='abc'" in (run / "train.log").read_text()


def test_a_refused_run_in_the_current_directory_removes_nothing(corpus, tmp_path):
    here = tmp_path / "here"
    here.mkdir()
    done = run_command("train.py", "hydra.run.dir=.", f"data.path={corpus}", "+nope=1", cwd=here)
    assert_one_line_error(done, "unknown key 'nope'")
    assert here.is_dir() and (here / ".hydra").is_dir() and (here / "train.log").is_file()


def test_only_hydra_s_own_files_make_a_directory_removable(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        (run / ".hydra" / name).write_text("{}\n")
    (run / "train.log").write_text("error: unknown key 'nope'\n")
    assert holds_only_hydra_files(run, ".hydra")
    (run / "checkpoints").mkdir()
    (run / "result.json").write_text(json.dumps({"status": "failed", "error": "x", "wall_time_s": 1.0}))
    assert holds_only_hydra_files(run, ".hydra")  # an empty checkpoints/, a record of the failure only
    assert not holds_only_hydra_files(run, "hydra_elsewhere")  # no config copy: not a directory Hydra set up

    for extra in ("checkpoints/last.ckpt", "events.out.tfevents.1", "notes.txt", ".hydra/data.bin"):
        (run / extra).write_text("")
        assert not holds_only_hydra_files(run, ".hydra"), extra
        (run / extra).unlink()
    (run / "result.json").write_text(json.dumps({"status": "interrupted", "steps": 4}))
    assert not holds_only_hydra_files(run, ".hydra")
    (run / "result.json").write_text(json.dumps({"status": "failed", "steps": 3}))
    assert not holds_only_hydra_files(run, ".hydra")  # it trained


# ---- a resumed run's directory is never removed; runs are named by their overrides


def test_a_single_run_is_named_by_its_date_and_overrides_and_resume_takes_that_name(corpus, tmp_path):
    done = run_command("train.py", *SHORT_RUN, f"data.path={corpus}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = run_dirs(tmp_path)
    expected = (
        "callbacks.model_checkpoint.every_n_train_steps=2,data.path=corpus.txt,model=bigram,"
        "trainer.enable_progress_bar=false,trainer.max_steps=2,trainer.val_check_interval=2"
    )  # sorted, the path shortened to its file name, threads= left out
    assert re.fullmatch(f"{STAMP}_{re.escape(expected)}", run.name), run.name
    before = files(run)
    assert "checkpoints/last.ckpt" in before and ".hydra/overrides.yaml" in before and "result.json" in before

    for bad in ("+nope=1", "trainer.gradient_clip_algorithm=bad", "data.path=/nonexistent"):
        failed = run_command("train.py", f"resume={run}", bad, cwd=tmp_path)
        assert_one_line_error(failed)
        assert run_dirs(tmp_path) == [run]
        assert files(run) == before  # checkpoints, events, its config copy and result.json as they were

    resumed = run_command("train.py", f"resume={run}", "trainer.max_steps=4", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(tmp_path) == [run]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    scored = run_script("evaluate.py", f"ckpt_path={run}", cwd=tmp_path)  # the real command, end to end
    assert scored.returncode == 0, scored.stderr[-3000:]


def test_a_run_without_overrides_is_named_by_its_date_alone_and_a_long_one_is_cut():
    def run_dir(*overrides: str) -> str:
        return OmegaConf.select(compose_train(list(overrides), hydra=True), "hydra.run.dir")

    assert re.fullmatch(f"outputs/runs/{STAMP}", run_dir())
    assert re.fullmatch(f"outputs/runs/{STAMP}", run_dir("threads=1", "ckpt_path=last"))  # left out of names
    assert re.fullmatch(f"outputs/runs/{STAMP}_data.path=b.txt,model=gru", run_dir("model=gru", "data.path=/a/b.txt"))
    long = run_dir(*(f"+extra_{i}=value_{i}" for i in range(40)))
    assert len(Path(long).name.encode()) < 255 and re.search(r"~[0-9a-f]{10}$", long)
    assert run_name("2026-12-04_03-10-00", ["model=gru", "trainer.max_steps=5"], []) == (
        "2026-12-04_03-10-00_model=gru,trainer.max_steps=5"
    )


def test_generate_takes_a_run_directory_named_by_its_overrides(corpus, tmp_path):
    done = run_command("train.py", *SHORT_RUN, f"data.path={corpus}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = run_dirs(tmp_path)
    sampled = run_script("generate.py", f"ckpt_path={run}", "max_new_tokens=5", cwd=tmp_path)  # the real command
    assert sampled.returncode == 0, sampled.stderr[-3000:]


# ---- an interrupted run records its result


def test_ctrl_c_leaves_a_result_json_with_status_interrupted_and_the_step_reached(corpus, tmp_path):
    run = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    args = [
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "trainer.max_steps=1000000",
        "trainer.val_check_interval=1000",
        "callbacks.model_checkpoint.every_n_train_steps=2",
    ]
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run}", *args],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=tmp_path,
            env={**os.environ, "HYDRA_FULL_ERROR": "0"},
        )
        deadline = time.monotonic() + 120
        while not list((run / "checkpoints").glob("*.ckpt")):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    stderr = log.read_text()
    assert proc.returncode == 130, stderr[-3000:]
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    result = json.loads((run / "result.json").read_text())
    assert result["status"] == "interrupted" and result["steps"] == step > 0
    assert result["error"] == line.removeprefix("error: ") and result["wall_time_s"] > 0
    assert result["num_params"] > 0 and result["world_size"] == 1
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step


def fake_fit(step: int) -> tuple[SimpleNamespace, torch.nn.Module]:
    trainer = SimpleNamespace(global_step=step, world_size=1, callback_metrics={}, sanity_checking=False)
    return trainer, torch.nn.Linear(3, 2)


@pytest.mark.parametrize(
    ("exception", "status", "error"),
    [
        (RunInterrupted("interrupted at step 7; saved"), "interrupted", "interrupted at step 7; saved"),
        (KeyboardInterrupt(), "interrupted", "training interrupted at step 7"),
        (RuntimeError("out of\nmemory"), "failed", "RuntimeError: out of memory"),
    ],
)
def test_a_fit_that_raises_records_its_status_and_error_as_the_sweep_words_them(tmp_path, exception, status, error):
    trainer, module = fake_fit(7)
    RunResult(str(tmp_path)).on_exception(trainer, module, exception)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["status"], result["error"], result["steps"], result["num_params"]) == (status, error, 7, 8)
    if status == "failed":
        assert result["error"] == one_line(exception)


def test_a_sweep_summarises_a_job_that_was_interrupted(tmp_path):
    sweep = tmp_path / "sweep"
    for num, name in enumerate(["model=gru", "model=lstm"]):
        job = sweep / name
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(f"- {name}\n")
        (job / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    num: {num}\n")
    trainer, module = fake_fit(5)
    RunResult(str(sweep / "model=gru")).on_exception(trainer, module, KeyboardInterrupt())
    (sweep / "model=lstm" / "result.json").write_text(json.dumps({"status": "ok", "steps": 6, "wall_time_s": 1.0}))
    rows = write_summary(sweep)
    assert [(r["status"], r["steps"]) for r in rows] == [("interrupted", 5), ("ok", 6)]
    assert "failed: training interrupted at step 5" in (sweep / "summary.md").read_text()
