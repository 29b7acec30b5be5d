"""Training throughput: the framework's real training path against a plain PyTorch loop of the same shape."""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from charlm.build import build_module, build_trainer, instantiate, set_up_process
from charlm.errors import CharLMError
from charlm.lightning_module import build_net
from charlm.loss import next_char_loss
from charlm.models.base import CharNet, detach_state
from charlm.schedule import optimizer_and_schedule
from charlm.tooling.benchmark.measure import (
    Measurement,
    StepTimer,
    format_table,
    log,
    measure,
    peak_memory_mb,
    quiet_lightning,
    reset_peak_memory,
    run_config,
    sync,
)

# ---------------------------------------------------------------------------- training: framework and plain


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a child process forked from a server that has only imported charlm.

    Each run starts as a new training process would: glibc's allocator untouched by earlier
    runs (see `charlm.memory`), no torch threads running yet, and a peak memory of its own.
    """
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def framework_run(cfg_dict: dict, warmup: int) -> tuple[Measurement, dict[str, Any]]:
    """One fit through the project's own code path, timed step by step; returns what the plain loop needs."""
    quiet_lightning()
    cfg = OmegaConf.create(cfg_dict)
    set_up_process(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    module = build_module(cfg, datamodule.vocab.chars)
    timer = StepTimer()
    trainer = build_trainer(cfg, [timer])
    device = trainer.strategy.root_device
    base = reset_peak_memory(device)
    trainer.fit(module, datamodule=datamodule)
    loss = float(timer.loss) if timer.loss is not None else float("nan")
    result = measure(timer.stamps, timer.tokens, warmup, (peak_memory_mb(device), base), loss)
    return result, {"params": module.num_params, "device": str(device)}


def plain_optimizer(net: CharNet, cfg: DictConfig, max_steps: int):
    """The config's optimiser and schedule, with torch's default implementation (the `foreach`/`fused`
    choices are left out), as in a loop written by hand."""
    opt_cfg = OmegaConf.to_container(cfg.optimizer, resolve=True)
    opt_cfg = {k: v for k, v in opt_cfg.items() if k not in ("foreach", "fused")}
    return optimizer_and_schedule(net, opt_cfg, OmegaConf.to_container(cfg.scheduler, resolve=True), max_steps)


def autocast_for(precision: Any, device: torch.device) -> Callable[[], AbstractContextManager]:
    """The autocast Lightning's precision setting implies; the plain loop mirrors 32-true and bf16-mixed."""
    name = str(precision)
    if name in ("32", "32-true"):
        return nullcontext
    if name == "bf16-mixed":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)  # as Lightning
    raise CharLMError(f"trainer.precision={name}: the plain loop mirrors only 32-true and bf16-mixed")


def clipper(cfg: DictConfig) -> Callable[[Any], Any]:
    value = cfg.trainer.get("gradient_clip_val")
    if not value:
        return lambda params: None
    if cfg.trainer.get("gradient_clip_algorithm") == "value":
        return lambda params: torch.nn.utils.clip_grad_value_(params, value)
    return lambda params: torch.nn.utils.clip_grad_norm_(params, value)


def plain_loss(
    net: CharNet,
    x: torch.Tensor,
    y: torch.Tensor,
    state: Any,
    carry: bool,
    autocast: Callable[[], AbstractContextManager],
) -> tuple[torch.Tensor, Any]:
    """Forward and loss as `CharLM.training_step` computes them. The logits and an uncarried state
    (the transformer's key/value tensors) die with this frame as they do there: the same memory."""
    with autocast():
        logits, state = net(x, state)
        loss = next_char_loss(logits, y)
    return loss, (detach_state(state) if carry else None)


def plain_run(cfg_dict: dict, device_name: str, warmup: int) -> Measurement:
    """The same training in a bare loop: the baseline the framework is compared with.

    It reads the batches the framework's data module yields (same order, from index 0), and
    leaves glibc's allocator as it finds it, as a loop written by hand does.
    """
    quiet_lightning()
    cfg = OmegaConf.create(cfg_dict)
    cfg.reuse_freed_memory = False
    set_up_process(cfg)  # threads, seed and matmul precision as the framework's run
    datamodule = instantiate(cfg.data)  # unattached to a trainer: batches from index 0, rank 0
    datamodule.setup("fit")
    batches = datamodule.train_dataloader().dataset
    device, steps = torch.device(device_name), int(cfg.trainer.max_steps)
    net = build_net(OmegaConf.to_container(cfg.model, resolve=True), len(datamodule.vocab)).to(device)
    if cfg.model.get("compile", False):
        net.compile()
    optimizer, scheduler = plain_optimizer(net, cfg, steps)
    autocast, clip = autocast_for(cfg.trainer.precision, device), clipper(cfg)
    carry = cfg.data.get("sampling") == "stream" and net.carries_state
    pin = device.type == "cuda" and bool(cfg.data.get("pin_memory", False))  # as the data module's DataLoader
    state, stamps, tokens, loss = None, [], [], None
    net.train()
    base = reset_peak_memory(device)
    for index in range(steps):
        batch = batches.batch(index)
        x, y = ((t.pin_memory() if pin else t).to(device, non_blocking=True) for t in (batch["x"], batch["y"]))
        optimizer.zero_grad(set_to_none=True)
        loss, state = plain_loss(net, x, y, None if batch["reset"] or not carry else state, carry, autocast)
        loss.backward()
        clip(net.parameters())
        optimizer.step()
        scheduler.step()
        sync(device)
        stamps.append(time.perf_counter())
        tokens.append(x.numel())
    final = float(loss.detach()) if loss is not None else float("nan")
    return measure(stamps, tokens, warmup, (peak_memory_mb(device), base), final)


def best(results: list[Measurement]) -> Measurement:
    """Of repeated runs, the fastest: on a shared machine the others mostly measure the neighbours."""
    return max(results, key=lambda m: m.tokens_per_s)


def compare(model: str, args: argparse.Namespace, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Framework and plain loop, alternating for `--repeats` rounds, on one configuration."""
    framework, plain = [], []
    info: dict[str, Any] = {}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="charlm-bench-") as out:
            overrides = [f"trainer.max_steps={args.warmup + args.steps}", *extra]
            cfg = run_config(model, args.data, args.set, overrides, out)
            cfg_dict = OmegaConf.to_container(cfg)
            result, run = in_fresh_process(framework_run, cfg_dict, args.warmup)
            framework.append(result)
            plain.append(in_fresh_process(plain_run, cfg_dict, run["device"], args.warmup))
        info = {
            "params": run["params"],
            "block_size": int(cfg.data.block_size),
            "batch_size": int(cfg.data.batch_size),
            "sampling": str(cfg.data.sampling),
            "device": run["device"],
            "precision": str(cfg.trainer.precision),
        }
    fw, pl = best(framework), best(plain)
    return {
        "model": model,
        **info,
        "framework": asdict(fw),
        "plain": asdict(pl),
        "ratio": fw.tokens_per_s / pl.tokens_per_s,
        "loss_gap": abs(fw.final_loss - pl.final_loss),  # ~0: the same computation, up to rounding
        "repeats_tokens_per_s": {
            "framework": [m.tokens_per_s for m in framework],
            "plain": [m.tokens_per_s for m in plain],
        },
    }


def scaling_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The transformer at each block size and width: how the cost of a step grows."""
    rows = []
    for width in args.scaling_widths:
        for block in args.scaling_blocks:
            log(f"transformer block_size={block} n_embd={width} ...")
            row = compare("transformer", args, [f"data.block_size={block}", f"model.n_embd={width}"])
            rows.append({**row, "n_embd": width})
    return rows


def added_mb(m: dict[str, Any]) -> float:
    return m["peak_mb"] - m["base_mb"]


def train_table(rows: list[dict[str, Any]], first: str = "model") -> str:
    headers = [
        first,
        "params",
        "tok/s framework",
        "tok/s plain",
        "ratio",
        "ms/step fw",
        "peak MB fw",
        "+MB fw",
        "+MB plain",
    ]
    body = [
        [
            r[first] if first == "model" else f"T={r['block_size']} C={r['n_embd']}",
            r["params"],
            r["framework"]["tokens_per_s"],
            r["plain"]["tokens_per_s"],
            r["ratio"],
            r["framework"]["ms_per_step"],
            r["framework"]["peak_mb"],
            added_mb(r["framework"]),
            added_mb(r["plain"]),
        ]
        for r in rows
    ]
    return format_table(headers, body)
