"""charlm: character-level language models on PyTorch Lightning and Hydra.

The names below load on first use, so that the commands' `--help` never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from charlm.errors import CharLMError

__all__ = ["CharLMError", "Vocab"]
_LAZY = {"Vocab": "charlm.vocab"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")
