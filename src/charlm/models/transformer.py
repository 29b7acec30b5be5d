"""Decoder-only GPT: token embeddings, pre-LayerNorm blocks, causal self-attention, LM head.

The defaults are the GPT-2 recipe (learned position table, GELU MLP, tied head). Config switches
turn on the usual modern variants, each independent of the others:
- `pos="rope"`: rotary position embeddings on q and k per head instead of the position table;
- `qk_norm`: RMSNorm of q and k over the head size before attention (and before the rotation);
- `mlp="relu2"`: ReLU squared instead of GELU in the MLP;
- `zero_init_proj`: residual output projections (attention and MLP) start at zero;
- `tie_weights=False`: an output head of its own instead of the token embedding;
- `logit_softcap`: logits squashed to (-cap, cap) by cap * tanh(logits / cap).

The state is a key/value cache: a list with one (k, v) pair per block, each (B, nh, T_past, hs).
Given a cache, `forward` reads only the new ids and attends over cached keys, so producing one
more character costs one position of attention instead of a re-run of the whole context. With
RoPE the cached keys are stored already rotated, and new positions start at the cache's length.
The cache never grows past `block_size`; what happens when a sequence outgrows it is the
generation loop's decision (see `charlm.sampling`), so cached and uncached decoding share it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from charlm.checks import require_choice, require_dropout, require_positive
from charlm.errors import CharLMError
from charlm.models.base import CharNet

KVCache = list[tuple[torch.Tensor, torch.Tensor]]
RopeTables = tuple[torch.Tensor, torch.Tensor]  # cos and sin, each (T, hs / 2)

POSITIONS = ("learned", "rope")
MLPS = ("gelu", "relu2")


class Rotary(nn.Module):
    """cos/sin of the rotation angle for every (position, frequency) pair up to block_size.

    The tables follow from the sizes alone, so they are non-persistent buffers: checkpoints do not
    carry them and they move with the net between devices.
    """

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs / 2,)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (block_size, hs / 2)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, start: int, length: int) -> RopeTables:
        """The tables for absolute positions start .. start + length - 1."""
        return self.cos[start : start + length], self.sin[start : start + length]


def rotate(x: torch.Tensor, rope: RopeTables) -> torch.Tensor:
    """Rotate each pair (x[i], x[i + hs/2]) of (B, nh, T, hs) by its position's angle.

    Rotating q and k by their absolute positions makes q . k depend only on their distance.
    """
    cos, sin = (t.to(x.dtype) for t in rope)  # (T, hs / 2), broadcast over B and nh
    x1, x2 = x.chunk(2, dim=-1)  # (B, nh, T, hs / 2) each
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def dropout_layer(p: float) -> nn.Module:
    """Dropout, or nothing at p = 0: a zero-rate dropout returns its input unchanged and draws no random
    numbers, yet costs a dispatched op per call, nine per generated character in a 4-layer net."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, qk_norm: bool = False):
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.resid_drop = dropout_layer(dropout)
        # Normalised q and k keep attention logits bounded however large the activations grow.
        self.q_norm = nn.RMSNorm(n_embd // n_head) if qk_norm else None
        self.k_norm = nn.RMSNorm(n_embd // n_head) if qk_norm else None

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, rope: RopeTables | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, T, C = x.shape
        # One view, one permute and one unbind: three dispatches instead of seven, the same strided q, k, v.
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head)  # (B, T, 3, nh, hs)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, nh, T, hs) each
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:  # before the cache: cached keys stay rotated at their own positions
            q, k = rotate(q, rope), rotate(k, rope)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat([past[1], v], dim=2)
        drop = self.dropout if self.training else 0.0
        if past is None or T == 1:
            # A single new query may look at every cached key; otherwise plain causal masking.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=drop, is_causal=past is None and T > 1)
        else:
            T_all = k.size(2)
            mask = torch.ones(T, T_all, dtype=torch.bool, device=x.device).tril(diagonal=T_all - T)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, C), copied contiguous
        return self.resid_drop(self.proj(y)), (k, v)

    def weights(self, x: torch.Tensor, rope: RopeTables | None = None) -> torch.Tensor:
        """The attention weights `forward`'s fused kernel never forms, for x (B, T, C) read from scratch:
        softmax(q k^T / sqrt(hs)) under the causal mask, (B, nh, T, T), each row summing to 1. For looking
        inside a trained net; training and generation never call it."""
        B, T, C = x.shape
        q, k, _ = self.qkv(x).split(C, dim=2)
        q, k = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k))  # (B, nh, T, hs)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rotate(q, rope), rotate(k, rope)
        scores = (q @ k.transpose(-2, -1)).float() / math.sqrt(q.size(-1))  # (B, nh, T, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def relu_squared(x: torch.Tensor) -> torch.Tensor:
    """ReLU(x)^2: as cheap as ReLU, and language models trained faster with it than with GELU (Primer, 2021)."""
    return F.relu(x).square()


ACTIVATIONS = {"gelu": F.gelu, "relu2": relu_squared}


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool, activation: str = "gelu"):
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.drop = dropout_layer(dropout)
        self.act = ACTIVATIONS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, qk_norm: bool = False, mlp: str = "gelu"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias, qk_norm)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias, mlp)

    def forward(
        self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None, rope: RopeTables | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        a, present = self.attn(self.ln_1(x), past, rope)
        x = x + a
        return x + self.mlp(self.ln_2(x)), present


def check_options(n_embd: int, n_head: int, pos: str, mlp: str, logit_softcap: float | None) -> None:
    """Refuse option values the network cannot be built with, in one line naming the key."""
    require_choice("model.pos", pos, POSITIONS)
    require_choice("model.mlp", mlp, MLPS)
    if n_embd % n_head:
        raise CharLMError(f"model.n_embd={n_embd} must be divisible by model.n_head={n_head}")
    if pos == "rope" and (n_embd // n_head) % 2:
        raise CharLMError(
            f"model.pos=rope needs an even head size; model.n_embd={n_embd} / model.n_head={n_head} is odd"
        )
    if logit_softcap is not None and (
        isinstance(logit_softcap, bool)
        or not isinstance(logit_softcap, (int, float))
        or not 0 < logit_softcap < math.inf
    ):
        raise CharLMError(f"model.logit_softcap={logit_softcap!r} must be positive or null")


class TransformerLM(CharNet):
    character_modules = ("tok_emb", "pos_emb", "head")  # pos_emb is None with pos=rope
    input_embedding = "tok_emb"

    def __init__(
        self,
        vocab_size: int,
        block_size: int = 256,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        dropout: float = 0.0,
        bias: bool = False,
        tie_weights: bool = True,
        pos: str = "learned",
        qk_norm: bool = False,
        mlp: str = "gelu",
        zero_init_proj: bool = False,
        logit_softcap: float | None = None,
    ):
        super().__init__()
        require_positive(vocab_size=vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        require_dropout(dropout)
        check_options(n_embd, n_head, pos, mlp, logit_softcap)
        self.max_context = block_size
        self.logit_softcap = None if logit_softcap is None else float(logit_softcap)
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        # Exactly one of the two encodes position: a learned table added to the input, or RoPE in attention.
        self.pos_emb = nn.Embedding(block_size, n_embd) if pos == "learned" else None
        self.rotary = Rotary(n_embd // n_head, block_size) if pos == "rope" else None
        self.drop = dropout_layer(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias, qk_norm, mlp) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        if tie_weights:
            self.head.weight = self.tok_emb.weight
        self._init_parameters(n_layer, zero_init_proj)

    def _init_parameters(self, n_layer: int, zero_init_proj: bool) -> None:
        """GPT-2 initialisation; with `zero_init_proj` every block starts as the identity on the residual."""
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))
        if zero_init_proj:  # after the draws above, so every other weight is what it is without the option
            for block in self.blocks:
                nn.init.zeros_(block.attn.proj.weight)
                nn.init.zeros_(block.mlp.proj.weight)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, state: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        B, T = ids.shape
        past_len = 0 if state is None else state[0][0].size(2)
        if past_len + T > self.max_context:
            raise CharLMError(f"sequence of {past_len + T} characters is longer than block_size={self.max_context}")
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:  # positions past_len .. past_len + T - 1: a slice of the table, no lookup
            x = x + self.pos_emb.weight[past_len : past_len + T]  # (T, C) broadcast over B
        rope = None if self.rotary is None else self.rotary(past_len, T)  # new ids sit after the cached ones
        x = self.drop(x)
        cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if state is None else state[i], rope)
            cache.append(present)
        return self.softcap(self.head(self.ln_f(x))), cache  # (B, T, V)

    @torch.no_grad()
    def attention(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Every block's attention weights over ids (B, T) read from scratch: one (B, nh, T, T) per layer, row t
        the distribution position t attends with over positions 0..t. A separate pass beside `forward`, which
        keeps its fused kernel."""
        B, T = ids.shape
        if T > self.max_context:
            raise CharLMError(f"sequence of {T} characters is longer than block_size={self.max_context}")
        x = self.tok_emb(ids)  # (B, T, C)
        if self.pos_emb is not None:
            x = x + self.pos_emb(torch.arange(T, device=ids.device))
        rope = None if self.rotary is None else self.rotary(0, T)
        x = self.drop(x)
        maps = []
        for block in self.blocks:
            maps.append(block.attn.weights(block.ln_1(x), rope))
            x, _ = block(x, None, rope)
        return maps

    def softcap(self, logits: torch.Tensor) -> torch.Tensor:
        """cap * tanh(logits / cap) when a cap is set: no logit can run away, however confident the net."""
        if self.logit_softcap is None:
            return logits
        return self.logit_softcap * torch.tanh(logits / self.logit_softcap)
