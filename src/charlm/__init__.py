"""charlm: character-level language models on PyTorch Lightning and Hydra."""

from charlm.errors import CharLMError
from charlm.vocab import Vocab

__all__ = ["CharLMError", "Vocab"]
