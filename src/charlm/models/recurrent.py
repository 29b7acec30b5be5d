"""Vanilla RNN, LSTM and GRU language models: one class, the cell type is a config value."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from charlm.checks import require_choice, require_dropout, require_positive
from charlm.errors import CharLMError
from charlm.models.base import CharNet
from charlm.models.cells import GATES, ScratchRecurrent, trace

TORCH_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RecurrentLM(CharNet):
    """ids -> embedding or one-hot -> stacked recurrent layers -> [LayerNorm] -> dropout -> linear head.

    impl="torch" uses nn.RNN/nn.LSTM/nn.GRU (cuDNN on GPU); impl="scratch" the written-out
    cells of `cells.py`. Both share parameter names, so their checkpoints are interchangeable.

    `tie_weights` makes the head read logits off the input embedding (Press & Wolf, 2017; Inan et al.,
    2017), through a linear map from hidden_size to embedding_dim when the two differ. `layer_norm`
    normalises the top layer's output before the head; it leaves the cells themselves alone, which keeps
    the fused nn.LSTM/nn.GRU kernels (a layer-normalised cell, Ba et al. 2016, would need the slow
    Python cells).
    """

    carries_state = True
    character_modules = ("embed", "head")
    input_embedding = "embed"  # None with input=onehot

    def character_tables(self) -> list[nn.Parameter]:
        """The embedding and head; with one-hot input, the first layer's input weights read characters too."""
        first = [self.rnn.weight_ih_l0] if self.embed is None else []
        return [*super().character_tables(), *first]

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        impl: str = "torch",
        hidden_size: int = 256,
        num_layers: int = 2,
        dropout: float = 0.0,
        input: str = "embedding",
        embedding_dim: int = 64,
        tie_weights: bool = False,
        layer_norm: bool = False,
    ):
        super().__init__()
        require_choice("model.cell", cell, GATES)
        require_choice("model.impl", impl, ("torch", "scratch"))
        require_choice("model.input", input, ("embedding", "onehot"))
        require_positive(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers)
        require_dropout(dropout)
        if input == "embedding":
            require_positive(embedding_dim=embedding_dim)
            self.embed: nn.Module | None = nn.Embedding(vocab_size, embedding_dim)
            input_size = embedding_dim
        else:
            self.embed, input_size = None, vocab_size
        self.vocab_size, self.cell = vocab_size, cell
        layer_dropout = dropout if num_layers > 1 else 0.0
        if impl == "torch":
            self.rnn = TORCH_MODULES[cell](input_size, hidden_size, num_layers, batch_first=True, dropout=layer_dropout)
        else:
            self.rnn = ScratchRecurrent(cell, input_size, hidden_size, num_layers, layer_dropout)
        self.norm = nn.LayerNorm(hidden_size) if layer_norm else nn.Identity()
        self.drop = nn.Dropout(dropout)
        if tie_weights:
            if self.embed is None:
                raise CharLMError("model.tie_weights=true needs model.input=embedding: a one-hot input has no weights")
            width = self.embed.embedding_dim
            self.proj: nn.Module = nn.Linear(hidden_size, width, bias=False) if width != hidden_size else nn.Identity()
            self.head = nn.Linear(width, vocab_size)
            self.head.weight = self.embed.weight  # (V, E): one matrix reads characters in and scores them out
        else:
            self.proj = nn.Identity()
            self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        if self.embed is not None:
            x = self.embed(ids)  # (B, T, E)
        else:
            x = F.one_hot(ids, self.vocab_size).float()  # (B, T, V)
        out, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.proj(self.drop(self.norm(out)))), state  # (B, T, V)

    def trace(self, ids: torch.Tensor, state: Any = None) -> tuple[list[torch.Tensor], list[torch.Tensor | None], Any]:
        """Every layer's hidden (and LSTM cell) state after each character of ids (B, T): per layer (B, T, H).

        The same function as `forward`, step by step in Python (see `cells.trace`), so slow: for looking
        at what units track, not for training. Returns the final state too, to trace a long text in pieces.
        """
        x = self.embed(ids) if self.embed is not None else F.one_hot(ids, self.vocab_size).float()  # (B, T, E)
        return trace(self.rnn, self.cell, x, state)
