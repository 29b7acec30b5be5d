"""Every Lightning Trainer argument is a `trainer.X` key, and the flags people debug with do what Lightning
documents, on charlm's step-indexed data too."""

import inspect
import json
import logging

import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from charlm.build import build_trainer
from charlm.config import check_config
from charlm.errors import CharLMError

from conftest import ROOT, compose_train, tiny_overrides, train_in_process

BUILT_BY_CHARLM = {"logger", "callbacks", "plugins"}  # from the logger/ and callbacks/ groups


def scalars(run_dir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_every_trainer_argument_is_a_key_of_the_trainer_config():
    keys = set(OmegaConf.load(ROOT / "conf" / "trainer" / "default.yaml")) - {"_target_"}
    assert keys == set(inspect.signature(L.Trainer).parameters) - BUILT_BY_CHARLM


@pytest.mark.parametrize(
    ("override", "named"),
    [("trainer.fast_dev_run=often", "trainer.fast_dev_run"), ("trainer.detect_anomaly=3", "trainer.detect_anomaly")],
)
def test_a_trainer_argument_of_the_wrong_type_is_refused_by_name(override, named):
    cfg = compose_train([override])
    with pytest.raises(CharLMError, match=named):
        check_config(cfg)


def test_trainer_flags_reach_the_trainer(tmp_path):
    cfg = compose_train(
        [
            f"hydra.run.dir={tmp_path}",
            "paths.output_dir=" + str(tmp_path),
            "trainer.precision=bf16-mixed",
            "trainer.deterministic=true",
            "trainer.detect_anomaly=true",
            "trainer.profiler=simple",
            "trainer.accumulate_grad_batches=3",
            "trainer.num_sanity_val_steps=2",
            "trainer.limit_train_batches=0.25",
        ]
    )
    try:
        trainer = build_trainer(cfg)
        assert torch.are_deterministic_algorithms_enabled()  # what Lightning's deterministic=true sets
    finally:
        torch.use_deterministic_algorithms(False)
    assert trainer.precision == "bf16-mixed"
    assert trainer._detect_anomaly is True
    assert type(trainer.profiler).__name__ == "SimpleProfiler"
    assert trainer.accumulate_grad_batches == 3
    assert trainer.num_sanity_val_steps == 2
    assert trainer.limit_train_batches == 0.25


def test_fast_dev_run_writes_no_checkpoint_and_no_logs(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("lstm"), f"data.path={corpus}", "trainer.fast_dev_run=true")
    assert not list(tmp_path.rglob("*.ckpt"))
    assert not list(tmp_path.rglob("events.out.tfevents*"))
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 1


def test_overfit_batches_trains_on_the_same_batch_until_the_loss_nears_zero(tmp_path, corpus):
    train_in_process(
        tmp_path,
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "trainer.overfit_batches=1",
        "trainer.max_steps=120",
        "trainer.val_check_interval=120",
        "model.hidden_size=64",
        "optimizer.lr=1e-2",
        "scheduler.warmup_steps=0",
    )
    losses = [v for _, v in scalars(tmp_path, "train/loss")]
    assert losses[0] > 2.5 and losses[-1] < 0.3  # random windows at this size stay above ~2


def test_limit_train_batches_shortens_each_epoch(tmp_path, corpus):
    train_in_process(
        tmp_path,
        *tiny_overrides("bigram"),
        f"data.path={corpus}",
        "data.epoch_batches=8",
        "trainer.limit_train_batches=0.25",
        "trainer.max_epochs=3",
        "trainer.max_steps=-1",
    )
    assert json.loads((tmp_path / "result.json").read_text())["steps"] == 6  # 3 epochs of 2 batches


def test_max_epochs_ends_the_learning_rate_schedule_at_its_floor(tmp_path, corpus):
    train_in_process(
        tmp_path,
        *tiny_overrides("bigram"),
        f"data.path={corpus}",
        "data.epoch_batches=10",
        "trainer.max_epochs=1",
        "trainer.max_steps=-1",  # TINY's 6 steps off: the epoch alone ends the run, as by default
        "scheduler.warmup_steps=2",
        "optimizer.lr=1e-2",
        "scheduler.min_lr_ratio=0.1",
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 10  # the epoch, not the default 3,600 steps
    factor = ckpt["lr_schedulers"][0]["lr_lambdas"][0]
    assert factor["total_steps"] == 10
    lrs = scalars(tmp_path, "train/lr")
    assert lrs[-1][0] == 10 and lrs[-1][1] == pytest.approx(1e-3, rel=0.05)  # cosine down to min_lr_ratio * lr


def test_max_epochs_lifts_the_default_step_limit():
    cfg = compose_train(["trainer.max_epochs=5"])
    assert cfg.trainer.max_steps == -1 and compose_train([]).trainer.max_steps == 3600


def test_accumulate_grad_batches_counts_optimiser_steps(tmp_path, corpus):
    train_in_process(
        tmp_path,
        *tiny_overrides("bigram"),
        f"data.path={corpus}",
        "trainer.accumulate_grad_batches=2",
        "trainer.max_steps=3",
        "trainer.val_check_interval=6",
    )
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 3
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 6  # inside batch 6


def test_the_profiler_reports_in_the_log(tmp_path, corpus, caplog):
    with caplog.at_level(logging.INFO):
        train_in_process(tmp_path, *tiny_overrides("bigram"), f"data.path={corpus}", "trainer.profiler=simple")
    assert "Profiler Report" in caplog.text


def test_a_short_run_stores_its_final_checkpoint_once(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("lstm"), f"data.path={corpus}", "trainer.max_steps=5")
    last, best = tmp_path / "checkpoints" / "last.ckpt", tmp_path / "checkpoints" / "best-000005.ckpt"
    assert last.samefile(best)  # one file, two names: the best is the final step
    train_in_process(tmp_path, *tiny_overrides("lstm"), f"data.path={corpus}", "trainer.max_steps=7", "ckpt_path=last")
    assert torch.load(last, weights_only=False)["global_step"] == 7
    for best in (tmp_path / "checkpoints").glob("best-*.ckpt"):  # rewriting last.ckpt left the best whole
        assert torch.load(best, weights_only=False)["global_step"] == int(best.stem.split("-")[1])


def test_a_gpu_recipe_on_a_machine_without_a_gpu_says_what_to_add(monkeypatch):
    from charlm.build import check_accelerator

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CharLMError, match="add trainer.accelerator=cpu") as refused:
        check_accelerator(compose_train(["experiment=nanogpt_shakespeare_char"]))
    assert "\n" not in str(refused.value)
    check_accelerator(compose_train(["experiment=nanogpt_shakespeare_char", "trainer.accelerator=cpu"]))


def test_the_default_threads_leave_busy_cores_alone(monkeypatch):
    from charlm import config

    cfg = compose_train(["threads=0"])
    monkeypatch.setattr(config.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(config, "busy_cores", lambda: 1.1)
    assert config.resolve_threads(cfg) == 3
    monkeypatch.setattr(config, "busy_cores", lambda: 0.2)
    assert config.resolve_threads(cfg) == 4
    assert config.resolve_threads(compose_train(["threads=2"])) == 2


def test_busy_cores_sees_a_busy_process():
    import subprocess
    import sys

    from charlm.config import busy_cores

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.5)  # started and spinning
        assert busy_cores() > 0.6
    finally:
        spinner.kill()
        spinner.wait()
