"""The one LightningModule: training, validation, optimiser, schedule and carried state for
every architecture. An architecture only supplies its `net` (see `models/base.py`).

Its hyperparameters are plain dicts and a vocabulary string, so a checkpoint rebuilds the
model with nothing else and loads with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import get_class
from torchmetrics import MeanMetric

from charlm.checkpoint import load_checkpoint, save_last_checkpoint
from charlm.errors import CharLMError
from charlm.loss import next_char_loss, summed_loss
from charlm.models import ARCHITECTURES, Architecture, architecture
from charlm.models.base import CharNet, detach_state
from charlm.schedule import TimedWarmupCosine, optimizer_and_schedule, schedule_steps, time_progress
from charlm.vocab import Vocab

log = logging.getLogger(__name__)

DIVERGENCE_CHECK_STEPS = 50  # how often the loss is checked when the step logs nothing


def build_net(model: dict, vocab_size: int) -> CharNet:
    """The net a model config (or a checkpoint's `model` dict) names, if it is a registered architecture."""
    target = model.get("_target_")
    arch = architecture(target)
    if arch is None:
        known = sorted(a.net for a in ARCHITECTURES.values())
        raise CharLMError(f"model target {target!r} is not a charlm model; expected one of {known}")
    kwargs = {k: v for k, v in model.items() if k not in ("_target_", "compile")}
    return get_class(arch.net)(vocab_size=vocab_size, **kwargs)


def module_class(model: dict) -> type[CharLM]:
    """The LightningModule class that trains `model` (a model config or checkpoint's `model` dict)."""
    arch = architecture(model.get("_target_")) if isinstance(model, dict) else None
    return get_class(arch.module) if arch is not None else CharLM


def load_module(path: str | Path) -> CharLM:
    """The LightningModule a checkpoint file holds, rebuilt from its own settings and weights (on the CPU)."""
    ckpt = load_checkpoint(path)
    hp = dict(ckpt["hyper_parameters"])
    hp["compile"] = False
    try:
        module = module_class(hp.get("model", {}))(**hp)
        module.load_state_dict(ckpt["state_dict"])
    except (TypeError, RuntimeError, KeyError) as err:
        raise CharLMError(f"{path} does not match any charlm model: {str(err).splitlines()[0][:200]}") from None
    return module


def is_last_step(trainer: L.Trainer) -> bool:
    """Whether the optimiser step just taken is the run's last by its step or epoch limit."""
    if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
        return True
    epochs = trainer.max_epochs
    return (
        epochs is not None
        and epochs > 0
        and trainer.current_epoch + 1 >= epochs
        and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    )


class CharLM(L.LightningModule):
    vocab_class: Callable[[str], Any] = Vocab  # builds the vocabulary from the checkpoint's string

    def __init__(
        self,
        model: dict,
        vocab: str,
        optimizer: dict,
        scheduler: dict | None = None,
        carry_state: bool = True,
        compile: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.vocab = self.vocab_class(vocab)
        self.net = build_net(model, len(self.vocab))
        if compile:
            self.net.compile()  # in place: parameter names keep no `_orig_mod.` prefix
        self.carry_state = carry_state and self.net.carries_state
        self.train_state: Any = None  # hidden state carried across stream batches
        self._train_record: tuple[torch.Tensor, int | torch.Tensor, dict[str, float]] | None = None
        self._written_step = -1  # the last step whose train metrics were written
        self.val_loss = MeanMetric()

    @property
    def architecture(self) -> Architecture:
        """The registry's entry for this module's net: what it trains on and which jobs apply to it."""
        return architecture(self.hparams.model.get("_target_"))

    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def forward(self, ids: torch.Tensor, state: Any = None):
        return self.net(ids, state)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        x, y = batch["x"], batch["y"]  # (B, T)
        state = None if (batch["reset"] or not self.carry_state) else self.train_state
        logits, state = self.net(x, state)  # (B, T, V)
        if self.carry_state:
            self.train_state = detach_state(state)
        loss = next_char_loss(logits, y)
        self.log_train(loss, x.numel())
        return loss

    def log_train(
        self, loss: torch.Tensor, batch_size: int | torch.Tensor, extra: dict[str, float] | None = None
    ) -> None:
        """Keep this step's train loss; `on_train_batch_end` writes it on the steps that log.

        Writing costs Lightning ~0.25 ms of bookkeeping and the finiteness check is a host sync on a
        GPU, so neither happens on the other steps.
        """
        self._train_record = (loss.detach(), batch_size, extra or {})

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Every run ends measured: the last step (max_steps, the last epoch's last batch, or a stop asked for
        by max_time or early stopping) logs its train loss and, through `should_stop`, is validated."""
        step = self.global_step  # optimiser steps done, this one included
        if step == self._written_step or self._train_record is None:
            return  # a micro-batch of gradient accumulation: the step is not done yet
        if is_last_step(self.trainer):
            self.trainer.should_stop = True  # Lightning validates a step after which training stops
        every = self.trainer.log_every_n_steps
        if self.trainer.should_stop or (every > 0 and step % every == 0):
            self.write_train()
        if self.trainer.should_stop:
            save_last_checkpoint(self.trainer)  # last.ckpt holds the final step, not the last multiple of N
        elif step % DIVERGENCE_CHECK_STEPS == 0:
            self.check_finite(self._train_record[0])

    def check_finite(self, loss: torch.Tensor) -> None:
        if not torch.isfinite(loss):
            raise CharLMError(
                f"training diverged: loss is {loss.item()} at step {self.global_step}; "
                "stopped without saving (try a lower optimizer.lr)"
            )

    def write_train(self) -> None:
        """train/loss and lr (and a subclass's extras) at the step just trained, to the bar and the loggers."""
        loss, batch_size, extra = self._train_record
        self.check_finite(loss)
        self._written_step = self.global_step
        self.log("train/loss", loss, prog_bar=True, logger=False, batch_size=int(batch_size))
        if self.trainer.is_global_zero:
            metrics = {"train/loss": float(loss), "train/lr": self.trainer.optimizers[0].param_groups[0]["lr"], **extra}
            for logger in self.loggers:
                logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch  # (B, T); padding in y is IGNORE
        logits, _ = self.net(x, None)
        loss_sum, count = summed_loss(logits, y)
        self.val_loss.update(loss_sum / count, weight=count)

    def on_validation_epoch_end(self) -> None:
        self.log_split_loss("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)  # `test=true`: the test split, scored as validation scores val

    def on_test_epoch_end(self) -> None:
        self.log_split_loss("test")

    def log_split_loss(self, split: str) -> None:
        """`<split>/loss` and `<split>/bpc` from the losses gathered since the last call."""
        loss = self.val_loss.compute()
        self.val_loss.reset()
        self.log_val({f"{split}/loss": loss, f"{split}/bpc": loss / math.log(2)})

    def log_val(self, metrics: dict[str, torch.Tensor]) -> None:
        """One way to log validation results, so a subclass's extra metrics land at the same step."""
        # For checkpoints and the progress bar; the loggers get the values at the step trained so far,
        # which Lightning's own epoch-end logging would put one step earlier.
        # The values are already reduced over ranks (torchmetrics); sync_dist only averages equal numbers.
        self.log_dict(metrics, prog_bar=True, logger=False, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            shown = ", ".join(f"{k} {float(v):.4f}" for k, v in metrics.items())
            log.info(f"step {self.global_step}: {shown}")
            for logger in self.loggers:
                logger.log_metrics({k: float(v) for k, v in metrics.items()}, step=self.global_step)

    def configure_optimizers(self):
        optimizer, scheduler = optimizer_and_schedule(
            self.net, dict(self.hparams.optimizer), self.hparams.scheduler, schedule_steps(self.trainer)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """A time-budgeted schedule reads the elapsed time just before it sets the next step's lr."""
        factors = getattr(scheduler, "lr_lambdas", ())
        if factors and isinstance(factors[0], TimedWarmupCosine):
            factors[0].progress = time_progress(self.trainer)  # one object, shared by every group
        super().lr_scheduler_step(scheduler, metric)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip for fused optimisers (fused AdamW) too, when no GradScaler is in play (32-true, bf16-mixed).

        Lightning refuses to clip for any optimiser that unscales inside its step, because under
        16-mixed the gradients would still be scaled; without a scaler they are the true gradients.
        """
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if gradient_clip_val and scaler is None and getattr(optimizer, "_step_supports_amp_scaling", False):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if gradient_clip_algorithm == "value":
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        bad = [name for name, p in self.net.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise CharLMError(
                f"training diverged: non-finite weights in {bad[0]} at step {self.global_step}; "
                "the last good checkpoint was kept (try a lower optimizer.lr)"
            )
        # Where training stands beyond weights and optimiser: the carried hidden state and the
        # random number generators that draw dropout masks. Both are needed for an exact resume.
        checkpoint["train_state"] = self.train_state
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_state = checkpoint.get("train_state")
        rng = checkpoint.get("rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])
            if rng["cuda"] and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])
