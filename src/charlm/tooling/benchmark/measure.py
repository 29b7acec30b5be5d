"""What every benchmark run shares: its composed config, its timing and memory, and reporting."""

from __future__ import annotations

import gc
import json
import logging
import platform
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf

from charlm.errors import CharLMError
from charlm.memory import release_free_memory
from charlm.models import language_models

MODELS = tuple(language_models())  # the registry's language models, each benchmarked
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


def write_json(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    log(f"wrote {out}")


def quiet_lightning() -> None:
    """Keep the tables readable: Lightning's start-up notes and data-loader hints are not results."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    for message in (
        ".*does not have many workers.*",
        ".*IterableDataset.*has `__len__` defined.*",
        ".*isinstance\\(treespec, LeafSpec\\).*",
    ):
        warnings.filterwarnings("ignore", message=message)
