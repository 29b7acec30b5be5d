"""Multiruns as a user starts them: summaries, failed jobs, Optuna with SQLite, and the launchers.

Every sweep runs the real `scripts/train.py -m` on tiny models. The tiny settings live in an
`experiment=tiny` config of the test's own (passed with --config-dir), which keeps the job
directories, named by their overrides, short.
"""

from __future__ import annotations

import csv
import json
import math
import os
import random
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import RunMode
from omegaconf import OmegaConf

from charlm.errors import CharLMError
from charlm.naming import job_dirname
from charlm.tooling.sweep import SweepCallback, plot_val_loss, read_scalars, varying_overrides

from conftest import run_command, run_script

try:
    import optuna
except ImportError:  # the optuna extra is not installed: its tests skip, the others still run
    optuna = None


def has_plugin(name: str) -> bool:
    return find_spec("hydra_plugins") is not None and find_spec(f"hydra_plugins.{name}") is not None


needs_optuna = pytest.mark.skipif(
    optuna is None or not has_plugin("hydra_optuna_sweeper"),
    reason="needs the optuna extra: pip install -e '.[optuna]'",
)
needs_joblib = pytest.mark.skipif(
    not has_plugin("hydra_joblib_launcher"), reason="needs the launchers extra: pip install -e '.[launchers]'"
)
needs_submitit = pytest.mark.skipif(
    not has_plugin("hydra_submitit_launcher"), reason="needs the launchers extra: pip install -e '.[launchers]'"
)

TINY = """\
# @package _global_
data: {path: corpus.txt, block_size: 16, batch_size: 4, val_batch_size: 8}
trainer: {max_steps: 6, val_check_interval: 3, log_every_n_steps: 2, enable_progress_bar: false,
          enable_model_summary: false}
callbacks: {progress_bar: null, sample_text: null}
threads: 1
"""


def english_like(n_chars: int = 6000, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = "the a king queen speaks of love to thee my lord what is this now good sir and night".split()
    lines = []
    while sum(map(len, lines)) < n_chars:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))).capitalize() + ".\n")
    return "".join(lines)[:n_chars]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory to run in: corpus.txt and conf/experiment/tiny.yaml."""
    (tmp_path / "corpus.txt").write_text(english_like())
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(TINY)
    return tmp_path


def sweep(workdir: Path, *overrides: str, own_process: bool = False) -> tuple[subprocess.CompletedProcess, Path]:
    """`train.py -m experiment=tiny ...` in `workdir`, in this process (`own_process=True`: in a process of its
    own, for the launchers that start processes of their own); returns the finished command and its sweep dir."""
    sweep_dir = workdir / "sweep"
    env = {"CHARLM_CACHE": str(workdir / "cache"), "HYDRA_FULL_ERROR": "1"}
    args = ["-m", "-cd", str(workdir / "conf"), "experiment=tiny", f"hydra.sweep.dir={sweep_dir}", *overrides]
    if own_process:
        return run_script("train.py", *args, env=env, cwd=workdir, timeout=120), sweep_dir
    return run_command("train.py", *args, env=env, cwd=workdir), sweep_dir


def summary_rows(sweep_dir: Path) -> list[dict[str, str]]:
    with open(sweep_dir / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_ok(row: dict[str, str]) -> None:
    assert row["status"] == "ok", row
    assert int(row["num_params"]) > 0 and int(row["steps"]) == 6
    assert math.isfinite(float(row["best_val_loss"])) and float(row["best_val_loss"]) <= float(row["final_val_loss"])
    assert abs(float(row["best_val_bpc"]) - float(row["best_val_loss"]) / math.log(2)) < 1e-4
    assert float(row["tokens_per_sec"]) > 0 and float(row["wall_time_s"]) > 0
    assert 0 <= float(row["best_val_seconds"]) <= float(row["wall_time_s"])  # on the time axis of the chart


def test_a_job_dir_names_escaped_values_as_the_user_wrote_them():
    # a multirun hands each job its overrides escaped for Hydra's grammar; a backslash is not a path here
    overrides = ["trainer.max_time=00\\:00\\:02\\:00", "model=lstm", "data.path=/data/my\\ books/a\\,b.txt"]
    assert job_dirname(overrides, []) == "data.path=a,b.txt,model=lstm,trainer.max_time=00:00:02:00"


def test_val_loss_is_read_against_seconds_since_the_job_began_and_charted_both_ways(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(tmp_path)  # its first event marks the job's start
    start = time.time()
    for step, (value, seconds) in enumerate([(2.0, 10.0), (1.5, 25.0)]):
        writer.add_scalar("val/loss", value, global_step=step, walltime=start + seconds)
    writer.close()
    loss = read_scalars(tmp_path)["val/loss"]
    assert [(step, value) for step, value, _ in loss] == [(0, 2.0), (1, 1.5)]
    assert [seconds for *_, seconds in loss] == [pytest.approx(10.0, abs=1.0), pytest.approx(25.0, abs=1.0)]
    chart = tmp_path / "val_loss.png"
    plot_val_loss([{"job": 0, "_val_loss": loss}], ["model=lstm"], chart)
    png = chart.read_bytes()
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert png[:4] == b"\x89PNG" and width > 2 * height  # two panels side by side: by step, by time


def test_a_sweep_over_the_five_models_names_each_job_by_its_overrides_and_summarises_them(workdir):
    done, sweep_dir = sweep(workdir, "model=bigram,rnn,lstm,gru,transformer")
    assert done.returncode == 0, done.stderr[-3000:]
    names = ["bigram", "rnn", "lstm", "gru", "transformer"]
    rows = summary_rows(sweep_dir)
    assert [row["dir"] for row in rows] == [f"experiment=tiny,model={name}" for name in names]
    for row in rows:
        assert_ok(row)
        job_dir = sweep_dir / row["dir"]
        assert list(job_dir.glob("events.out.tfevents.*")), "TensorBoard events belong directly in the job dir"
        assert json.loads((job_dir / "result.json").read_text())["status"] == "ok"
    table = (sweep_dir / "summary.md").read_text()
    assert all(f"`model={name}`" in table for name in names) and "Best: `model=" in table
    assert (sweep_dir / "val_loss.png").read_bytes()[:4] == b"\x89PNG"
    assert not (workdir / "outputs").exists()


def test_a_failed_job_is_listed_with_its_error_and_the_sweep_goes_on(workdir):
    done, sweep_dir = sweep(workdir, "model.hidden_size=-1,16")
    assert done.returncode == 0, done.stderr[-3000:]
    failed, good = summary_rows(sweep_dir)
    assert failed["status"] == "failed" and "hidden_size" in failed["error"] and failed["num_params"] == ""
    assert_ok(good)
    table = (sweep_dir / "summary.md").read_text()
    assert "failed: hidden_size must be a positive" in table and "2 jobs, 1 ok" in table

    (sweep_dir / "summary.md").unlink()
    again = subprocess.run(
        [sys.executable, "-m", "charlm.tooling.sweep", str(sweep_dir)], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert (sweep_dir / "summary.md").read_text() == table


@needs_optuna
def test_optuna_search_keeps_its_study_in_sqlite_and_a_second_sweep_adds_trials(workdir):
    db = workdir / "db" / "optuna.db"  # db/ does not exist: the sweep callback creates it for SQLite
    search = [
        "hparams_search=optuna",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=tiny",
    ]
    done, sweep_dir = sweep(workdir, *search, "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert len(rows) == 2 and all(row["dir"].startswith(f"{i}_") for i, row in enumerate(rows))
    for row in rows:
        assert_ok(row)
    assert (sweep_dir / "optimization_results.yaml").is_file()

    (workdir / "sweep").rename(workdir / "first")  # a second sweep adds a trial, one that fails
    done, sweep_dir = sweep(
        workdir, *search, "hydra.sweeper.n_trials=1", "hydra.sweeper.sampler.seed=7", "data.batch_size=0"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{db}")
    complete, failed = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL
    assert [t.state for t in study.trials] == [complete, complete, failed]
    assert study.best_value == min(float(row["best_val_loss"]) for row in rows)
    (row,) = summary_rows(sweep_dir)
    assert row["status"] == "failed" and "data.batch_size" in row["error"]


@needs_optuna
def test_the_transformer_search_space_trains(workdir):
    done, sweep_dir = sweep(
        workdir,
        "hparams_search=optuna_transformer",
        "trainer.max_steps=6",
        "trainer.val_check_interval=3",
        "hydra.sweeper.n_trials=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = summary_rows(sweep_dir)
    assert_ok(row)
    assert "model.n_embd=" in row["overrides"] and "model=transformer" not in row["overrides"]


@pytest.mark.slow
@needs_joblib
def test_the_parallel_launcher_runs_jobs_side_by_side_each_on_its_share_of_the_cores(workdir):
    done, sweep_dir = sweep(workdir, "hydra/launcher=parallel", "threads=0", "model=lstm,gru", own_process=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = summary_rows(sweep_dir)
    assert len(rows) == 2
    for row in rows:
        assert_ok(row)
        result = json.loads((sweep_dir / row["dir"] / "result.json").read_text())
        assert result["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)  # n_jobs: 2
    assert "Joblib.Parallel(n_jobs=2" in done.stderr + done.stdout


@pytest.mark.slow
@needs_submitit
def test_the_submitit_local_launcher_runs_a_sweep(workdir):
    done, sweep_dir = sweep(
        workdir, "hydra/launcher=slurm_local", "threads=0", "model.hidden_size=-1,16", own_process=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    failed, good = summary_rows(sweep_dir)
    assert failed["status"] == "failed" and "hidden_size" in failed["error"]
    assert_ok(good)
    assert json.loads((sweep_dir / good["dir"] / "result.json").read_text())["torch_threads"] == 1  # cpus_per_task
    assert list((sweep_dir / ".submitit").rglob("*_result.pkl"))


# ---- the pieces, without training ----------------------------------------------------------------


def job_end(tmp_path: Path, mode: RunMode, error: Exception | None, keep_going: bool = True) -> JobReturn:
    config = OmegaConf.create({"hydra": {"mode": mode, "runtime": {"output_dir": str(tmp_path)}, "job": {"num": 3}}})
    ret = JobReturn(overrides=["model.hidden_size=-1"], status=JobStatus.FAILED if error else JobStatus.COMPLETED)
    ret.return_value = error if error else 1.5
    callback = SweepCallback(keep_going=keep_going)
    callback.on_job_start(config)
    callback.on_job_end(config, ret)
    return ret


def test_in_a_multirun_a_failed_job_becomes_a_job_without_result_and_its_error_is_recorded(tmp_path):
    ret = job_end(tmp_path, RunMode.MULTIRUN, CharLMError("hidden_size must be a positive number, got -1"))
    assert ret.status == JobStatus.COMPLETED and ret.return_value is None
    record = json.loads((tmp_path / "result.json").read_text())
    assert record["status"] == "failed" and record["error"] == "hidden_size must be a positive number, got -1"
    assert record["job"] == 3 and record["overrides"] == ["model.hidden_size=-1"]


def test_a_bug_is_recorded_with_its_type_and_a_single_run_still_fails(tmp_path):
    ret = job_end(tmp_path, RunMode.RUN, ValueError("boom\nsecond line"))
    assert ret.status == JobStatus.FAILED
    assert json.loads((tmp_path / "result.json").read_text())["error"] == "ValueError: boom second line"
    assert job_end(tmp_path, RunMode.MULTIRUN, ValueError("x"), keep_going=False).status == JobStatus.FAILED
    ok = job_end(tmp_path, RunMode.MULTIRUN, None)
    assert ok.return_value == 1.5 and json.loads((tmp_path / "result.json").read_text())["status"] == "ok"


def test_jobs_are_labelled_by_the_overrides_that_tell_them_apart():
    rows = [
        {"overrides": "data.path=a.txt model=lstm seed=1", "dir": "d0"},
        {"overrides": "data.path=a.txt model=gru seed=1", "dir": "d1"},
        {"overrides": "data.path=a.txt model=gru seed=1 +x=2", "dir": "d2"},
    ]
    assert varying_overrides(rows) == ["model=lstm", "model=gru", "+x=2 model=gru"]
    assert varying_overrides(rows[:1]) == ["d0"]
