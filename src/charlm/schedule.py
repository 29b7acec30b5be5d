"""The learning-rate schedule and the parameter groups it scales: linear warm-up, then cosine decay to
`min_lr_ratio`, over the run's optimiser steps (budget=steps) or over elapsed time as a fraction of
trainer.max_time (budget=time).

The settings' defaults are written once, in conf/scheduler/default.yaml; `ScheduleSettings.of` fills any key
a caller leaves out (a test, a notebook, an older checkpoint) from that file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Timer
from omegaconf import OmegaConf

from charlm.errors import CharLMError
from charlm.models.base import CharNet


@dataclass(frozen=True)
class ScheduleSettings:
    """The `scheduler` config node, typed: also the schema `charlm.config` checks it against."""

    warmup_steps: int
    decay: str
    min_lr_ratio: float
    total_steps: int | None
    budget: str
    warmup_fraction: float

    @classmethod
    def of(cls, given: Mapping[str, Any] | None) -> ScheduleSettings:
        return cls(**{**defaults(), **(given or {})})


@cache
def defaults() -> dict[str, Any]:
    """conf/scheduler/default.yaml, the one place the schedule's defaults are written."""
    text = files("charlm.conf").joinpath("scheduler", "default.yaml").read_text(encoding="utf-8")
    return OmegaConf.to_container(OmegaConf.create(text))


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to `min_ratio` at `total_steps`.

    A callable object (not a closure) so that LambdaLR saves its settings in the checkpoint.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float, decay: bool = True):
        self.warmup_steps, self.total_steps, self.min_ratio, self.decay = warmup_steps, total_steps, min_ratio, decay

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.decay or self.total_steps <= self.warmup_steps:
            return 1.0
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return cosine_decay(self.min_ratio, progress)


class TimedWarmupCosine:
    """Learning-rate factor by elapsed training time (`progress`: a fraction of trainer.max_time): linear
    warm-up from 0 over `warmup_fraction`, then cosine decay to exactly `min_ratio` at the budget's end.

    The LightningModule sets `progress` before each scheduler step (`lr_scheduler_step`); the trainer is not
    kept here because LambdaLR saves this object's attributes in the checkpoint.
    """

    def __init__(self, warmup_fraction: float, min_ratio: float, decay: bool = True):
        self.warmup_fraction, self.min_ratio, self.decay = warmup_fraction, min_ratio, decay
        self.progress = 0.0

    def __call__(self, step: int) -> float:
        progress = min(1.0, max(0.0, self.progress))
        if progress < self.warmup_fraction:
            return progress / self.warmup_fraction
        if not self.decay:
            return 1.0
        return cosine_decay(self.min_ratio, (progress - self.warmup_fraction) / (1 - self.warmup_fraction))


def cosine_decay(min_ratio: float, progress: float) -> float:
    """From 1 at progress 0 to `min_ratio` at progress 1, along half a cosine."""
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def time_progress(trainer: L.Trainer) -> float:
    """Training time elapsed as a fraction of trainer.max_time, from Lightning's Timer callback, which
    keeps the elapsed time in the checkpoint, so a resumed run goes on where it stopped."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if remaining is None:
        raise CharLMError("scheduler.budget=time needs trainer.max_time (e.g. trainer.max_time=00:01:00:00)")
    elapsed = timer.time_elapsed()
    return min(1.0, elapsed / max(elapsed + remaining, 1e-9))


def parameter_groups(net: CharNet, optimizer: dict) -> list[dict]:
    """The groups the optimiser is given: its own split when its class defines one (`MuonAdamW`),
    else weight decay on matrices only, never on biases or norms."""
    split = getattr(get_class(optimizer["_target_"]), "parameter_groups", None)
    if callable(split):
        return split(net)
    decay = [p for p in net.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in net.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimizer_and_schedule(net: CharNet, optimizer: dict, scheduler: dict | None, max_steps: int):
    """The optimiser config bound to `net` (groups: `parameter_groups`) and its warm-up/cosine LambdaLR.

    One definition for the LightningModule and the benchmark's plain loop, so both train alike.
    """
    bound = instantiate(optimizer, _partial_=True)(parameter_groups(net, optimizer))
    return bound, torch.optim.lr_scheduler.LambdaLR(bound, lr_factor(scheduler, max_steps))


def lr_factor(sched: Mapping[str, Any] | None, max_steps: int) -> WarmupCosine | TimedWarmupCosine:
    """The schedule's factor: by optimiser steps (budget=steps, the default) or by elapsed time (budget=time)."""
    s = ScheduleSettings.of(sched)
    decay = s.decay == "cosine"
    if s.budget == "time":
        return TimedWarmupCosine(s.warmup_fraction, s.min_lr_ratio, decay)
    total = s.total_steps or max_steps
    return WarmupCosine(s.warmup_steps, total if total and total > 0 else 0, s.min_lr_ratio, decay)


def schedule_steps(trainer: L.Trainer) -> int:
    """The optimiser steps the run will take, whatever limits it (max_steps, max_epochs, limit_train_batches,
    fast_dev_run, gradient accumulation): what a step-budgeted schedule decays over; -1 when unbounded."""
    steps = trainer.estimated_stepping_batches
    return int(steps) if math.isfinite(steps) and steps > 0 else -1
