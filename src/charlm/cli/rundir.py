"""A single run's directory: its name, and no trace left in it by a run refused before it trained.

Named: `outputs/runs/<date_time>_<overrides>` (`conf/hydra/default.yaml`), the overrides flat and sorted as a
sweep job's directory has them (`charlm.naming.job_dirname`: path values shortened to their file name,
a long list cut and hashed), so TensorBoard, MLflow and W&B show what each run is; no overrides, the date alone.

Refused runs: Hydra makes the run directory and writes its config copy (`.hydra/`) and `train.log` into it
before the job's first line runs, so a run refused for a bad path, key or accelerator used to leave a
directory that looks like a run and holds none, and a refused `resume=` overwrote the run's
`.hydra/overrides.yaml` with the refused command line (the next `resume=` repeated the mistake). Now, when a
single run ends in a user error (`tidy_refused_run`, called where the error becomes its one line):

- a directory that was there before the run keeps what it had: its config copy and result.json are put back
  as `NoteRunDir` found them, unless the run wrote anything else there (then it trained, and they are its);
- a directory the run made is removed if it holds nothing but Hydra's files (`.hydra/`, `*.log`, an empty
  `checkpoints/`, a result.json recording only the failure), and only for a run that is not a resume
  (`ckpt_path` unset), not a sweep job (the summary lists those), not one rank among several, and not in
  the directory the command runs in or above it (`hydra.run.dir=.`). Whether the run made it is known from
  `NoteRunDir` (a Hydra callback that looks before the job starts); without it, only the content rule holds.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

RESULT = "result.json"
_found: dict[str, Any] = {}  # the run directory as it was before this run (NoteRunDir)
_job: dict[str, Any] = {}  # this single run's directory, as its job started (remember_run_dir)


# ---- the name


# ---- what was there before the run


class NoteRunDir(Callback):
    """Hydra callback (conf/hydra/default.yaml): before a single run's job makes its directory and writes its
    config copy there, note whether the directory exists and keep its config copy and result.json."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _found.clear()
        try:
            note_found(Path(str(config.hydra.run.dir)), config.hydra.output_subdir)
        except Exception:  # a directory Hydra cannot resolve: it says so itself, next
            _found.clear()


def note_found(run_dir: Path, config_subdir: str | None) -> None:
    run_dir = Path(os.path.abspath(run_dir))  # as Hydra makes the job's output_dir
    _found.update(dir=run_dir, existed=run_dir.exists())
    if not run_dir.is_dir():
        return
    kept: dict[str, bytes] = {}
    if config_subdir and (run_dir / config_subdir).is_dir():
        for path in (run_dir / config_subdir).glob("*.yaml"):
            if path.is_file():
                kept[f"{config_subdir}/{path.name}"] = path.read_bytes()
    if (run_dir / RESULT).is_file():
        kept[RESULT] = (run_dir / RESULT).read_bytes()
    _found.update(kept=kept, written=written_by_runs(run_dir, config_subdir))


def written_by_runs(run_dir: Path, config_subdir: str | None) -> dict[str, tuple[int, int]]:
    """Size and time of every file a run writes (checkpoints, events, samples...): all but the config copy,
    the logs and result.json, which a refused run writes too."""
    out = {}
    for path in run_dir.rglob("*"):
        rel = path.relative_to(run_dir)
        top_level_log = len(rel.parts) == 1 and path.suffix == ".log"
        if path.is_dir() or rel.parts[0] == config_subdir or rel.as_posix() == RESULT or top_level_log:
            continue
        stat = path.lstat()
        out[rel.as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return out


# ---- as the job starts, and when it is refused


def remember_run_dir(cfg: Any) -> None:
    """At the start of a single run's job: note its directory, for `tidy_refused_run`."""
    from hydra.core.hydra_config import HydraConfig

    _job.clear()
    if not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    _job.update(
        dir=Path(os.path.abspath(hydra.runtime.output_dir)),
        config_subdir=hydra.output_subdir,
        resumed=bool(cfg is not None and OmegaConf.select(cfg, "ckpt_path", default=None)),
    )


def forget_run_dir() -> None:
    _job.clear()
    _found.clear()


def tidy_refused_run() -> None:
    """The single run that just ended in a user error leaves no trace: its directory removed if it made it and
    it holds only Hydra's files, or put back as it was if it was there before. Why: see the module's docstring."""
    job, found = dict(_job), dict(_found)
    forget_run_dir()
    if not job:
        return
    run_dir: Path = job["dir"]
    if found.get("dir") != run_dir:
        found = {}
    if found.get("existed"):
        if rank_zero():  # the only rank that writes the config copy and result.json
            put_back(run_dir, job["config_subdir"], found)
    elif not job["resumed"]:
        remove_untrained_run_dir(run_dir, job["config_subdir"])


def put_back(run_dir: Path, config_subdir: str | None, found: dict[str, Any]) -> bool:
    """Restore the config copy and result.json a directory had before a run that wrote nothing else there."""
    if "written" not in found or written_by_runs(run_dir, config_subdir) != found["written"]:
        return False  # the run wrote checkpoints or events: what it left is its record
    kept: dict[str, bytes] = found.get("kept", {})
    try:
        for rel, data in kept.items():
            (run_dir / rel).write_bytes(data)
        result = run_dir / RESULT
        if RESULT not in kept and result.is_file() and records_only_a_failure(result):
            result.unlink()
    except OSError:
        return False
    return True


def remove_untrained_run_dir(run_dir: Path, config_subdir: str | None) -> bool:
    """Remove `run_dir` if it holds nothing but Hydra's files and is nobody else's; returns whether it did."""
    if not config_subdir or not started_alone() or run_dir.is_symlink() or not run_dir.is_dir():
        return False
    here = Path.cwd().resolve()
    if run_dir.resolve() == here or run_dir.resolve() in here.parents:
        return False
    if not holds_only_hydra_files(run_dir, config_subdir):
        return False
    close_log_files(run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    return not run_dir.exists()


def rank_zero() -> bool:
    return all(os.environ.get(key, "0") == "0" for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"))


def started_alone() -> bool:
    """False in a rank of a torchrun/srun launch or of Lightning's DDP, whose run directory other ranks share."""
    from charlm.cli.launch import detect

    return rank_zero() and int(os.environ.get("WORLD_SIZE") or 1) <= 1 and detect() is None


def holds_only_hydra_files(run_dir: Path, config_subdir: str) -> bool:
    """Whether `run_dir` holds Hydra's config copy (`config_subdir`, YAML files only) and nothing else but
    log files, an empty `checkpoints/` and a result.json that records a failure before any step."""
    config = run_dir / config_subdir
    if config.is_symlink() or not config.is_dir():
        return False
    if any(p.is_symlink() or not p.is_file() or p.suffix != ".yaml" for p in config.iterdir()):
        return False
    for entry in run_dir.iterdir():
        if entry.name == config_subdir:
            continue
        if entry.is_symlink():
            return False
        if entry.is_file() and entry.suffix == ".log":
            continue
        if entry.name == "checkpoints" and entry.is_dir() and not any(entry.iterdir()):
            continue
        if entry.name == RESULT and entry.is_file() and records_only_a_failure(entry):
            continue
        return False
    return True


def records_only_a_failure(path: Path) -> bool:
    """A result.json with a failure and no training in it (what charlm.tooling.sweep records for a run that
    failed as it started)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("status") == "failed" and not record.get("steps")


def close_log_files(run_dir: Path) -> None:
    """Close and drop the logging handlers that write into `run_dir` (Hydra's train.log) before it goes."""
    root = logging.getLogger()
    inside = run_dir.resolve()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and inside in Path(handler.baseFilename).resolve().parents:
            root.removeHandler(handler)
            handler.close()
