"""The architectures. Each language model is an `nn.Module` that honours the contract in `base.py`;
the encoder-decoder `Seq2Seq` has its own (see `seq2seq.py`)."""

from charlm.models.base import CharNet
from charlm.models.bigram import BigramLM
from charlm.models.recurrent import RecurrentLM
from charlm.models.seq2seq import Seq2Seq
from charlm.models.transformer import TransformerLM

__all__ = ["CharNet", "BigramLM", "RecurrentLM", "Seq2Seq", "TransformerLM"]
