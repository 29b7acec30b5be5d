"""`trainer=ddp` on CPU with two real processes (gloo): one run dir, rank 0 writes, and sweeps work.

Lightning starts rank 1 by re-running the command line; these tests check it lands in the run's (or
the sweep job's) directory and that no stray run or sweep directories appear.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from charlm.ddp import job_command_line

from conftest import ROOT

TINY = """\
# @package _global_
data: {path: corpus.txt, block_size: 16, batch_size: 4, val_batch_size: 8}
model: {hidden_size: 16, num_layers: 1}
trainer: {max_steps: 6, val_check_interval: 3, log_every_n_steps: 2, enable_progress_bar: false,
          enable_model_summary: false, accelerator: cpu, devices: 2}
callbacks: {progress_bar: null, sample_text: null}
threads: 1
"""


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """corpus.txt and conf/experiment/tiny.yaml (an LSTM, two CPU devices) to run in."""
    rng = random.Random(0)
    words = "the a king queen speaks of love to thee my lord what is this now good sir".split()
    (tmp_path / "corpus.txt").write_text("".join(" ".join(rng.choices(words, k=8)) + ".\n" for _ in range(150)))
    (tmp_path / "conf" / "experiment").mkdir(parents=True)
    (tmp_path / "conf" / "experiment" / "tiny.yaml").write_text(TINY)
    return tmp_path


def train(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHARLM_CACHE": str(workdir / "cache")}
    env.pop("LOCAL_RANK", None)
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "-cd",
            str(workdir / "conf"),
            *args,
            "experiment=tiny",
            "trainer=ddp",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_one_ddp_run(run_dir: Path) -> None:
    """Both ranks ran in `run_dir`; rank 0 alone wrote the events, checkpoints and result."""
    assert (run_dir / "train_ddp_process_1.log").is_file(), "rank 1 did not run in this directory"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["steps"] == 6 and result["status"] == "ok"


@pytest.mark.slow
def test_a_single_ddp_run_keeps_both_ranks_in_its_one_run_dir(workdir):
    done = train(workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()  # rank 1 made no run dir of its own
    assert_one_ddp_run(run_dir)
    assert not (run_dir / "train_ddp_process_1").exists() and not (workdir / "outputs" / "multirun").exists()


@pytest.mark.slow
def test_ddp_jobs_of_a_multirun_each_run_their_ranks_in_the_job_dir(workdir):
    done = train(workdir, "-m", "model=lstm,gru")
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (workdir / "outputs" / "multirun").iterdir()  # rank 1 started no sweep of its own
    assert not (workdir / "outputs" / "runs").exists()
    jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == [f"experiment=tiny,model={m},trainer=ddp" for m in ("gru", "lstm")]
    for job in jobs:
        assert_one_ddp_run(job)
    assert (sweep_dir / "summary.md").read_text().count("| ok |") == 2


@pytest.mark.slow
def test_ddp_jobs_of_the_joblib_launcher_are_refused_in_one_line_and_the_sweep_still_ends(workdir):
    done = train(workdir, "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "model=lstm,gru")
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (workdir / "outputs" / "multirun").iterdir()
    summary = (sweep_dir / "summary.md").read_text()
    assert summary.count("failed: trainer.strategy=ddp starts its ranks by re-running the command line") == 2
    assert not list(sweep_dir.rglob("train_ddp_process_1.log"))


def test_ddp_ranks_re_run_the_job_not_the_sweep():
    hydra = OmegaConf.create({"overrides": {"task": ["model=lstm", "+x=1"]}})
    argv = ["scripts/train.py", "-m", "-cd", "/tmp/conf", "model=lstm,gru", "+x=1", "--config-name", "train"]
    assert job_command_line(argv, hydra) == [
        "scripts/train.py",
        "--config-name",
        "train",
        "--config-dir",
        "/tmp/conf",
        "model=lstm",
        "+x=1",
    ]
