"""Scoring text with a trained model: the `charlm-evaluate` command.

What is scored: by default the run's own val split, rebuilt from the run's saved config and cut
into exactly the windows its validation used, so the loss equals the `val/loss` it logged; or
another split of that corpus; or any text (`text_file=`), encoded with the model's vocabulary.

How it is read:
- windows: non-overlapping windows of block_size, each from a fresh state (as validation does);
- stream: the text as one sequence. A recurrent model carries its state through all of it; the
  transformer slides its window by `stride`, scoring each character once, every one after the
  first window with at least block_size - stride characters of context.

Dynamic evaluation (Krause et al., 2018, "Dynamic Evaluation of Neural Sequence Models") adapts the
model to the text while reading it: each segment is scored first, then the model takes a gradient
step on it. Only the in-memory copy changes; the checkpoint file is never written.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from charlm.corpus import default_cache_dir, text_files
from charlm.data import CharDataModule, Windows, validation_windows
from charlm.errors import CharLMError
from charlm.loading import LoadedModel, default_device, load_model
from charlm.loss import IGNORE, summed_loss
from charlm.models.base import detach_state
from charlm.options import EvaluateOptions, check_options
from charlm.prepared import Tokens, prepare


@dataclass
class Segment:
    """Inputs and targets (B, T) to score; `carry` says the state from the previous segment continues."""

    x: torch.Tensor
    y: torch.Tensor
    carry: bool = False


# ---- what to score --------------------------------------------------------------------------


def saved_run_config(ckpt: Path) -> DictConfig:
    """The saved config of the run a checkpoint belongs to (`<run>/checkpoints/x.ckpt`)."""
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise CharLMError(
            f"{ckpt} has no saved run config at {saved}, so its val split cannot be rebuilt; "
            "pass text_file=PATH to score a text"
        )
    cfg = OmegaConf.load(saved)
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    cwd = OmegaConf.load(hydra_file).hydra.runtime.cwd if hydra_file.is_file() else None
    path = cfg.data.get("path")
    if path and cwd and not Path(str(path)).expanduser().is_absolute() and not Path(str(path)).exists():
        cfg.data.path = str(Path(cwd) / str(path))  # relative to where the run was started
    return cfg


def trained_block_size(ckpt: Path) -> int:
    """The context length the run trained with (its data.block_size), or 256 without a run config."""
    try:
        return int(saved_run_config(ckpt).data.block_size)
    except (CharLMError, AttributeError, ValueError):
        return 256


def run_datamodule(ckpt: Path) -> CharDataModule:
    from charlm.build import instantiate

    cfg = saved_run_config(ckpt)
    data = OmegaConf.to_container(cfg.data, resolve=True)
    datamodule = instantiate(data)
    if not isinstance(datamodule, CharDataModule):
        raise CharLMError(f"{ckpt} was trained on {data['_target_']} data; charlm-evaluate scores text models")
    datamodule.setup("validate")
    return datamodule


def text_tokens(text_file: str, model: LoadedModel, unknown: str, cache_dir: str | None) -> tuple[Tokens, int]:
    """Any text's ids in the model's vocabulary, prepared (and cached) like a corpus."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    prepared = prepare(text_files(text_file), cache, vocab=model.vocab, unknown=unknown, name="text_file")
    if len(prepared.tokens) < 2:
        raise CharLMError(f"text_file={text_file!r} has fewer than 2 characters the model knows; nothing to score")
    return prepared.tokens, prepared.skipped


# ---- how to read it -------------------------------------------------------------------------


def window_segments(windows: Windows, batch_size: int) -> Iterator[Segment]:
    for start in range(0, len(windows), batch_size):
        pairs = [windows[i] for i in range(start, min(start + batch_size, len(windows)))]
        yield Segment(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]))


def carried_segments(tokens: Tokens, length: int) -> Iterator[Segment]:
    """The text in consecutive pieces, each continuing the last: one long sequence, read in parts."""
    n = len(tokens) - 1
    for start in range(0, n, length):
        piece = tokens[start : min(start + length, n) + 1].tensor()
        yield Segment(piece[:-1].unsqueeze(0), piece[1:].unsqueeze(0), carry=start > 0)


def sliding_segments(tokens: Tokens, block_size: int, stride: int) -> Iterator[Segment]:
    """Windows of block_size moved by `stride`; each scores only the targets no earlier window did."""
    n, done, end = len(tokens) - 1, 0, min(block_size, len(tokens) - 1)
    while done < n:
        start = max(0, end - block_size)
        piece = tokens[start : end + 1].tensor()
        y = piece[1:].clone()
        y[: done - start] = IGNORE  # already scored, here only context
        yield Segment(piece[:-1].unsqueeze(0), y.unsqueeze(0))
        done, end = end, min(end + stride, n)


# ---- dynamic evaluation ---------------------------------------------------------------------


class DynamicEval:
    """After each scored segment, a step towards the text just read, pulled back to the trained weights.

    sgd: theta <- theta - lr * g + decay * (theta_0 - theta)
    rms: as sgd, with g divided by the root of its running mean square (RMSprop-like, per parameter),
         the normalisation Krause et al. found to adapt faster than plain SGD.
    """

    def __init__(self, net: torch.nn.Module, lr: float, decay: float, rule: str):
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.start = [p.detach().clone() for p in self.params]
        self.lr, self.decay, self.rule = lr, decay, rule
        self.mean_sq = [torch.zeros_like(p) for p in self.params]
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        self.steps += 1
        for p, p0, ms in zip(self.params, self.start, self.mean_sq, strict=True):
            if p.grad is None:
                continue
            g = p.grad
            if self.rule == "rms":
                ms.mul_(0.99).addcmul_(g, g, value=0.01)
                g = g / (ms / (1 - 0.99**self.steps)).sqrt().add_(1e-8)
            p.add_(g, alpha=-self.lr)
            if self.decay:
                p.add_(p0 - p, alpha=self.decay)
            p.grad = None


def score(
    model: LoadedModel, segments: Iterator[Segment], total: int, dynamic: DynamicEval | None, device: str
) -> tuple[float, int]:
    """Summed loss and count of targets over `segments`, with a progress bar on stderr."""
    from tqdm import tqdm

    net, state = model.net, None
    loss_sum, count = 0.0, 0
    with tqdm(total=total, desc="evaluating", unit="char", unit_scale=True, file=sys.stderr, leave=False) as bar:
        for seg in segments:
            x, y = seg.x.to(device), seg.y.to(device)
            with torch.set_grad_enabled(dynamic is not None):
                logits, new_state = net(x, state if seg.carry else None)
                seg_sum, seg_count = summed_loss(logits, y)
            if dynamic is not None and seg_count > 0:
                (seg_sum / seg_count).backward()
                dynamic.step()
            state = detach_state(new_state) if net.carries_state else None
            loss_sum += float(seg_sum.detach())
            count += int(seg_count)
            bar.update(int(seg_count))
    return loss_sum, count


# ---- the command ----------------------------------------------------------------------------


def segments_for(cfg: DictConfig, model: LoadedModel, ckpt: Path) -> tuple[Iterator[Segment], int, dict[str, Any]]:
    """What to score, cut as `context` says: (segments, targets they score, fields for the report)."""
    report: dict[str, Any] = {"skipped": 0}
    windows: Windows | None = None
    if cfg.text_file:
        tokens, report["skipped"] = text_tokens(str(cfg.text_file), model, cfg.unknown, cfg.cache_dir)
        report["text_file"] = str(cfg.text_file)
        block_size = model.module.hparams.model.get("block_size") or trained_block_size(ckpt)
    else:
        datamodule = run_datamodule(ckpt)
        if datamodule.vocab != model.vocab:
            raise CharLMError(f"{ckpt}'s vocabulary differs from its run's corpus: was the corpus changed?")
        tokens, block_size = datamodule.splits[cfg.split], datamodule.block_size
        report["split"] = cfg.split
        if len(tokens) < 2:
            raise CharLMError(f"split={cfg.split} of this run is empty (data.test_fraction was 0)")
        if cfg.split == "val" and cfg.context == "windows":
            windows = datamodule.val_windows()  # exactly the windows validation scored
    if cfg.context == "stream" or cfg.dynamic_eval:  # dynamic evaluation reads the text in order
        if model.net.carries_state:
            return carried_segments(tokens, block_size), len(tokens) - 1, report
        report["stride"] = stride = cfg.stride or max(1, block_size // 2)
        return sliding_segments(tokens, block_size, stride), len(tokens) - 1, report
    windows = windows or validation_windows(tokens, block_size)
    return window_segments(windows, cfg.batch_size), windows.chars(), report


def run(cfg: DictConfig) -> dict[str, Any]:
    """Score the text `cfg` names; print the result as one JSON line (the last line of stdout)."""
    check_options(cfg, EvaluateOptions, "evaluate")
    started = time.perf_counter()
    device = default_device(cfg.device)
    model = load_model(cfg.ckpt_path, cfg.which, device)
    ckpt = Path(model.path)
    if not model.module.architecture.continues_text:
        raise CharLMError(f"{ckpt} is a {type(model.net).__name__} model; charlm-evaluate scores language models")
    segments, total, report = segments_for(cfg, model, ckpt)
    dynamic = None
    if cfg.dynamic_eval:
        dynamic = DynamicEval(model.net, cfg.dynamic_lr, cfg.dynamic_decay, cfg.dynamic_rule)
    # cuDNN's RNN kernels take no backward pass in eval mode; the native ones do (and match them).
    with torch.backends.cudnn.flags(enabled=dynamic is None):
        loss_sum, count = score(model, segments, total, dynamic, device)
    loss = loss_sum / count
    result = {
        "loss": round(loss, 6),
        "bpc": round(loss / math.log(2), 6),
        "chars": count,
        **report,
        "context": "stream" if cfg.dynamic_eval else cfg.context,
        "dynamic_eval": bool(cfg.dynamic_eval),
        "checkpoint": str(ckpt),
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(json.dumps(result, ensure_ascii=False), flush=True)
    return result
