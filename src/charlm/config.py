"""The training config: its schema (`TrainConfig`, checked by `charlm.options` as every command's options
are) and the checks across keys that must pass before anything is built or written, the schedule's budget
and the torch threads a job takes.

The top level and `scheduler` are the dataclasses `TrainConfig` below and `charlm.schedule.ScheduleSettings`;
each node with a `_target_` (data, model, trainer, optimizer, each callback and logger) is checked against
its target's constructor. Range checks for sizes live with the classes that take them (models, data module).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from charlm.checks import require_fraction
from charlm.errors import CharLMError
from charlm.hydra_run import in_multirun
from charlm.naming import job_dirname  # noqa: F401 - registers the run-name resolvers the configs use
from charlm.options import check_node
from charlm.schedule import ScheduleSettings
from charlm.schedule import defaults as schedule_defaults


@dataclass
class TrainConfig:
    """The top level of a training config, as a schema (types only: the values and their defaults are
    conf/train.yaml's); each `Any` group is checked against its own `_target_`."""

    seed: int
    tags: list[str]
    threads: int
    parallel_jobs: int | None
    ckpt_path: str | None
    train: bool
    test: bool
    matmul_precision: str | None
    reuse_freed_memory: bool
    data: Any
    model: Any
    trainer: Any
    optimizer: Any
    averaging: Any
    scheduler: ScheduleSettings
    logger: Any
    callbacks: Any
    paths: Any
    debug: Any
    hydra: Any


def check_config(cfg: DictConfig) -> None:
    check_node("", OmegaConf.to_container(cfg, resolve=False), TrainConfig, "train")
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if isinstance(lr, (int, float)) and lr <= 0:
        raise CharLMError(f"optimizer.lr={lr} is not valid: expected a positive number")
    steps = OmegaConf.select(cfg, "trainer.max_steps")
    if isinstance(steps, int) and (steps == 0 or steps < -1):
        raise CharLMError(f"trainer.max_steps={steps} is not valid: expected a positive integer (or -1 for no limit)")
    check_budget(cfg)
    every = OmegaConf.select(cfg, "callbacks.model_checkpoint.every_n_train_steps")
    if isinstance(every, int) and every < 1:
        raise CharLMError(f"callbacks.model_checkpoint.every_n_train_steps={every} is not valid: expected >= 1")


def step_limit(steps: int, max_time: str | None, max_epochs: int | None = None) -> int:
    """trainer.max_steps by default: `steps`, or no step limit (-1) when trainer.max_time sets a time budget
    or trainer.max_epochs an epoch count, so that what the user set, not a step count meant for the default
    run on a slower machine, ends the run."""
    return -1 if max_time or max_epochs else steps


OmegaConf.register_new_resolver("charlm.step_limit", step_limit, replace=True)


def schedule_budget(cfg: DictConfig) -> str:
    """scheduler.budget with `auto` decided: time when trainer.max_time is set, else steps."""
    budget = OmegaConf.select(cfg, "scheduler.budget", default=schedule_defaults()["budget"])
    if budget == "auto":
        return "time" if OmegaConf.select(cfg, "trainer.max_time") else "steps"
    return budget


def check_budget(cfg: DictConfig) -> None:
    """A time-budgeted schedule needs the budget (trainer.max_time) and a warm-up shorter than it; a
    step-budgeted one needs a step count to decay over."""
    budget = OmegaConf.select(cfg, "scheduler.budget", default=schedule_defaults()["budget"])
    if budget not in ("auto", "steps", "time"):
        raise CharLMError(f"scheduler.budget={budget!r} is not valid; choose one of auto, steps, time")
    fraction = OmegaConf.select(cfg, "scheduler.warmup_fraction", default=schedule_defaults()["warmup_fraction"])
    if isinstance(fraction, (int, float)):  # other types are the schema's to refuse
        require_fraction("scheduler.warmup_fraction", fraction)
    if budget == "time" and OmegaConf.select(cfg, "trainer.max_time") is None:
        raise CharLMError("scheduler.budget=time needs trainer.max_time (e.g. trainer.max_time=00:01:00:00)")
    decays = OmegaConf.select(cfg, "scheduler.decay", default=schedule_defaults()["decay"]) == "cosine"
    total = OmegaConf.select(cfg, "scheduler.total_steps") or OmegaConf.select(cfg, "trainer.max_steps")
    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    bounded = isinstance(epochs, int) and epochs > 0 or OmegaConf.select(cfg, "trainer.fast_dev_run")
    if schedule_budget(cfg) == "steps" and decays and isinstance(total, int) and total < 0 and not bounded:
        raise CharLMError(
            "scheduler.budget=steps decays over the run's steps, which trainer.max_steps=-1 leaves unbounded; "
            "set trainer.max_steps, trainer.max_epochs or scheduler.total_steps, or use scheduler.budget=time"
        )


def resolve_threads(cfg: DictConfig) -> int:
    """Torch threads for this job: `threads`, or the cores it can have: its share when sweep jobs run side
    by side, else the cores that other work leaves free when it starts.

    The share: a submitit job's `cpus_per_task`, else all cores divided by `parallel_jobs`, which
    null leaves to the multirun's launcher (joblib's n_jobs; 1 for jobs that run one at a time).
    Free cores, because a thread that shares its core with another process holds every other thread
    up at each parallel step: on 2 cores with one busy process beside it, the default LSTM took 55.6 s
    for 100 steps with 2 threads and 32.0 s with 1 (quiet: 20.3 s with 2, 33.7 s with 1).
    """
    threads = int(cfg.get("threads") or 0)
    if threads > 0:
        return threads
    launcher = HydraConfig.get().launcher if in_multirun() else {}
    if launcher.get("cpus_per_task"):
        return int(launcher["cpus_per_task"])
    cores = os.cpu_count() or 1
    jobs = int(cfg.get("parallel_jobs") or launcher.get("n_jobs") or 1)
    if jobs < 0:  # joblib: -1 = one job per core, -2 = all cores but one ...
        jobs = max(1, cores + 1 + jobs)
    if jobs > 1:
        return max(1, cores // jobs)
    return max(1, cores - math.floor(busy_cores() + 0.5))


def busy_cores(sample_s: float = 0.25) -> float:
    """How many cores other processes keep busy now, from /proc/stat over `sample_s` (0 where unreadable).
    This process is idle while it samples, so what is busy is someone else's work."""

    def snapshot() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(x) for x in stat.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        return sum(ticks), ticks[3] + ticks[4]

    try:
        total0, idle0 = snapshot()
        time.sleep(sample_s)
        total1, idle1 = snapshot()
    except (OSError, ValueError, IndexError):
        return 0.0
    total = total1 - total0
    return 0.0 if total <= 0 else (1 - (idle1 - idle0) / total) * (os.cpu_count() or 1)
