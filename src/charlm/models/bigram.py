"""Bigram model: the next character's logits are a row of a table indexed by the current one."""

from __future__ import annotations

import torch
from torch import nn

from charlm.checks import require_positive
from charlm.models.base import CharNet


class BigramLM(CharNet):
    """The baseline every other model must beat: no context beyond one character."""

    character_modules = ("table",)

    def __init__(self, vocab_size: int):
        super().__init__()
        require_positive(vocab_size=vocab_size)
        self.table = nn.Embedding(vocab_size, vocab_size)

    def forward(self, ids: torch.Tensor, state: None = None) -> tuple[torch.Tensor, None]:
        return self.table(ids), None  # (B, T, V)
