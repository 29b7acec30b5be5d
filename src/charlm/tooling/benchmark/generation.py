"""Generation throughput: characters per second with the cache or carried state, and without."""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch
from omegaconf import OmegaConf

from charlm.build import instantiate, set_up_process
from charlm.lightning_module import build_net
from charlm.models.base import CharNet
from charlm.sampling import SamplingOptions, encode_prompt, generate_ids
from charlm.tooling.benchmark.measure import format_table, run_config, sync

# ---------------------------------------------------------------------------- generation


def generation_rate(
    net: CharNet, prompt: torch.Tensor, tokens: int, use_cache: bool, device: torch.device
) -> tuple[float, torch.Tensor]:
    """Characters per second of one `generate_ids` call, after a short untimed warm-up call."""
    generate_ids(net, prompt, min(tokens, 8), use_cache=use_cache)
    sync(device)
    start = time.perf_counter()
    ids = generate_ids(net, prompt, tokens, SamplingOptions(), seed=0, use_cache=use_cache)
    sync(device)
    return tokens / (time.perf_counter() - start), ids


def generation_row(model: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="charlm-bench-") as out:
        cfg = run_config(model, args.data, args.set, [f"data.block_size={args.block_size}"], out)
    set_up_process(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.setup("fit")
    net = build_net(OmegaConf.to_container(cfg.model, resolve=True), len(datamodule.vocab)).to(device).eval()
    prompt = encode_prompt(datamodule.vocab, "").to(device)[None, :]  # (1, 1)
    cached, ids_cached = generation_rate(net, prompt, args.tokens, True, device)
    uncached, ids_plain = generation_rate(net, prompt, args.tokens, False, device)
    return {
        "model": model,
        "params": sum(p.numel() for p in net.parameters()),
        "max_context": net.max_context,
        "tokens": args.tokens,
        "device": str(device),
        "chars_per_s_cached": cached,
        "chars_per_s_uncached": uncached,
        "speedup": cached / uncached,
        "same_ids": bool(torch.equal(ids_cached, ids_plain)),
    }


def generate_table(rows: list[dict[str, Any]]) -> str:
    headers = ["model", "params", "chars/s cached", "chars/s uncached", "speedup", "same ids"]
    return format_table(
        headers,
        [
            [r["model"], r["params"], r["chars_per_s_cached"], r["chars_per_s_uncached"], r["speedup"], r["same_ids"]]
            for r in rows
        ],
    )
