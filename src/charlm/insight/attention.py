"""Attention: where a transformer's heads look, and how a seq2seq decoder aligns its output with the source.

Both are computed explicitly beside the fast path (whose fused kernels never form the weights):
`TransformerLM.attention` and `Seq2Seq.alignment`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charlm.errors import CharLMError
from charlm.sampling import eval_mode
from charlm.vocab import Vocab


def has_attention(net: torch.nn.Module) -> bool:
    """Whether `net` is a language model with self-attention to show (the transformer)."""
    return callable(getattr(net, "attention", None))


@torch.no_grad()
def attention_maps(
    net: torch.nn.Module, vocab: Vocab, text: str, device: str | torch.device | None = None
) -> np.ndarray:
    """(layers, heads, T, T) attention weights of `text` read from scratch: row t is where position t looks
    among positions 0..t (rows sum to 1; nothing above the diagonal). `text` fits the model's block_size."""
    if not has_attention(net):
        raise CharLMError(f"{type(net).__name__} has no self-attention; the attention view is for the transformer")
    if not text:
        raise CharLMError("the text is empty; nothing to attend over")
    if len(text) > net.max_context:
        raise CharLMError(f"the attention window is {len(text)} characters, longer than block_size={net.max_context}")
    ids = vocab.encode(text).to(device or next(net.parameters()).device)[None]  # (1, T)
    with eval_mode(net):
        maps = net.attention(ids)  # per layer (1, nh, T, T)
    return torch.stack([m[0] for m in maps]).float().cpu().numpy()


@dataclass
class Alignment:
    """A seq2seq decoding and its attention: weights[i, j] is how much output character i looked at source j."""

    source: list[str]  # the source's characters and "<eos>" (the encoder reads it too)
    output: list[str]  # the output's characters, one row each
    weights: np.ndarray  # (len(output), len(source))


@torch.no_grad()
def alignment(net: torch.nn.Module, vocab, source: str, output: str) -> Alignment:
    """The attention of `net` (a seq2seq net with attention) while producing `output` from `source`."""
    from charlm.seq2seq.data import BOS, EOS

    if not output:
        raise CharLMError(f"the output for {source!r} is empty: there is no alignment to draw")
    device = next(net.parameters()).device
    src = torch.cat([vocab.encode(source), torch.tensor([EOS])]).to(device)[None]  # (1, S)
    out = vocab.encode(output)
    dec_in = torch.cat([torch.tensor([BOS]), out[:-1]]).to(device)[None]  # (1, T): each row predicts out[t]
    with eval_mode(net):
        weights = net.alignment(src, torch.tensor([src.size(1)]), dec_in)[0]  # (T, S)
    return Alignment([*source, "<eos>"], list(output), weights.float().cpu().numpy())
