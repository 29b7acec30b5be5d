"""A trained model ready to use, from a checkpoint file or a run directory: what every job that reads a
checkpoint (generate, evaluate, inspect) and a notebook start from."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charlm.checkpoint import find_checkpoint
from charlm.lightning_module import CharLM, load_module


@dataclass
class LoadedModel:
    module: CharLM
    path: str

    @property
    def net(self):
        return self.module.net

    @property
    def vocab(self):
        return self.module.vocab


def load_model(ckpt_path: str, which: str = "best", device: str | torch.device = "cpu") -> LoadedModel:
    """A trained model in eval mode from a .ckpt file or a run directory; nothing else needed."""
    path = find_checkpoint(ckpt_path, which)
    return LoadedModel(load_module(path).to(device).eval(), str(path))


def default_device(device: str | None) -> str:
    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"
