"""Character-level encoder-decoder (seq2seq) with optional attention.

    memory, state = net.encode(src, src_len)                 src: (B, S) -> memory over (B, S)
    logits, state = net.decode(dec_in, state, memory)        dec_in: (B, T) -> logits: (B, T, V)

Teacher-forced training reads the whole target in one `decode` call; free-running decoding
calls the same `decode` one position at a time, so both compute the same function. The
attention (Luong-style, no input feeding) reads the decoder's output, not its input, which is
what allows the one-call teacher-forced path.

Turning a trained net into target text (greedy, sampled, beam search) is in
`charlm.seq2seq.decoding`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from charlm.checks import require_choice, require_dropout, require_positive
from charlm.errors import CharLMError
from charlm.models.base import module_tables
from charlm.models.recurrent import TORCH_MODULES
from charlm.seq2seq.data import PAD

ATTENTION = ("none", "dot", "additive")


class Memory(NamedTuple):
    """What the decoder may attend to: encoder outputs for every source position."""

    values: torch.Tensor  # (B, S, D) encoder outputs, D = H or 2H if bidirectional
    keys: torch.Tensor  # (B, S, K) values projected once for the score function
    mask: torch.Tensor  # (B, S) true at real (non-padding) positions

    def select(self, rows: torch.Tensor) -> Memory:
        return Memory(self.values[rows], self.keys[rows], self.mask[rows])


def select_state(state: Any, rows: torch.Tensor) -> Any:
    """Rows of a recurrent state, (L, B, H) or an LSTM's (h, c) pair of them."""
    if isinstance(state, tuple):
        return tuple(s[:, rows] for s in state)
    return state[:, rows]


def check_teacher_forcing(ratio: float, final: float | None, steps: int) -> None:
    """Refuse a ratio outside [0, 1] or a negative schedule length before training starts."""
    for name, value in (("teacher_forcing_ratio", ratio), ("teacher_forcing_final", final)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (value is None and name == "teacher_forcing_final") and not (number and 0.0 <= value <= 1.0):
            raise CharLMError(f"model.{name}={value!r} must be a number in [0, 1]")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise CharLMError(f"model.teacher_forcing_steps={steps!r} must be an integer >= 0")


class Seq2Seq(nn.Module):
    """embedding -> rnn|lstm|gru encoder -> decoder of the same cell, started from the encoder's final state.

    The source and target share one embedding (one vocabulary). A bidirectional encoder's
    two final states per layer are projected to the decoder's size.
    """

    carries_state = False  # each pair is read from scratch
    character_modules = ("embed", "head")  # Muon leaves these to AdamW (charlm.models.base.CharNet)
    input_embedding = "embed"  # what TensorBoard's projector shows

    def character_tables(self) -> list[nn.Parameter]:
        return module_tables(self, self.character_modules)

    max_context = None

    def __init__(
        self,
        vocab_size: int,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        embedding_dim: int = 64,
        dropout: float = 0.0,
        bidirectional: bool = False,
        attention: str = "dot",
        teacher_forcing_ratio: float = 1.0,
        teacher_forcing_final: float | None = None,
        teacher_forcing_steps: int = 0,
    ):
        super().__init__()
        require_choice("model.cell", cell, TORCH_MODULES)
        require_choice("model.attention", attention, ATTENTION)
        require_positive(
            vocab_size=vocab_size, hidden_size=hidden_size, num_layers=num_layers, embedding_dim=embedding_dim
        )
        require_dropout(dropout)
        check_teacher_forcing(teacher_forcing_ratio, teacher_forcing_final, teacher_forcing_steps)
        if not isinstance(bidirectional, bool):
            raise CharLMError(f"model.bidirectional={bidirectional!r} must be true or false")
        self.cell, self.attention, self.hidden_size = cell, attention, hidden_size
        self.tf_start, self.tf_final = teacher_forcing_ratio, teacher_forcing_final
        self.tf_steps = teacher_forcing_steps
        layer_dropout = dropout if num_layers > 1 else 0.0
        rnn = TORCH_MODULES[cell]
        self.embed = nn.Embedding(vocab_size, embedding_dim, padding_idx=PAD)
        self.encoder = rnn(
            embedding_dim, hidden_size, num_layers, batch_first=True, dropout=layer_dropout, bidirectional=bidirectional
        )
        self.decoder = rnn(embedding_dim, hidden_size, num_layers, batch_first=True, dropout=layer_dropout)
        enc_size = hidden_size * (2 if bidirectional else 1)
        n_states = 2 if cell == "lstm" else 1
        self.bridge = (
            nn.ModuleList(nn.Linear(enc_size, hidden_size) for _ in range(n_states)) if bidirectional else None
        )
        if attention == "dot":
            self.key = nn.Linear(enc_size, hidden_size, bias=False) if bidirectional else nn.Identity()
        elif attention == "additive":
            self.key = nn.Linear(enc_size, hidden_size, bias=False)
            self.query = nn.Linear(hidden_size, hidden_size)
            self.score = nn.Linear(hidden_size, 1, bias=False)
        if attention != "none":
            self.combine = nn.Linear(hidden_size + enc_size, hidden_size)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def teacher_forcing(self, step: int) -> float:
        """The teacher-forcing ratio at training step `step`: linear from the start to the final value."""
        if self.tf_final is None or self.tf_steps == 0:
            return self.tf_start
        progress = min(1.0, step / self.tf_steps)
        return self.tf_start + (self.tf_final - self.tf_start) * progress

    # ------------------------------------------------------------------------------------ encoder

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple[Memory, Any]:
        """Read padded sources; padding never reaches the final state (packed sequences)."""
        x = self.drop(self.embed(src))  # (B, S, E)
        packed = pack_padded_sequence(x, src_len.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.encoder(packed)
        values, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, D)
        mask = torch.arange(src.size(1), device=src.device)[None, :] < src_len.to(src.device)[:, None]  # (B, S)
        keys = self.key(values) if self.attention != "none" else values  # (B, S, K)
        return Memory(values, keys, mask), self._bridge(state)

    def _bridge(self, state: Any) -> Any:
        """Encoder final state -> decoder initial state: (L * dirs, B, H) -> (L, B, H)."""
        if self.bridge is None:
            return state
        states = state if isinstance(state, tuple) else (state,)
        merged = []
        for s, proj in zip(states, self.bridge, strict=True):
            L2, B, H = s.shape
            both = s.view(L2 // 2, 2, B, H).permute(0, 2, 1, 3).reshape(L2 // 2, B, 2 * H)  # (L, B, 2H)
            merged.append(torch.tanh(proj(both)))  # (L, B, H)
        return tuple(merged) if isinstance(state, tuple) else merged[0]

    # ------------------------------------------------------------------------------------ decoder

    def decode(self, dec_in: torch.Tensor, state: Any, memory: Memory) -> tuple[torch.Tensor, Any]:
        """Logits for every position of `dec_in` (B, T) given the previous ids: (B, T, V)."""
        out, state = self.decoder(self.drop(self.embed(dec_in)), state)  # (B, T, H)
        return self.head(self.drop(self._attend(out, memory))), state  # (B, T, V)

    def _attend(self, out: torch.Tensor, memory: Memory) -> torch.Tensor:
        """Mix each decoder output with its attention context over the source: (B, T, H) -> (B, T, H)."""
        if self.attention == "none":
            return out
        context = self.attention_weights(out, memory) @ memory.values  # (B, T, D)
        return torch.tanh(self.combine(torch.cat([out, context], dim=-1)))  # (B, T, H)

    def attention_weights(self, out: torch.Tensor, memory: Memory) -> torch.Tensor:
        """How each decoder output (B, T, H) spreads its attention over the source: (B, T, S), rows sum to 1."""
        if self.attention == "dot":
            scores = out @ memory.keys.transpose(1, 2)  # (B, T, S)
        else:
            hidden = torch.tanh(self.query(out)[:, :, None, :] + memory.keys[:, None, :, :])  # (B, T, S, H)
            scores = self.score(hidden).squeeze(-1)  # (B, T, S)
        return scores.masked_fill(~memory.mask[:, None, :], float("-inf")).softmax(dim=-1)

    def alignment(self, src: torch.Tensor, src_len: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        """The attention weights (B, T, S) of decoding `dec_in` (<bos> + output so far) from `src`: fed the
        net's own output, the teacher-forced pass computes exactly the weights free-running decoding used."""
        if self.attention == "none":
            raise CharLMError("this seq2seq model was trained with model.attention=none: it has no alignment to show")
        memory, state = self.encode(src, src_len)
        out, _ = self.decoder(self.drop(self.embed(dec_in)), state)  # (B, T, H)
        return self.attention_weights(out, memory)

    def forward(
        self, src: torch.Tensor, src_len: torch.Tensor, dec_in: torch.Tensor, teacher_forcing: float = 1.0
    ) -> torch.Tensor:
        """Training logits (B, T, V) for the targets that follow `dec_in` (<bos> + target).

        With teacher_forcing < 1, each row at each step is fed its own previous prediction
        instead of the true character with probability 1 - teacher_forcing.
        """
        memory, state = self.encode(src, src_len)
        if teacher_forcing >= 1.0:
            logits, _ = self.decode(dec_in, state, memory)
            return logits
        steps, prev = [], dec_in[:, :1]  # (B, 1): <bos>
        for t in range(dec_in.size(1)):
            if t > 0:
                own = steps[-1].argmax(dim=-1)  # (B, 1)
                truth = torch.rand(own.shape, device=own.device) < teacher_forcing
                prev = torch.where(truth, dec_in[:, t : t + 1], own)
            logits, state = self.decode(prev, state, memory)  # (B, 1, V)
            steps.append(logits)
        return torch.cat(steps, dim=1)  # (B, T, V)
