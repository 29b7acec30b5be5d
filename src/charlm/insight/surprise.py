"""Surprise: how many bits each character of a text costs the model, and what it expected instead.

The text is read the way `charlm-evaluate` reads it, so the page's bits per character is the number that
command prints for the same text and `context`:
- windows: non-overlapping windows of `block_size`, each from a fresh state (evaluate's default);
- stream: the text as one sequence; a recurrent net carries its state through all of it, the transformer
  slides its window by `stride`, scoring each character once.
The first character has no prediction (nothing comes before it), so its loss is NaN and it is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from charlm.errors import CharLMError
from charlm.models.base import detach_state
from charlm.options import CONTEXTS
from charlm.sampling import eval_mode
from charlm.vocab import Vocab

STREAM_CHUNK = 4096  # characters a recurrent net reads per call in stream context (the state is carried)


@dataclass
class Surprise:
    """Per-character loss of a text and the model's top predictions, position by position.

    Position t holds what the model thought before reading character t: bits[t] = -log2 p(text[t]),
    top_ids[t] / top_probs[t] its k likeliest characters there. Position 0 is NaN / -1 (unpredicted).
    """

    text: str
    vocab: Vocab
    bits: np.ndarray  # (n,) float32
    top_ids: np.ndarray  # (n, k) int32
    top_probs: np.ndarray  # (n, k) float32
    context: str = "windows"

    @property
    def chars(self) -> int:
        """How many characters are scored (all but the first)."""
        return int(np.isfinite(self.bits).sum())

    @property
    def bpc(self) -> float:
        """Mean bits per scored character, summed in float64 as evaluate sums its losses."""
        return float(np.nansum(self.bits.astype(np.float64)) / max(self.chars, 1))


def segments(
    ids: torch.Tensor, context: str, block_size: int | None, max_context: int | None, stride: int | None
) -> Iterator[tuple[int, int, bool]]:
    """(start, end, carry) pieces of ids (n,) to read: inputs ids[start:end] predict targets up to ids[end]; a
    sliding window's `start` may lie before targets an earlier window scored (those are only context there)."""
    n = len(ids)
    if context == "windows":
        size = int(min(block_size or max_context or 256, max_context or math.inf))  # never past the model's context
        for start in range(0, n - 1, size):
            yield start, min(start + size, n - 1), False
    elif max_context is None:  # a recurrent net (or the bigram) reads the whole text, its state carried
        for start in range(0, n - 1, STREAM_CHUNK):
            yield start, min(start + STREAM_CHUNK, n - 1), start > 0
    else:  # the transformer: its window slides by `stride`
        step = stride or max(1, max_context // 2)
        end = min(max_context, n - 1)
        yield 0, end, False
        while end < n - 1:
            end = min(end + step, n - 1)
            yield max(0, end - max_context), end, False


@torch.no_grad()
def surprise(
    net: torch.nn.Module,
    vocab: Vocab,
    text: str,
    context: str = "windows",
    block_size: int | None = None,
    stride: int | None = None,
    top: int = 5,
    device: str | torch.device | None = None,
) -> Surprise:
    """Score every character of `text` under `net` (any charlm language model); see the module docstring.

    block_size: the window length for context=windows (evaluate uses the model's own block_size, or the
    run's data.block_size for a recurrent net); stride: how far the transformer's window moves in stream.
    """
    if context not in CONTEXTS:
        raise CharLMError(f"context={context!r} is not valid: expected one of {', '.join(CONTEXTS)}")
    if len(text) < 2:
        raise CharLMError(f"the text has {len(text)} character(s); at least 2 are needed to score one")
    ids = vocab.encode(text)  # (n,), refuses characters outside the vocabulary
    n, k = len(ids), min(top, len(vocab))
    device = device or next(net.parameters()).device
    bits = np.full(n, np.nan, dtype=np.float32)
    top_ids = np.full((n, k), -1, dtype=np.int32)
    top_probs = np.zeros((n, k), dtype=np.float32)
    max_context = getattr(net, "max_context", None)
    scored, state = 1, None  # targets before `scored` are done
    with eval_mode(net):
        for start, end, carry in segments(ids, context, block_size, max_context, stride):
            x = ids[start:end].to(device)[None]  # (1, T)
            logits, new_state = net(x, state if carry else None)  # (1, T, V)
            state = detach_state(new_state) if getattr(net, "carries_state", False) else None
            logp = F.log_softmax(logits[0].float(), dim=-1)  # (T, V): predictions for positions start+1 .. end
            first = scored - (start + 1)  # rows already scored by an earlier window
            logp, targets = logp[first:], ids[scored : end + 1].to(device)
            bits[scored : end + 1] = (-logp.gather(1, targets[:, None])[:, 0] / math.log(2)).cpu().numpy()
            p, i = logp.exp().topk(k, dim=-1)  # (T', k)
            top_ids[scored : end + 1], top_probs[scored : end + 1] = i.cpu().numpy(), p.cpu().numpy()
            scored = end + 1
    return Surprise(text, vocab, bits, top_ids, top_probs, context)
