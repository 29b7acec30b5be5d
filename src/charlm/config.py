"""Checks on the composed config that must pass before anything is built or written.

Values that Lightning or the models would only reject deep inside a run (a string where a
number belongs, a zero size) are refused here with the key, the value and what is valid.
Range checks for sizes live with the classes that take them (models, data module).
"""

from __future__ import annotations

import os

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from charlm.errors import CharLMError, in_multirun

# key -> (accepted types, what to tell the user). A key absent from the config is skipped.
TYPED_KEYS: dict[str, tuple[tuple[type, ...], str]] = {
    "seed": ((int,), "an integer"),
    "threads": ((int,), "an integer (0 = all cores)"),
    "trainer.max_steps": ((int,), "an integer (-1 = no limit)"),
    "trainer.max_epochs": ((int, type(None)), "an integer or null"),
    "trainer.val_check_interval": ((int, float), "a number of steps (int) or a fraction of an epoch (float)"),
    "trainer.limit_val_batches": ((int, float), "a number of batches (int) or a fraction (float)"),
    "trainer.gradient_clip_val": ((int, float, type(None)), "a number or null"),
    "trainer.log_every_n_steps": ((int,), "an integer"),
    "trainer.accumulate_grad_batches": ((int,), "an integer"),
    "data.block_size": ((int,), "a positive integer"),
    "data.batch_size": ((int,), "a positive integer"),
    "data.epoch_batches": ((int,), "a positive integer"),
    "data.val_fraction": ((float,), "a fraction in (0, 1)"),
    "model.hidden_size": ((int,), "a positive integer"),
    "model.num_layers": ((int,), "a positive integer"),
    "model.embedding_dim": ((int,), "a positive integer"),
    "model.n_layer": ((int,), "a positive integer"),
    "model.n_head": ((int,), "a positive integer"),
    "model.n_embd": ((int,), "a positive integer"),
    "model.dropout": ((int, float), "a number in [0, 1)"),
    "optimizer.lr": ((int, float), "a positive number"),
    "optimizer.weight_decay": ((int, float), "a number >= 0"),
    "scheduler.warmup_steps": ((int,), "an integer >= 0"),
    "scheduler.min_lr_ratio": ((int, float), "a number in [0, 1]"),
    "callbacks.model_checkpoint.every_n_train_steps": ((int, type(None)), "a positive integer or null"),
}


def check_config(cfg: DictConfig) -> None:
    for key, (types, valid) in TYPED_KEYS.items():
        value = OmegaConf.select(cfg, key, default="<absent>")
        if isinstance(value, str) and value == "<absent>":
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            raise CharLMError(f"{key}={value!r} is not valid: expected {valid}")
    lr = OmegaConf.select(cfg, "optimizer.lr")
    if lr is not None and lr <= 0:
        raise CharLMError(f"optimizer.lr={lr} is not valid: expected a positive number")
    steps = OmegaConf.select(cfg, "trainer.max_steps")
    if steps is not None and steps == 0 or (steps is not None and steps < -1):
        raise CharLMError(f"trainer.max_steps={steps} is not valid: expected a positive integer (or -1 for no limit)")
    every = OmegaConf.select(cfg, "callbacks.model_checkpoint.every_n_train_steps")
    if every is not None and every < 1:
        raise CharLMError(f"callbacks.model_checkpoint.every_n_train_steps={every} is not valid: expected >= 1")


def resolve_threads(cfg: DictConfig) -> int:
    """Torch threads for this job: `threads`, or its share of the cores when sweep jobs run side by side.

    The share: a submitit job's `cpus_per_task`, else all cores divided by `parallel_jobs`, which
    null leaves to the multirun's launcher (joblib's n_jobs; 1 for jobs that run one at a time).
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
    return max(1, cores // jobs)
