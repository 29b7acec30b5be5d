"""Stored values: a few training steps of each architecture, their losses to 4 decimals.

A change that alters training numerics (initialisation, data order, optimiser, schedule, a
model's forward) shows up here, even when every behavioural test still passes. After a change
that is meant to alter them, refresh the values with `CHARLM_UPDATE_REGRESSION=1 pytest
tests/test_regression.py` and say why in the commit.
"""

import json
import os
from pathlib import Path

import pytest
import torch

from charlm.build import build_module
from charlm.data import TrainBatches
from charlm.loss import next_char_loss
from charlm.schedule import optimizer_and_schedule
from charlm.vocab import Vocab

from conftest import MODELS, compose_train, make_text, tiny_overrides

STORED = Path(__file__).parent / "fixtures" / "regression_losses.json"
STEPS = 5


def losses_of(model: str) -> list[float]:
    cfg = compose_train([*tiny_overrides(model), "paths.output_dir=unused", "seed=7"])
    text = make_text(3000, seed=1)
    vocab = Vocab.from_text(text)
    torch.manual_seed(cfg.seed)
    module = build_module(cfg, vocab.chars)
    optimizer, schedule = optimizer_and_schedule(
        module.net, dict(module.hparams.optimizer), module.hparams.scheduler, STEPS
    )
    batches = TrainBatches(
        vocab.encode(text), cfg.data.block_size, cfg.data.batch_size, "random", cfg.seed, epoch_batches=100
    )
    losses = []
    for step in range(STEPS):
        batch = batches.batch(step)
        logits, _ = module.net(batch["x"], None)
        loss = next_char_loss(logits, batch["y"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(round(loss.item(), 4))
    return losses


@pytest.mark.parametrize("model", MODELS)
def test_a_few_training_steps_give_the_stored_losses(model: str) -> None:
    got = losses_of(model)
    if os.environ.get("CHARLM_UPDATE_REGRESSION") == "1":
        stored = json.loads(STORED.read_text()) if STORED.is_file() else {}
        STORED.write_text(json.dumps({**stored, model: got}, indent=2) + "\n")
    expected = json.loads(STORED.read_text())[model]
    assert got == pytest.approx(expected, abs=2e-4)
