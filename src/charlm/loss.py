"""The next-character loss, the one definition training, validation, evaluation and the benchmark share.

Targets equal to `IGNORE` (padding: the end of the last validation window, the tail of a short
seq2seq target) are left out of both the loss and the count of characters scored.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100  # target id that the loss skips (padding)


def next_char_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) next characters, in float32."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))


def summed_loss(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy over the real (not IGNORE) targets of (B, T, V) logits, and their count."""
    total = F.cross_entropy(
        logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return total, (y != IGNORE).sum()
