"""The one contract every language-model architecture honours.

    logits, state = net(ids, state)      ids: (B, T) int64  ->  logits: (B, T, V)

`state` is whatever the architecture needs to continue a sequence without re-reading it:
the hidden state of a recurrent net, the key/value cache of the transformer, `None` for
the bigram table. Passing the returned state back with the next ids continues the
sequence; passing `None` starts afresh. Training in stream mode (state carried across
batches), validation, the sample callback and `generate()` all go through this one call.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class CharNet(nn.Module):
    """Base class: the facts the shared code needs about an architecture.

    carries_state: the state is worth carrying from one training batch to the next
        (true for recurrent nets: truncated back-propagation through time).
    max_context: the longest sequence one forward call may see, or `None` if unbounded.
    character_modules: the submodules whose weights are tables indexed by character (embeddings, the
        output head), named by the architecture itself; see `character_tables`.
    input_embedding: the submodule (an nn.Embedding) that embeds input characters, if the net has one:
        what TensorBoard's projector shows (charlm.insight.callbacks).
    """

    carries_state: bool = False
    max_context: int | None = None
    character_modules: tuple[str, ...] = ()
    input_embedding: str | None = None

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def character_tables(self) -> list[nn.Parameter]:
        """Matrices whose rows or columns are characters, not hidden features. Optimisers that treat hidden
        matrices specially (Muon) leave these to AdamW; an architecture declares them, nothing guesses."""
        return module_tables(self, self.character_modules)


def module_tables(net: nn.Module, names: tuple[str, ...]) -> list[nn.Parameter]:
    """The 2-D weights of the named submodules (those that exist: an optional one may be None)."""
    tables = []
    for name in names:
        module = getattr(net, name, None)
        if module is not None:
            tables.extend(p for p in module.parameters() if p.dim() == 2)
    return tables


def detach_state(state: Any) -> Any:
    """Cut the autograd graph behind a carried state (truncated BPTT), whatever its nesting."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state
