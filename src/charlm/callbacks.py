"""Callbacks that show a run learning (sample text, throughput, the hparams table) and keep it safe and averaged."""

from __future__ import annotations

import math
import signal
import threading
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.utilities import rank_zero_only

from charlm import logbook
from charlm.checkpoint import save_last_checkpoint
from charlm.checks import require_fraction
from charlm.errors import CharLMError, RunInterrupted, one_line
from charlm.record import update_result
from charlm.sampling import generate


class SampleText(L.Callback):
    """After each validation, a continuation of a fixed prompt for every logger (tag `sample`): TensorBoard's
    TEXT tab, a file in the CSV log dir, an MLflow artifact, a W&B table (`charlm.logbook.log_text`).

    Uses its own seeded generators, so sampling never shifts training randomness.
    """

    def __init__(
        self,
        prompt: str = "\n",
        max_new_tokens: int = 300,
        temperature: float = 1.0,
        top_k: int | None = None,
        seed: int = 0,
    ):
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.temperature, self.top_k, self.seed = temperature, top_k, seed

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.loggers or not pl_module.architecture.continues_text:
            return  # a model that does not continue text (seq2seq) writes its own val samples
        # A corpus may lack some prompt characters (even the newline): sample from what it has.
        prompt = "".join(ch for ch in self.prompt if ch in pl_module.vocab.chars)
        text = generate(
            pl_module.net,
            pl_module.vocab,
            prompt,
            self.max_new_tokens,
            temperature=self.temperature,
            top_k=self.top_k,
            seed=self.seed,
        )[0]
        logbook.log_text(trainer, "sample", text, trainer.global_step)


class TokenThroughput(L.Callback):
    """Logs `train/tokens_per_sec` over the last `every_n_steps` optimiser steps; 0 never logs.

    Every micro-batch's tokens count (with gradient accumulation, several make one step), and
    the rate is logged once, when the step that completes an interval ends. Validation time is
    left out: the clock restarts after each validation.
    """

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps
        self._t0: float | None = None
        self._tokens = 0
        self._last_step: int | None = None  # global_step at the end of the previous micro-batch

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0, self._last_step = None, None  # a callback reused for another fit starts afresh

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        if self._last_step is None:
            self._last_step = trainer.global_step
        if self._t0 is None:
            self._t0, self._tokens = time.perf_counter(), 0

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.every_n_steps <= 0:
            return
        self._tokens += batch["x"].numel() * trainer.world_size
        step, stepped = trainer.global_step, trainer.global_step != self._last_step
        self._last_step = step
        if stepped and step % self.every_n_steps == 0 and self._t0 is not None:
            rate = self._tokens / max(time.perf_counter() - self._t0, 1e-9)
            self._t0 = None
            if trainer.is_global_zero:
                for logger in trainer.loggers:
                    logger.log_metrics({"train/tokens_per_sec": rate}, step=trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._t0 = None


class HparamsTable(L.Callback):
    """Registers the run's settings with every logger (`charlm.logbook.log_hparams`), with `val/loss` as
    the metric of TensorBoard's HPARAMS tab, and closes the W&B run when fit ends (`logbook.finish`)."""

    def __init__(self, params: dict[str, Any] | None = None):
        self.params = params or {}

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.loggers:
            logbook.log_hparams(trainer, {**self.params, "params": pl_module.num_params}, {"val/loss": float("nan")})

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logbook.finish(trainer)

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        logbook.finish(trainer, failed=True)


class CheckpointOnInterrupt(L.Callback):
    """Ctrl-C ends training after the step (or validation) in progress, with `last.ckpt` saved there.

    Lightning's own Ctrl-C handling stops wherever the signal lands and saves nothing, so a resume
    would repeat up to `every_n_train_steps` steps. Here the first Ctrl-C only raises a flag; the run
    stops at the next step boundary, where a checkpoint is consistent, and `resume=` continues from
    exactly that step. A second Ctrl-C interrupts at once.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._step_at_start = -1

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.requested = False
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True
        self._restore()  # a second Ctrl-C is a KeyboardInterrupt again

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
        self._previous = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int):
        self._step_at_start = trainer.global_step

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.requested and trainer.global_step != self._step_at_start:  # not inside gradient accumulation
            self._stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.requested and trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._stop(trainer)

    def _stop(self, trainer: L.Trainer) -> None:
        self._restore()
        saved = save_last_checkpoint(trainer)
        where = f"; {saved} saved: continue with resume={trainer.default_root_dir}" if saved else ""
        raise RunInterrupted(f"training interrupted at step {trainer.global_step}{where}")

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore()


class RunResult(L.Callback):
    """Writes the model's size and its val/loss record to `<dirpath>/result.json` when fit ends, and also when
    it does not: Ctrl-C (`RunInterrupted`, or a second Ctrl-C's KeyboardInterrupt) records `status:
    interrupted`, any other exception `status: failed` and its `error` (as charlm.tooling.sweep words them,
    which records a job's status, error and wall time after this and so has the last word in a sweep).

    The sweep summary reads it, so a job's numbers are there even without a TensorBoard logger.
    """

    def __init__(self, dirpath: str):
        self.dirpath = dirpath
        self.val: list[tuple[int, float, float]] = []  # (step, val/loss, val/bpc)
        self._started = time.monotonic()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        metrics = trainer.callback_metrics
        if trainer.sanity_checking or "val/loss" not in metrics:
            return
        bpc = float(metrics["val/bpc"]) if "val/bpc" in metrics else math.nan
        self.val.append((trainer.global_step, float(metrics["val/loss"]), bpc))

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Path(self.dirpath).mkdir(parents=True, exist_ok=True)
        update_result(self.dirpath, **self._record(trainer, pl_module))

    @rank_zero_only
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:

        interrupted = isinstance(exception, RunInterrupted | KeyboardInterrupt)
        if isinstance(exception, RunInterrupted) or not interrupted:
            error = one_line(exception)
        else:
            error = f"training interrupted at step {trainer.global_step}"
        try:  # the record must never replace the error it records
            Path(self.dirpath).mkdir(parents=True, exist_ok=True)
            update_result(
                self.dirpath,
                **self._record(trainer, pl_module),
                status="interrupted" if interrupted else "failed",
                error=error,
                wall_time_s=round(time.monotonic() - self._started, 2),
            )
        except Exception as err:
            import logging

            logging.getLogger(__name__).warning(f"could not write {self.dirpath}/result.json: {err}")

    def _record(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "num_params": sum(p.numel() for p in pl_module.parameters()),
            "steps": trainer.global_step,
            "world_size": trainer.world_size,
            "torch_threads": torch.get_num_threads(),
        }
        if self.val:
            best = min(self.val, key=lambda v: v[1] if math.isfinite(v[1]) else math.inf)
            fields.update(
                best_val_loss=best[1],
                best_val_bpc=best[2],
                final_val_loss=self.val[-1][1],
                final_val_bpc=self.val[-1][2],
            )
        return fields


class WeightEMA(EMAWeightAveraging):
    """Lightning's EMAWeightAveraging with its own keys only (the parent passes unknown ones on to
    torch's AveragedModel, where a misspelt key would fail mid-run) and a decay checked up front."""

    def __init__(self, decay: float = 0.998, update_every_n_steps: int = 1, update_starting_at_step: int | None = None):
        require_fraction("averaging.decay", decay)
        if (
            isinstance(update_every_n_steps, bool)
            or not isinstance(update_every_n_steps, int)
            or update_every_n_steps < 1
        ):
            raise CharLMError(f"averaging.update_every_n_steps={update_every_n_steps!r} is not valid: expected >= 1")
        super().__init__(
            decay=decay, update_every_n_steps=update_every_n_steps, update_starting_at_step=update_starting_at_step
        )
