"""Throughput benchmarks: what Lightning + Hydra cost over a plain PyTorch loop, and what
the key/value cache and carried state buy at generation time.

`train`: each model is built from the real composed Hydra config by the same functions
`charlm.train` uses (prepare, build_module, build_trainer) and fitted by the real Trainer,
with a callback that timestamps every finished step. Then a plain loop trains a net of the
identical shape (same class from `charlm.models`, same seed so the same initial weights,
same batches from the same data tensor, same optimiser settings, schedule, clipping and
precision). The plain loop is what a loop written by hand gets: torch's default optimiser
implementation (the project's config picks the fused one) and glibc's own allocator
behaviour (the project keeps freed memory for reuse, see `charlm.tooling.memory`). So the ratio of
the two rates is the framework's overhead net of what its defaults buy. Both count tokens
over steps after the warm-up only: batch assembly + forward + backward + optimiser.

`generate`: characters per second of `generate_ids` with the cache (one new position per
character) and without it (the whole window re-read per character), on the same randomly
initialised weights; no training needed.

Every run has a process of its own, forked from a server that has only imported charlm, so
no run inherits another's allocator state, threads or memory peak. Peak memory is that
process's peak RSS (it includes the ~0.4 GB that Python, torch and Lightning occupy anyway,
hence "+MB": peak minus the RSS when the run started), or the CUDA allocator's peak on a GPU.

On a CPU shared with other work, `--set threads=1` gives steadier numbers: with more torch
threads than free cores, small ops wait on descheduled threads (seen here: 20x slower).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import multiprocessing
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from charlm.cli import OneLineParser
from charlm.errors import CharLMError
from charlm.lightning_module import build_net, optimizer_and_schedule
from charlm.loss import next_char_loss
from charlm.models.base import CharNet, detach_state
from charlm.sampling import SamplingOptions, encode_prompt, generate_ids
from charlm.tooling.memory import release_free_memory
from charlm.train import build_module, build_trainer, instantiate, prepare

MODELS = ("bigram", "rnn", "lstm", "gru", "transformer")
ABSENT = object()

# Every training benchmark run: no validation, logger, checkpoints, samples or progress output,
# one device. What is left is what a training step costs.
QUIET = [
    "logger=none",
    "~callbacks",
    "trainer.limit_val_batches=0",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "++trainer.enable_checkpointing=false",
    "trainer.devices=1",
    "trainer.num_nodes=1",
    "trainer.strategy=auto",
]


# ---------------------------------------------------------------------------- config


def compose_train(overrides: Sequence[str]) -> DictConfig:
    with initialize_config_module("charlm.conf", version_base="1.3"):
        return compose("train", overrides=list(overrides))


def applicable(overrides: Sequence[str], cfg: DictConfig) -> list[str]:
    """The `--set` overrides that fit this model: a `model.*` key its config lacks is left out,
    so that one command can shrink every architecture (hidden_size for RNNs, n_embd for GPT)."""
    kept = []
    for item in overrides:
        key = item.split("=", 1)[0].lstrip("+~")
        if key.startswith("model.") and OmegaConf.select(cfg, key, default=ABSENT) is ABSENT:
            continue
        kept.append(item)
    return kept


def run_config(model: str, data: str | None, sets: Sequence[str], extra: Sequence[str], output_dir: str) -> DictConfig:
    """The composed config of one benchmark run; `extra` (the benchmark's own) wins over `sets`."""
    base = [f"model={model}", f"paths.output_dir={output_dir}"] + ([f"data.path={data}"] if data else [])
    user = applicable(sets, compose_train(base))
    return compose_train(base + QUIET + user + list(extra))


# ---------------------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so a timestamp means the step is done."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status (Linux), in MB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> float:
    """Start a fresh peak; returns the memory in use now (MB): the run's baseline."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    release_free_memory()  # one run's leftovers neither count as the next one's nor spare it page faults
    try:  # Linux: "5" resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass  # elsewhere the peak is the process's lifetime peak
    return status_mb("VmRSS") or 0.0


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = status_mb("VmHWM")
    if peak is not None:
        return peak
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


@dataclass
class Measurement:
    tokens_per_s: float
    ms_per_step: float
    steps: int  # timed steps (after the warm-up)
    peak_mb: float  # process peak RSS (CPU) or CUDA peak allocated during the run
    base_mb: float  # the same figure when the run started: peak_mb - base_mb is what the run added
    final_loss: float


def measure(
    stamps: Sequence[float], tokens: Sequence[int], warmup: int, memory: tuple[float, float], loss: float
) -> Measurement:
    """Rate over the steps after the warm-up: from the end of the last warm-up step to the end of the last step."""
    if len(stamps) <= warmup:
        raise CharLMError(f"only {len(stamps)} steps ran; need more than the {warmup} warm-up steps")
    seconds = stamps[-1] - stamps[warmup - 1]
    timed = len(stamps) - warmup
    return Measurement(sum(tokens[warmup:]) / seconds, 1000 * seconds / timed, timed, *memory, loss)


class StepTimer(L.Callback):
    """Timestamps the end of every training step (optimiser step included) and keeps its loss."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.tokens: list[int] = []
        self.loss: torch.Tensor | None = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        sync(pl_module.device)
        self.stamps.append(time.perf_counter())
        self.tokens.append(batch["x"].numel())
        if isinstance(outputs, dict) and "loss" in outputs:
            self.loss = outputs["loss"].detach()  # read once at the end: no sync per step


# ---------------------------------------------------------------------------- training: framework and plain


def in_fresh_process(fn: Callable[..., Any], *args: Any) -> Any:
    """`fn(*args)` in a child process forked from a server that has only imported charlm.

    Each run starts as a new training process would: glibc's allocator untouched by earlier
    runs (see `charlm.tooling.memory`), no torch threads running yet, and a peak memory of its own.
    """
    ctx = multiprocessing.get_context("forkserver")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def framework_run(cfg_dict: dict, warmup: int) -> tuple[Measurement, dict[str, Any]]:
    """One fit through the project's own code path, timed step by step; returns what the plain loop needs."""
    quiet_lightning()
    cfg = OmegaConf.create(cfg_dict)
    prepare(cfg)
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
    prepare(cfg)  # threads, seed and matmul precision as the framework's run
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
    prepare(cfg)
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


# ---------------------------------------------------------------------------- reporting


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    return {
        "torch": torch.__version__,
        "lightning": L.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, float):
            return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:,}" if isinstance(v, int) else str(v)

    text = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in text)) if text else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in text]
    return "\n".join(lines)


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


def generate_table(rows: list[dict[str, Any]]) -> str:
    headers = ["model", "params", "chars/s cached", "chars/s uncached", "speedup", "same ids"]
    return format_table(
        headers,
        [
            [r["model"], r["params"], r["chars_per_s_cached"], r["chars_per_s_uncached"], r["speedup"], r["same_ids"]]
            for r in rows
        ],
    )


def write_json(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {out}")


# ---------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> dict[str, Any]:
    if args.warmup < 1 or args.steps < 1 or args.repeats < 1:
        raise CharLMError("--warmup, --steps and --repeats must be at least 1 (the clock starts after warm-up)")
    rows = []
    for model in args.models:
        log(f"{model} ...")
        rows.append(compare(model, args))
    scaling = scaling_rows(args)
    print(train_table(rows))
    if scaling:
        print("\ntransformer: how the cost of a step grows with block size (T) and width (C)")
        print(train_table(scaling, first="shape"))
    medians = {"ratio_median": statistics.median(r["ratio"] for r in rows)} if rows else {}
    payload = {
        "benchmark": "train",
        "machine": machine(),
        "command": sys.argv,
        "settings": {
            "steps": args.steps,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "data": args.data,
            "set": args.set,
            "memory": "peak RSS of the process (MB), or CUDA peak allocated",
        },
        "models": rows,
        "scaling": scaling,
        **medians,
    }
    write_json(args.out, payload)
    return payload


def cmd_generate(args: argparse.Namespace) -> dict[str, Any]:
    if args.tokens < 1:
        raise CharLMError("--tokens must be at least 1")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    rows = []
    for model in args.models:
        log(f"{model} ...")
        rows.append(generation_row(model, args, device))
    print(generate_table(rows))
    payload = {
        "benchmark": "generate",
        "machine": machine(),
        "command": sys.argv,
        "settings": {"tokens": args.tokens, "block_size": args.block_size, "data": args.data, "set": args.set},
        "models": rows,
    }
    write_json(args.out, payload)
    return payload


def parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="benchmark.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = OneLineParser(add_help=False)
    common.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    common.add_argument("--data", help="text file (or directory / glob) to train on; default: the config's corpus")
    common.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="Hydra overrides for every run (model.* keys a model lacks are skipped for it)",
    )
    t = sub.add_parser("train", parents=[common], help="training tokens/s: Lightning path vs plain loop")
    t.add_argument("--steps", type=int, default=50, help="timed steps per run (after the warm-up)")
    t.add_argument("--warmup", type=int, default=5, help="untimed steps first (with model.compile=true: >= 3)")
    t.add_argument("--repeats", type=int, default=1, help="alternate framework/plain runs; report the fastest")
    t.add_argument("--scaling-blocks", type=int, nargs="*", default=[64, 128, 256], help="transformer block sizes")
    t.add_argument("--scaling-widths", type=int, nargs="*", default=[128, 256], help="transformer n_embd values")
    t.add_argument("--out", default="outputs/benchmark/train.json", help="JSON results")
    g = sub.add_parser("generate", parents=[common], help="generation chars/s: cached vs uncached")
    g.add_argument("--tokens", type=int, default=1000, help="characters to generate")
    g.add_argument("--block-size", type=int, default=256, help="the transformer's context (data.block_size)")
    g.add_argument("--device", help="cpu | cuda | cuda:1 ...; default: cuda when available")
    g.add_argument("--out", default="outputs/benchmark/generate.json", help="JSON results")
    return p


def quiet_lightning() -> None:
    """Keep the tables readable: Lightning's start-up notes and data-loader hints are not results."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*IterableDataset.*has `__len__` defined.*",
        ".*isinstance\\(treespec, LeafSpec\\).*",
    ):
        warnings.filterwarnings("ignore", message=message)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    for model in args.models:  # a bad --set fails here, before any output
        run_config(model, args.data, args.set, [], "unused")
    quiet_lightning()
    multiprocessing.set_forkserver_preload(
        ["charlm.tooling.benchmark"]
    )  # each run's process starts with charlm imported
    return cmd_train(args) if args.command == "train" else cmd_generate(args)
