"""Training, top to bottom: check the config, build data, model, callbacks, loggers and
trainer from it, fit, and return the metric a sweeper optimises."""

from __future__ import annotations

import gc
import logging
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from charlm.build import build_module, build_trainer, instantiate, set_up_process
from charlm.checkpoint import (
    find_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    share_final_checkpoint,
)
from charlm.ddp import ddp_fit
from charlm.errors import CharLMError
from charlm.lightning_module import CharLM, load_module
from charlm.record import update_result


def resolve_ckpt_path(ckpt_path: str | None, output_dir: Path) -> str | None:
    """`ckpt_path=last` means the newest good checkpoint of this run directory."""
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        found = resume_checkpoint(output_dir)
        if found is None:
            rank_zero_info(f"no checkpoint in {output_dir / 'checkpoints'} yet: starting from scratch")
        return None if found is None else str(found)
    return str(find_checkpoint(ckpt_path, "last"))


def log_to_hydra_handlers() -> None:
    """Lightning's messages reach the console and the run's log file through Hydra's handlers on the
    root logger; the console handler the `lightning` package adds for itself would print each twice."""
    if logging.getLogger().hasHandlers():
        own = logging.getLogger("lightning")
        for handler in [h for h in own.handlers if type(h) is logging.StreamHandler]:
            own.removeHandler(handler)


def command_line() -> str:
    """The run's overrides as the user gave them (empty outside a Hydra app)."""
    if not HydraConfig.initialized():
        return ""
    return " ".join(HydraConfig.get().overrides.task) or "(defaults)"


def train(cfg: DictConfig) -> float | None:
    """Fit one model as `cfg` describes; returns the best `val/loss` (None without validation).

    `test=true` then scores the test split with the best checkpoint; `train=false` only scores a checkpoint.
    """
    log_to_hydra_handlers()
    set_up_process(cfg)
    output_dir = Path(cfg.paths.output_dir)
    if not cfg.get("train", True):
        return evaluate_checkpoint(cfg, output_dir)

    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.vocab.chars)
    check_data_fits_model(datamodule, module)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir)
    if ckpt_path is not None:
        check_resumable(ckpt_path, module)
    if cfg.get("test"):
        check_test_split(datamodule, module)

    trainer = build_trainer(cfg)
    rank_zero_info(f"overrides: {command_line()}")  # after the checks: a mistake's stderr is its one line
    if cfg.model.get("compile"):
        rank_zero_info(
            "model.compile=true: torch.compile compiles the network during the first training step and the first "
            "validation, a minute or more on a CPU before the progress bar moves (model.compile=false skips it)"
        )
    rank_zero_info(
        f"model: {cfg.model._target_.rsplit('.', 1)[-1]} with {module.num_params:,} parameters; "
        f"vocabulary of {len(datamodule.vocab)} characters; run directory {output_dir}"
    )
    with ddp_fit(trainer):  # in a multirun, DDP's extra ranks re-run this job, not the sweep
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    if getattr(trainer, "interrupted", False):
        raise CharLMError("training was interrupted")

    best_callback = val_loss_checkpoint(trainer)
    if trainer.is_global_zero and best_callback is not None:
        share_last_with_best(trainer, best_callback.best_model_path)
    for callback in trainer.checkpoint_callbacks:
        if callback.best_model_path and callback.best_model_score is not None:
            value = float(callback.best_model_score)
            rank_zero_info(f"best checkpoint: {callback.best_model_path} ({callback.monitor} {value:.4f})")
        elif callback.best_model_path and not callback.last_model_path:  # Lightning's own (callbacks=none)
            rank_zero_info(f"checkpoint: {callback.best_model_path} (step {trainer.global_step})")
        if callback.last_model_path:
            rank_zero_info(f"last checkpoint: {callback.last_model_path} (step {trainer.global_step})")
    best = best_callback.best_model_score if best_callback is not None else None
    metric = trainer.callback_metrics.get("val/loss")
    result = float(best) if best is not None else (float(metric) if metric is not None else None)
    if cfg.get("test"):
        best_path = best_callback.best_model_path if best_callback is not None else None
        if best_path:
            rank_zero_info(f"testing the best checkpoint, {best_path}")
        run_stage(trainer, trainer.test, module, datamodule, output_dir, ckpt_path=best_path or None)
    del trainer, module, datamodule  # sweeps run many jobs in one process: free everything
    gc.collect()
    return result if result is None or math.isfinite(result) else None


def check_resumable(ckpt_path: str, module: CharLM) -> None:
    """Refuse a checkpoint whose model or vocabulary differs from the config's, before training."""
    hp = load_checkpoint(ckpt_path)["hyper_parameters"]
    check_vocab(ckpt_path, hp.get("vocab"), module.hparams.vocab)
    saved, wanted = hp.get("model") or {}, module.hparams.model
    if saved != wanted:
        diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
        raise CharLMError(
            f"checkpoint {ckpt_path} holds a different model (differs in: {', '.join(diff)}); "
            "resume with the run's original model settings"
        )


def val_loss_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best val/loss (callbacks.best_checkpoint), if the run has one."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/loss"), None)


def share_last_with_best(trainer: L.Trainer, best: str) -> None:
    """One file for the final step when the best checkpoint was saved at it (charlm.checkpoint): last.ckpt is
    written at the final step before its validation, so a best checkpoint newer than it is of that step."""
    last = next((c.last_model_path for c in trainer.checkpoint_callbacks if c.last_model_path), "")
    if last and best and os.path.isfile(last) and os.path.isfile(best):
        if os.path.getmtime(best) >= os.path.getmtime(last):
            share_final_checkpoint(best, last)


def check_data_fits_model(datamodule: Any, module: CharLM) -> None:
    """The data config gives the batches the model's architecture trains on (the registry says which)."""
    wanted = get_class(module.architecture.data)
    if not isinstance(datamodule, wanted):
        model = module.hparams.model["_target_"].rsplit(".", 1)[-1]
        raise CharLMError(
            f"model {model} trains on {wanted.__name__} batches but the data config gives a "
            f"{type(datamodule).__name__} (seq2seq models take data=pairs; language models a text corpus)"
        )


def check_test_split(datamodule: Any, module: CharLM) -> None:
    """`test=true` needs a test split: refused before training, not after it."""
    if not module.architecture.continues_text:
        raise CharLMError("test=true scores a text's test split; data=pairs has none (its val pairs are scored)")
    datamodule.check_test_split()


def run_stage(trainer: L.Trainer, stage: Any, module: CharLM, datamodule: Any, output_dir: Path, **kwargs: Any) -> dict:
    """Run `trainer.validate` or `trainer.test` and record its metrics in result.json (test/loss -> test_loss)."""
    stage(module, datamodule=datamodule, verbose=False, weights_only=True, **kwargs)  # verbose: a table on stdout
    scores = {k: v for k, v in trainer.callback_metrics.items() if k.startswith(("val/", "test/"))}
    metrics = {k.replace("/", "_"): float(v) for k, v in scores.items()}
    if trainer.is_global_zero:
        update_result(output_dir, **metrics)
    return metrics


def evaluate_checkpoint(cfg: DictConfig, output_dir: Path) -> float | None:
    """`train=false ckpt_path=RUN|FILE`: the checkpoint's val/loss (and test/loss with test=true), logged and
    recorded like a training run's, with the model rebuilt from the checkpoint's own settings."""
    if not cfg.get("ckpt_path"):
        raise CharLMError("train=false scores a checkpoint: give ckpt_path=RUN_DIR or ckpt_path=FILE.ckpt")
    path = find_checkpoint(cfg.ckpt_path, "best")
    module = load_module(path)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    check_vocab(str(path), module.hparams.vocab, datamodule.vocab.chars)
    if cfg.get("test"):
        check_test_split(datamodule, module)
    trainer = build_trainer(cfg)
    rank_zero_info(f"scoring {path} (train=false); run directory {output_dir}")
    metrics = run_stage(trainer, trainer.validate, module, datamodule, output_dir)
    if cfg.get("test"):
        metrics.update(run_stage(trainer, trainer.test, module, datamodule, output_dir))
    return metrics.get("val_loss")


def check_vocab(ckpt_path: str, saved: str, data: str) -> None:
    if saved != data:
        raise CharLMError(
            f"checkpoint {ckpt_path} was trained on a different vocabulary than data.path gives; "
            "use the run's original data"
        )
