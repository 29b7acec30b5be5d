"""lightning-hydra-template's habits: the debug group, callbacks=none, test=true and train=false."""

import json
import logging

import pytest
import torch

from charlm.errors import CharLMError

from conftest import compose_train, tiny_overrides, train_in_process


def result(run_dir) -> dict:
    return json.loads((run_dir / "result.json").read_text())


@pytest.mark.parametrize("option", ["fdr", "overfit", "limit", "profiler"])
def test_every_debug_option_runs_on_one_cpu_without_a_logger(option):
    cfg = compose_train([f"debug={option}"], hydra=True)
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.devices == 1 and cfg.trainer.detect_anomaly
    assert dict(cfg.logger or {}) == {} and cfg.hydra.run.dir.startswith("outputs/debug/")


def test_debug_fdr_writes_no_checkpoint(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("gru"), f"data.path={corpus}", "debug=fdr")
    assert not list(tmp_path.rglob("*.ckpt")) and result(tmp_path)["steps"] == 1


def test_debug_overfit_repeats_one_batch(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("bigram"), f"data.path={corpus}", "debug=overfit", "trainer.max_steps=4")
    assert compose_train(["debug=overfit"]).trainer.overfit_batches == 1 and result(tmp_path)["steps"] == 4


def test_debug_limit_runs_three_short_epochs(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("bigram"), f"data.path={corpus}", "debug=limit", "trainer.max_steps=-1")
    assert result(tmp_path)["steps"] == 30  # 3 epochs of 1% of 1,000 batches


def test_debug_profiler_reports_in_the_log(tmp_path, corpus, caplog):
    with caplog.at_level(logging.INFO):
        train_in_process(tmp_path, *tiny_overrides("bigram"), f"data.path={corpus}", "debug=profiler")
    assert "Profiler Report" in caplog.text


def test_callbacks_none_trains_without_charlms_callbacks(tmp_path, corpus):
    tiny = [o for o in tiny_overrides("bigram") if not o.startswith("callbacks.")]
    train_in_process(tmp_path, *tiny, f"data.path={corpus}", "callbacks=none")
    assert not (tmp_path / "result.json").exists()  # RunResult is one of the callbacks


def test_test_true_scores_the_test_split_with_the_best_checkpoint(tmp_path, corpus):
    train_in_process(tmp_path, *tiny_overrides("lstm"), f"data.path={corpus}", "data.test_fraction=0.1", "test=true")
    record = result(tmp_path)
    assert record["test_loss"] > 0 and record["test_bpc"] == pytest.approx(record["test_loss"] / 0.6931, rel=1e-3)
    assert record["test_loss"] != record["final_val_loss"]


def test_test_true_without_a_test_split_is_refused_before_training(tmp_path, corpus):
    with pytest.raises(CharLMError, match="data.test_fraction"):
        train_in_process(tmp_path, *tiny_overrides("bigram"), f"data.path={corpus}", "test=true")
    assert not (tmp_path / "checkpoints").exists()


def test_train_false_scores_a_checkpoint_built_from_its_own_settings(tmp_path, corpus):
    run = tmp_path / "run"
    best = train_in_process(run, *tiny_overrides("gru"), f"data.path={corpus}", "data.test_fraction=0.1")
    scored = tmp_path / "scored"
    # model=lstm on the command line: the checkpoint's own GRU settings are used, not the config's
    data = [o for o in tiny_overrides("gru") if o.startswith("data.")]  # the run's windows, not the model
    loss = train_in_process(
        scored, *data, f"data.path={corpus}", "data.test_fraction=0.1", "train=false", f"ckpt_path={run}", "test=true"
    )
    assert loss == pytest.approx(best, abs=1e-4)
    record = result(scored)
    assert record["val_loss"] == pytest.approx(best, abs=1e-4) and record["test_loss"] > 0
    assert not (scored / "checkpoints").exists()
    assert torch.load(next((run / "checkpoints").glob("best*.ckpt")), weights_only=False)["global_step"] > 0


def test_train_false_needs_a_checkpoint(tmp_path, corpus):
    with pytest.raises(CharLMError, match="ckpt_path"):
        train_in_process(tmp_path, f"data.path={corpus}", "train=false")
