"""Training the seq2seq model: `CharLM` with its own steps and metrics.

Optimiser, schedule, checkpoint checks and the plain-dict hyperparameters are `CharLM`'s;
only what differs for pairs is here: padded batches, teacher forcing, and validation that
decodes the val sources freely (greedy) to measure what a user would get, not just the loss.
"""

from __future__ import annotations

import torch
from lightning.pytorch.utilities import rank_zero_only
from torchmetrics import MeanMetric
from torchmetrics.text import CharErrorRate

from charlm import logbook
from charlm.lightning_module import CharLM
from charlm.loss import IGNORE, summed_loss
from charlm.seq2seq.data import PairVocab
from charlm.seq2seq.decoding import decode_ids

SAMPLES_SHOWN = 4  # val pairs written to the loggers after each validation (tag val/sample)


def sample_text(rows: list[tuple[str, str, str]]) -> str:
    """Sources, targets and outputs, one block per pair, an exact output marked `ok`."""
    lines = []
    for source, target, output in rows:
        mark = "ok" if output == target else "  "
        lines += [f"source: {source}", f"target: {target}", f"output: {output}  {mark}", ""]
    return "\n".join(lines)


class Seq2SeqLM(CharLM):
    """Trains `Seq2Seq` on padded (source, target) batches from `PairsDataModule`."""

    vocab_class = PairVocab

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.val_cer = CharErrorRate()
        self.val_exact = MeanMetric()
        self.samples: list[tuple[str, str, str]] = []

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, dec_in: torch.Tensor) -> torch.Tensor:
        return self.net(src, src_len, dec_in)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        ratio = self.net.teacher_forcing(self.global_step)
        logits = self.net(batch["x"], batch["x_len"], batch["dec_in"], teacher_forcing=ratio)  # (B, T, V)
        loss_sum, count = summed_loss(logits, batch["y"])
        loss = loss_sum / count
        scheduled = ratio < 1.0 or self.net.tf_final is not None
        self.log_train(loss, count, {"train/teacher_forcing": ratio} if scheduled else None)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        y = batch["y"]  # (B, T): target + <eos>, IGNORE after the end
        logits = self.net(batch["x"], batch["x_len"], batch["dec_in"])  # (B, T, V), always teacher-forced
        loss_sum, count = summed_loss(logits, y)
        self.val_loss.update(loss_sum / count, weight=count)
        # free-running: up to twice the longest target, so a run-on output still counts against CER
        out = decode_ids(self.net, batch["x"], batch["x_len"], 2 * y.size(1) + 8)
        outputs = [self.vocab.decode(row) for row in out]
        targets = [self.vocab.decode(row[row != IGNORE]) for row in y]
        self.val_cer.update(outputs, targets)
        matches = [o == t for o, t in zip(outputs, targets, strict=True)]
        self.val_exact.update(torch.tensor(matches, dtype=torch.float, device=y.device))
        if batch_idx == 0:
            sources = [self.vocab.decode(row) for row in batch["x"]]
            self.samples = list(zip(sources, targets, outputs, strict=True))[:SAMPLES_SHOWN]

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()  # val/loss and val/bpc, per target character
        self.log_val({"val/cer": self.val_cer.compute(), "val/exact_match": self.val_exact.compute()})
        self.val_cer.reset()
        self.val_exact.reset()
        if not self.trainer.sanity_checking:
            self._write_samples()

    @rank_zero_only
    def _write_samples(self) -> None:
        if self.samples:
            logbook.log_text(self.trainer, "val/sample", sample_text(self.samples), self.global_step)
