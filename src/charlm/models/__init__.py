"""The architectures and the registry that names them.

Each language model is an `nn.Module` that honours the contract in `base.py`; the seq2seq
encoder-decoder lives with its task in `charlm.seq2seq`. Adding an architecture: one file here
(the net), one YAML in conf/model/ whose `_target_` names it, one entry in `ARCHITECTURES`, one test.

The registry is the one place that knows the architectures: what each trains on, which jobs apply to
it and what its config options are called. Jobs, callbacks, tests and benchmarks ask it; nothing tests
class paths or task names of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from charlm.models.base import CharNet
from charlm.models.bigram import BigramLM
from charlm.models.recurrent import RecurrentLM
from charlm.models.transformer import TransformerLM

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BigramLM",
    "CharNet",
    "RecurrentLM",
    "TransformerLM",
    "architecture",
    "language_models",
]


@dataclass(frozen=True)
class Architecture:
    """What the shared code needs to know of an architecture, by class path (imported on demand)."""

    net: str  # the nn.Module a config's `_target_` names
    configs: tuple[str, ...]  # the conf/model/ options that build it (model=NAME)
    module: str = "charlm.lightning_module.CharLM"  # the LightningModule that trains it
    data: str = "charlm.data.CharDataModule"  # the data module whose batches it trains on
    continues_text: bool = True  # a language model: generate continues a prompt; evaluate, test=true, text
    #                              samples and the inspect views score text with it
    decoder: str | None = None  # otherwise, what generate calls instead: a function (cfg, net, vocab) -> texts
    aliases: tuple[str, ...] = ()  # other class paths for the same net, in configs and older checkpoints


ARCHITECTURES = {
    "bigram": Architecture("charlm.models.bigram.BigramLM", ("bigram",), aliases=("charlm.models.BigramLM",)),
    "recurrent": Architecture(
        "charlm.models.recurrent.RecurrentLM", ("rnn", "lstm", "gru"), aliases=("charlm.models.RecurrentLM",)
    ),
    "transformer": Architecture(
        "charlm.models.transformer.TransformerLM", ("transformer",), aliases=("charlm.models.TransformerLM",)
    ),
    "seq2seq": Architecture(
        "charlm.seq2seq.model.Seq2Seq",
        ("seq2seq",),
        module="charlm.seq2seq.lightning_module.Seq2SeqLM",
        data="charlm.seq2seq.data.PairsDataModule",
        continues_text=False,
        decoder="charlm.seq2seq.decoding.run",
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


def language_models() -> list[str]:
    """The model= options of every architecture that continues text, in the registry's order."""
    return [name for arch in ARCHITECTURES.values() if arch.continues_text for name in arch.configs]
