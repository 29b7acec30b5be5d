"""Callbacks that show what a model learns while it trains, through `charlm.logbook` to every logger:
- SurpriseImage: after each validation, the surprise map of one fixed val excerpt (the same characters every
  time, so the steps compare) in TensorBoard's IMAGES tab;
- AlignmentImage: after each validation of a seq2seq model with attention, its alignment on one fixed val pair;
- EmbeddingProjector: when fit ends, the character embeddings in TensorBoard's PROJECTOR, labelled.
Each costs one short forward pass and one small figure per validation, on rank 0 only.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only

from charlm import logbook
from charlm.insight.attention import alignment
from charlm.insight.figures import alignment_figure, surprise_figure, to_rgb
from charlm.insight.surprise import surprise

VISIBLE = {"\n": "\\n", " ": "<space>", "\t": "\\t", "\r": "\\r"}


def wanted(trainer: L.Trainer, enabled: bool) -> bool:
    return enabled and bool(trainer.loggers) and not trainer.sanity_checking


class SurpriseImage(L.Callback):
    """The first `chars` characters of the val split coloured by their loss (read as one sequence)."""

    def __init__(self, enabled: bool = True, chars: int = 480, columns: int = 80):
        self.enabled, self.chars, self.columns = enabled, chars, columns
        self.excerpt: str | None = None

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not wanted(trainer, self.enabled) or not pl_module.architecture.continues_text:
            return
        if self.excerpt is None:
            val = getattr(trainer.datamodule, "splits", {}).get("val")
            if val is None or len(val) < 2:
                return
            self.excerpt = pl_module.vocab.decode(val[: self.chars].tensor())
        s = surprise(pl_module.net, pl_module.vocab, self.excerpt, context="stream")
        image = to_rgb(surprise_figure(s, length=self.chars, columns=self.columns))
        logbook.log_image(trainer, "insight/surprise", image, trainer.global_step)


class AlignmentImage(L.Callback):
    """A seq2seq model's attention on the first val pair, decoded greedily as validation decodes."""

    def __init__(self, enabled: bool = True, max_new_tokens: int = 80):
        self.enabled, self.max_new_tokens = enabled, max_new_tokens

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            not wanted(trainer, self.enabled)
            or pl_module.architecture.continues_text
            or pl_module.net.attention == "none"
        ):
            return
        pairs = getattr(trainer.datamodule, "val_pairs", None)
        if not pairs:
            return
        from charlm.seq2seq.decoding import translate

        source = pairs[0][0]
        output = translate(pl_module.net, pl_module.vocab, [source], self.max_new_tokens)[0]
        if output:
            image = to_rgb(alignment_figure(alignment(pl_module.net, pl_module.vocab, source, output)))
            logbook.log_image(trainer, "insight/alignment", image, trainer.global_step)


def embedding_table(net: torch.nn.Module) -> torch.nn.Embedding | None:
    """The character embedding the net declares (`input_embedding`, charlm.models.base.CharNet), if any."""
    name = getattr(net, "input_embedding", None)
    table = getattr(net, name, None) if name else None
    return table if isinstance(table, torch.nn.Embedding) else None


def labels(vocab) -> list[str]:
    """One visible label per embedding row: the character, whitespace spelt out, seq2seq's specials first."""
    specials = list(getattr(vocab, "SPECIALS", ()))
    return specials + [VISIBLE.get(ch, ch) for ch in vocab.chars]


class EmbeddingProjector(L.Callback):
    """The character embedding at the end of fit, for TensorBoard's PROJECTOR (models without one: nothing)."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled

    @rank_zero_only
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        table = embedding_table(pl_module.net)
        if not (self.enabled and trainer.loggers) or table is None:
            return
        matrix = table.weight.detach().float().cpu().numpy()  # (V, E)
        names = labels(pl_module.vocab)
        if len(names) == len(matrix):
            logbook.log_embedding(
                trainer, "insight/characters", np.ascontiguousarray(matrix), names, trainer.global_step
            )
