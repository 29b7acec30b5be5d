"""Checks on the composed config that must pass before anything is built or written.

A schema says which keys each node may have and of which type:
- the top level and `scheduler`: the dataclasses `TrainConfig` below and `charlm.schedule.ScheduleSettings`;
- a node with a `_target_` (data, model, trainer, optimizer, each callback and logger): the
  parameters of the target's constructor, plus Hydra's own `_target_`-style keys. A constructor that
  takes **kwargs, a target that does not import and a node without a target (`paths`) have no schema.
A misspelt key is refused with the closest valid one; a number, boolean or null of the wrong type is
refused with what is valid. Values that Lightning or the models would only reject deep inside a run
are refused here; range checks for sizes live with the classes that take them (models, data module).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import os
import time
import types
import typing
from dataclasses import dataclass
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from charlm.checks import require_fraction
from charlm.dialects import CLOSE_ENOUGH, pointer
from charlm.errors import CharLMError
from charlm.hydra_run import in_multirun
from charlm.naming import job_dirname  # noqa: F401 - registers the run-name resolvers the configs use
from charlm.schedule import ScheduleSettings
from charlm.schedule import defaults as schedule_defaults

HYDRA_KEYS = {"_target_": str, "_partial_": bool, "_recursive_": bool, "_convert_": str, "_args_": list}
# Keys of a `_target_` node that the code takes out before calling the constructor.
CONSUMED = {"model": {"compile": bool}}  # the LightningModule compiles the net (module.build_net)
NOT_CHECKED = {"hydra"}  # Hydra checks its own config


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


def dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def target_schema(target: str) -> dict[str, Any] | None:
    """The keys a `_target_` node may have and their types; None when any key may do."""
    try:
        cls = get_class(target)
        params = inspect.signature(cls).parameters.values()
    except Exception:  # noqa: BLE001 - an unimportable target is instantiate's error to report, with its cause
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that do not evaluate: keys only
        hints = {}
    schema = {p.name: hints.get(p.name, Any) for p in params if p.kind is not p.VAR_POSITIONAL}
    return {**HYDRA_KEYS, **schema}


def schema_of(path: str, node: dict, annotation: Any) -> dict[str, Any] | None:
    if dataclasses.is_dataclass(annotation):
        return dataclass_schema(annotation)
    target = node.get("_target_")
    if not isinstance(target, str):
        return None
    schema = target_schema(target)
    if schema is None:
        return None
    if path == "optimizer":
        schema.pop("params", None)  # bound by the LightningModule
    return {**schema, **CONSUMED.get(path, {})}


def scalar_types(annotation: Any) -> set[type] | None:
    """The types a value may have when `annotation` admits only numbers, booleans and null; None otherwise.

    Classes a config value can never be (Tensor, Path, timedelta) are left out of a union first.
    """
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    members = {m for m in members if not (isinstance(m, type) and m.__module__ != "builtins")}
    return members if members and members <= {int, float, bool, type(None)} else None


def describe(kinds: set[type]) -> str:
    words = ["a number" if float in kinds else "an integer" if int in kinds else ""]
    words += ["true or false" if bool in kinds else "", "null" if type(None) in kinds else ""]
    return " or ".join(w for w in words if w)


def has_type(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, bool) or value is None:
        return type(value) in kinds
    if isinstance(value, int):
        return bool(kinds & {int, float})
    return type(value) in kinds


def check_node(path: str, node: dict, annotation: Any) -> None:
    """Refuse an unknown key or a wrongly typed value in `node`, then check the nodes inside it."""
    schema = schema_of(path, node, annotation)
    for key, value in node.items():
        name = f"{path}.{key}" if path else str(key)
        if schema is not None and key not in schema:
            peer = pointer("train", name)
            if peer is not None:
                raise CharLMError(f"unknown key {name!r}: {peer}")
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=CLOSE_ENOUGH)
            hint = f" (did you mean {name[: -len(str(key))]}{close[0]}?)" if close else ""
            raise CharLMError(f"unknown key {name!r}{hint}")
        expected = schema.get(key, Any) if schema is not None else Any
        kinds = scalar_types(expected)
        interpolated = isinstance(value, str) and ("${" in value or value == "???")  # checked where it points
        if kinds is not None and not interpolated and not has_type(value, kinds):
            raise CharLMError(f"{name}={value!r} is not valid: expected {describe(kinds)}")
        if isinstance(value, dict) and name not in NOT_CHECKED:
            check_node(name, value, expected)


def check_config(cfg: DictConfig) -> None:
    check_node("", OmegaConf.to_container(cfg, resolve=False), TrainConfig)
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
