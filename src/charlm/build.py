"""A run's pieces built from its composed config: process settings, the LightningModule, callbacks,
loggers and the Trainer.

The train job and the benchmark's framework loop both build through here, so a benchmark measures
exactly what training runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate as hydra_instantiate
from lightning.pytorch.callbacks import ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf

from charlm.callbacks import CheckpointOnInterrupt, HparamsTable
from charlm.checkpoint import AtomicCheckpointIO
from charlm.config import check_config, resolve_threads, schedule_budget
from charlm.console import quiet_third_party
from charlm.errors import CharLMError
from charlm.lightning_module import CharLM, module_class
from charlm.memory import reuse_freed_memory


def flat_params(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings as one flat dict, for TensorBoard's HPARAMS tab."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: resolved[k] for k in ("model", "data", "optimizer", "scheduler", "seed", "tags") if k in resolved}
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif not str(prefix).endswith("_target_"):
            flat[prefix] = node

    walk("", keep)
    return flat


def build_module(cfg: DictConfig, vocab: str) -> CharLM:
    model = OmegaConf.to_container(cfg.model, resolve=True)
    return module_class(model)(
        model=model,
        vocab=vocab,
        optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
        scheduler={**OmegaConf.to_container(cfg.scheduler, resolve=True), "budget": schedule_budget(cfg)},
        carry_state=cfg.data.get("sampling") == "stream",
        compile=bool(cfg.model.get("compile", False)),
    )


def instantiate(node: Any, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` that lets a user error from a constructor through as itself, not wrapped."""
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, CharLMError):
            raise err.__cause__ from None
        raise


def set_up_process(cfg: DictConfig) -> None:
    """Process-wide settings a run depends on; shared with the benchmark so both train alike."""
    quiet_third_party()
    check_config(cfg)
    check_accelerator(cfg)
    threads = resolve_threads(cfg)
    if threads < (os.cpu_count() or 1) and not cfg.get("threads"):
        rank_zero_info(f"torch threads: {threads} of {os.cpu_count()} cores (the others are busy; threads=N sets it)")
    if threads != torch.get_num_threads():  # setting even the same number again made steps ~2% slower here
        torch.set_num_threads(threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.get("matmul_precision"):
        torch.set_float32_matmul_precision(cfg.matmul_precision)
    if cfg.get("reuse_freed_memory", True):
        reuse_freed_memory()


def check_accelerator(cfg: DictConfig) -> None:
    """A GPU recipe on a machine without one: one line saying what to add, not Lightning's two-line refusal."""
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="auto"))
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available():
        return
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    experiment = choices.get("experiment")
    source = f" (from experiment={experiment})" if experiment else ""
    cpu_recipe = " or experiment=nanogpt_cpu, its CPU-sized version" if experiment == "nanogpt_shakespeare_char" else ""
    raise CharLMError(
        f"trainer.accelerator={accelerator}{source} needs a CUDA GPU and this machine has none: "
        f"add trainer.accelerator=cpu to run it on the CPU{cpu_recipe}"
    )


def build_trainer(cfg: DictConfig, extra_callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """The Trainer with the config's callbacks and loggers; the benchmark adds its step timer."""
    callbacks = build_callbacks(cfg)
    loggers = [instantiate(c) for c in cfg.get("logger", {}).values() if c is not None and "_target_" in c]
    callbacks += [HparamsTable(flat_params(cfg)), CheckpointOnInterrupt()]
    callbacks.extend(extra_callbacks)
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])


def build_callbacks(cfg: DictConfig) -> list[L.Callback]:
    """The `callbacks` group and the `averaging` one, less the progress bar when `trainer.enable_progress_bar=false`
    and the checkpoints in a `trainer.fast_dev_run`."""
    nodes = [*cfg.get("callbacks", {}).values(), cfg.get("averaging")]
    callbacks = [instantiate(c) for c in nodes if c is not None and "_target_" in c]
    if cfg.trainer.get("enable_model_summary", True) and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(ModelSummary())  # the plain table, logged; Lightning's default (rich) prints to stdout
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.get("fast_dev_run"):  # Lightning's ModelCheckpoint still writes last.ckpt at its train end
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    return callbacks
