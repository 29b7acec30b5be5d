"""Muon for the hidden weight matrices and AdamW for every other parameter, as one optimiser.

Muon orthogonalises the update of a 2-D matrix, which suits the matrices inside the network (attention
and MLP projections, recurrent weights). Tables that read characters or write logits (embeddings, the
output head, the input weights of a net fed one-hot characters), and vectors (norms, biases), do better
under AdamW (Jordan et al. 2024; torch.optim.Muon's own advice).

Lightning's automatic optimisation drives exactly one optimiser, so the two are wrapped in one
`torch.optim.Optimizer`: its param groups are both optimisers' groups and its state is theirs, so a
single ordinary state dict holds both, and gradient clipping, checkpoints, exact resume and the
LambdaLR schedule (which scales each group's own base lr by one factor) work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

Group = dict[str, Any]


def muon_parameters(net: nn.Module) -> list[nn.Parameter]:
    """The 2-D hidden weight matrices of `net`, each once: every 2-D parameter but the character tables the
    architecture declares (`character_tables`: embeddings, the output head, ...); a tied weight is one."""
    declared = getattr(net, "character_tables", None)
    if not callable(declared):
        raise TypeError(f"{type(net).__name__} declares no character_tables(); Muon cannot tell its tables apart")
    excluded = {id(p) for p in declared()}
    chosen: dict[int, nn.Parameter] = {}
    for param in net.parameters():
        if param.dim() == 2 and param.requires_grad and id(param) not in excluded:
            chosen[id(param)] = param
    return list(chosen.values())


def split_parameters(net: nn.Module) -> list[Group]:
    """Three groups: Muon's matrices; AdamW's matrices (weight decay); AdamW's vectors (no weight decay).

    Each group says which optimiser owns it (`muon`), so the split survives a checkpoint round trip.
    """
    muon = muon_parameters(net)
    taken = {id(p) for p in muon}
    rest = [p for p in net.parameters() if p.requires_grad and id(p) not in taken]
    return [
        {"params": muon, "muon": True},
        {"params": [p for p in rest if p.dim() >= 2], "muon": False},
        {"params": [p for p in rest if p.dim() < 2], "muon": False, "weight_decay": 0.0},
    ]


class MuonAdamW(torch.optim.Optimizer):
    """torch.optim.Muon over the groups marked `muon`, torch.optim.AdamW over the others, stepped together.

    `lr`, `weight_decay`, `momentum`, `nesterov`, `ns_steps` and `adjust_lr_fn` are Muon's; the `adamw_*`
    keys are AdamW's. Build the groups with `split_parameters` (the LightningModule does).
    """

    parameter_groups: Callable[[nn.Module], list[Group]] = staticmethod(split_parameters)

    def __init__(
        self,
        params: Iterable[Group],
        lr: float = 2.0e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = "match_rms_adamw",
        adamw_lr: float = 2.0e-3,
        adamw_betas: tuple[float, float] = (0.9, 0.99),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.1,
        adamw_fused: bool | None = None,
    ):
        groups = [dict(g) for g in params]
        muon_groups = [g for g in groups if g.get("muon", False)] or [{"params": [], "muon": True}]
        adamw_groups = [g for g in groups if not g.get("muon", False)] or [{"params": [], "muon": False}]
        self._muon = torch.optim.Muon(
            muon_groups,
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        self._adamw = torch.optim.AdamW(
            adamw_groups,
            lr=adamw_lr,
            betas=tuple(adamw_betas),
            eps=adamw_eps,
            weight_decay=adamw_weight_decay,
            fused=adamw_fused,
        )
        # The same group dicts, not copies: this optimiser's groups are the two optimisers' groups.
        super().__init__(self._muon.param_groups + self._adamw.param_groups, defaults={})
        self._link()

    def _link(self) -> None:
        """Point both optimisers at this one's groups and state; `load_state_dict` replaces those objects."""
        self._muon.param_groups = [g for g in self.param_groups if g["muon"]]
        self._adamw.param_groups = [g for g in self.param_groups if not g["muon"]]
        self._muon.state = self._adamw.state = self.state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._link()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._link()
        self._muon.step()
        self._adamw.step()
        return loss
