"""The architectures. Each is an `nn.Module` that honours the contract in `base.py`."""

from charlm.models.base import CharNet
from charlm.models.bigram import BigramLM
from charlm.models.recurrent import RecurrentLM
from charlm.models.transformer import TransformerLM

__all__ = ["CharNet", "BigramLM", "RecurrentLM", "TransformerLM"]
