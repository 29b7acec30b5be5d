"""The architectures and the registry that names them.

Each language model is an `nn.Module` that honours the contract in `base.py`; the seq2seq
encoder-decoder lives with its task in `charlm.seq2seq`. Adding an architecture: one file here
(the net), one YAML in conf/model/ whose `_target_` names it, one entry in `ARCHITECTURES`.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.models.base import CharNet
from charlm.models.bigram import BigramLM
from charlm.models.recurrent import RecurrentLM
from charlm.models.transformer import TransformerLM

__all__ = ["ARCHITECTURES", "Architecture", "BigramLM", "CharNet", "RecurrentLM", "TransformerLM", "architecture"]


@dataclass(frozen=True)
class Architecture:
    """What the shared code needs to know of an architecture, by class path (imported on demand)."""

    net: str  # the nn.Module a config's `_target_` names
    module: str = "charlm.lightning_module.CharLM"  # the LightningModule that trains it (it declares the task)
    aliases: tuple[str, ...] = ()  # other class paths for the same net, in configs and older checkpoints


ARCHITECTURES = {
    "bigram": Architecture("charlm.models.bigram.BigramLM", aliases=("charlm.models.BigramLM",)),
    "recurrent": Architecture("charlm.models.recurrent.RecurrentLM", aliases=("charlm.models.RecurrentLM",)),
    "transformer": Architecture("charlm.models.transformer.TransformerLM", aliases=("charlm.models.TransformerLM",)),
    "seq2seq": Architecture(
        "charlm.seq2seq.model.Seq2Seq",
        module="charlm.seq2seq.lightning_module.Seq2SeqLM",
        aliases=("charlm.seq2seq.Seq2Seq", "charlm.models.Seq2Seq", "charlm.models.seq2seq.Seq2Seq"),
    ),
}


def architecture(target: str | None) -> Architecture | None:
    """The architecture a `_target_` class path names (its own path or an alias), or None: loading a
    checkpoint never instantiates a class that is not registered here."""
    for arch in ARCHITECTURES.values():
        if target == arch.net or target in arch.aliases:
            return arch
    return None
