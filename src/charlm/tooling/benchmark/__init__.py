"""Throughput benchmarks: what Lightning + Hydra cost over a plain PyTorch loop, and what
the key/value cache and carried state buy at generation time.

`train`: each model is built from the real composed Hydra config by the same functions
`charlm.build` gives the train job (set_up_process, build_module, build_trainer) and fitted by the real Trainer,
with a callback that timestamps every finished step. Then a plain loop trains a net of the
identical shape (same class from `charlm.models`, same seed so the same initial weights,
same batches from the same data tensor, same optimiser settings, schedule, clipping and
precision). The plain loop is what a loop written by hand gets: torch's default optimiser
implementation (the project's config picks the fused one) and glibc's own allocator
behaviour (the project keeps freed memory for reuse, see `charlm.memory`). So the ratio of
the two rates is the framework's overhead net of what its defaults buy. Both count tokens
over steps after the warm-up only: batch assembly + forward + backward + optimiser.

`scale`: a real `charlm-train` run, twice, on corpora of 10 MB, 100 MB and 1 GiB built from
text on the machine and on Tiny Shakespeare: preparation time, time to the first step and peak
RSS, first with an empty cache and then with the prepared corpus (see `scale`).

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
import multiprocessing
import statistics
import sys
from collections.abc import Sequence
from typing import Any

import torch

from charlm.errors import CharLMError, OneLineParser
from charlm.tooling.benchmark import scale
from charlm.tooling.benchmark.generation import generate_table, generation_row
from charlm.tooling.benchmark.measure import MODELS, log, machine, quiet_lightning, run_config, write_json
from charlm.tooling.benchmark.training import compare, scaling_rows, train_table

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
    scale.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.command == "scale":  # real training commands in processes of their own: nothing to preload
        return scale.cmd_scale(args)
    for model in args.models:  # a bad --set fails here, before any output
        run_config(model, args.data, args.set, [], "unused")
    quiet_lightning()
    # each run's process starts with charlm imported
    multiprocessing.set_forkserver_preload(["charlm.tooling.benchmark"])
    return cmd_train(args) if args.command == "train" else cmd_generate(args)
