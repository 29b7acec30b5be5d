"""charlm-evaluate: the run's own val split, other splits and texts, stream context, dynamic evaluation."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm.jobs.evaluate import DynamicEval, carried_segments, score, sliding_segments
from charlm.loading import load_model
from charlm.loss import IGNORE
from charlm.prepared import Tokens

from conftest import make_text, run_command, tiny_overrides, train_command


def evaluate(*args: str, cache: Path) -> tuple[int, dict | None, str]:
    done = run_command("evaluate.py", *args, env={"CHARLM_CACHE": str(cache)})
    last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return done.returncode, json.loads(last) if last.startswith("{") else None, done.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny LSTM (whose val split is validated on a subset) and a tiny transformer with a test split."""
    root = tmp_path_factory.mktemp("evaluate")
    corpus = root / "corpus.txt"
    corpus.write_text(make_text(8000), encoding="utf-8")
    env = {"CHARLM_CACHE": str(root / "cache")}
    specs = {
        "lstm": [*tiny_overrides("lstm"), "data.val_max_chars=400"],
        "transformer": [*tiny_overrides("transformer"), "data.test_fraction=0.1"],
        "lstm_ema": [*tiny_overrides("lstm"), "averaging=ema", "averaging.decay=0.5"],
    }
    for name, overrides in specs.items():
        done = train_command(root / name, *overrides, f"data.path={corpus}", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "corpus": corpus, **{name: root / name for name in specs}}


def final_val_loss(run: Path) -> float:
    return json.loads((run / "result.json").read_text())["final_val_loss"]


@pytest.mark.parametrize("model", ["lstm", "transformer", "lstm_ema"])
def test_evaluate_scores_the_run_val_split_as_its_validation_did(runs, model):
    code, result, err = evaluate(f"ckpt_path={runs[model]}", "which=last", cache=runs["root"] / "cache")
    assert code == 0, err[-2000:]
    assert abs(result["loss"] - final_val_loss(runs[model])) < 1e-3
    assert result["bpc"] == pytest.approx(result["loss"] / np.log(2), abs=1e-5)
    assert {"chars", "skipped", "seconds"} <= set(result) and result["split"] == "val"


def test_an_averaged_run_validates_and_saves_the_average_and_keeps_the_trained_weights(runs):
    ckpt = torch.load(runs["lstm_ema"] / "checkpoints" / "last.ckpt", weights_only=True)
    average, trained = ckpt["state_dict"], ckpt["current_model_state"]
    assert average.keys() == trained.keys()
    assert any(not torch.equal(average[k], trained[k]) for k in average)  # what evaluate and generate load
    assert int(ckpt["averaging_state"]["n_averaged"]) == ckpt["global_step"]


def test_a_val_subset_is_announced_in_the_log_and_scores_fewer_characters(runs):
    log = (runs["lstm"] / "train.log").read_text()
    assert "validating on 25 evenly spaced of the val split's" in log and "data.val_max_chars=400" in log
    code, result, _ = evaluate(f"ckpt_path={runs['lstm']}", "which=last", cache=runs["root"] / "cache")
    assert code == 0 and result["chars"] == 24 * 16 + 15  # 799 targets: the last of 50 windows scores 15


def test_the_test_split_is_scored_and_a_missing_one_is_refused(runs):
    code, result, err = evaluate(f"ckpt_path={runs['transformer']}", "split=test", cache=runs["root"] / "cache")
    assert code == 0, err[-2000:]
    assert result["split"] == "test" and result["chars"] == 800 - 1
    code, result, err = evaluate(f"ckpt_path={runs['lstm']}", "split=test", cache=runs["root"] / "cache")
    assert code == 2 and result is None and "split=test of this run is empty" in err


def test_unknown_characters_are_an_error_or_skipped_and_counted(runs, tmp_path):
    text = tmp_path / "other text, vol=2.txt"
    line = "ROMEO:\nThe king {shall} speak of love — to thee.\n"
    text.write_text(line * 3, encoding="utf-8")
    code, result, err = evaluate(f"ckpt_path={runs['lstm']}", f"text_file={text}", cache=runs["root"] / "cache")
    assert code == 2 and result is None
    [error] = [x for x in err.splitlines() if x.startswith("error:")]
    assert "'{}—'" in error and "unknown=skip" in error
    code, result, err = evaluate(
        f"ckpt_path={runs['lstm']}", f"text_file={text}", "unknown=skip", cache=runs["root"] / "cache"
    )
    assert code == 0, err[-2000:]
    assert result["skipped"] == 9 and result["chars"] == 3 * len(line) - 9 - 1


def test_stream_context_of_a_recurrent_model_equals_one_long_forward_pass(runs):
    model = load_model(str(runs["lstm"]), "last")
    ids = torch.tensor(model.vocab.encode(make_text(700, seed=3)).tolist())
    path = runs["root"] / "ids.bin"
    ids.numpy().astype(np.uint8).tofile(path)
    loss_sum, count = score(model, carried_segments(Tokens(path, "uint8"), 16), len(ids) - 1, None, "cpu")
    with torch.no_grad():
        logits, _ = model.net(ids[:-1].unsqueeze(0), None)
        whole = torch.nn.functional.cross_entropy(logits[0], ids[1:], reduction="sum")
    assert count == len(ids) - 1 and loss_sum == pytest.approx(float(whole), rel=1e-5)


def test_sliding_windows_score_every_character_once_with_half_a_block_of_context(tmp_path):
    path = tmp_path / "ids.bin"
    np.arange(103, dtype=np.uint8).tofile(path)
    scored = []
    for seg in sliding_segments(Tokens(path, "uint8"), block_size=16, stride=8):
        x, y = seg.x[0], seg.y[0]
        for i in (y != IGNORE).nonzero().flatten().tolist():
            scored.append(int(y[i]))
            if x[0] > 0:  # every window but the first: at least block_size - stride characters of context
                assert i >= 16 - 8
    assert scored == list(range(1, 103))


def test_transformer_stream_context_runs_end_to_end(runs):
    code, result, err = evaluate(
        f"ckpt_path={runs['transformer']}", "context=stream", "stride=4", cache=runs["root"] / "cache"
    )
    assert code == 0, err[-2000:]
    assert result["context"] == "stream" and result["stride"] == 4 and result["chars"] == 800 - 1


def test_dynamic_evaluation_lowers_the_loss_on_a_repeating_text_and_leaves_the_checkpoint_alone(runs, tmp_path):
    text = tmp_path / "repeats.txt"
    text.write_text(make_text(300, seed=11) * 5, encoding="utf-8")
    ckpt = runs["lstm"] / "checkpoints" / "last.ckpt"
    before = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    common = (f"ckpt_path={ckpt}", f"text_file={text}", "context=stream")
    code, static, err = evaluate(*common, cache=runs["root"] / "cache")
    assert code == 0, err[-2000:]
    code, dynamic, err = evaluate(*common, "dynamic_eval=true", "dynamic_lr=3e-3", cache=runs["root"] / "cache")
    assert code == 0, err[-2000:]
    assert dynamic["chars"] == static["chars"] and dynamic["loss"] < static["loss"] - 0.1
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == before


def test_dynamic_eval_decay_pulls_weights_back_towards_the_trained_ones():
    net = torch.nn.Linear(3, 1, bias=False)
    trained = net.weight.detach().clone()
    dynamic = DynamicEval(net, lr=0.0, decay=0.5, rule="sgd")
    with torch.no_grad():
        net.weight.add_(1.0)
    net.weight.grad = torch.zeros_like(net.weight)
    dynamic.step()
    assert torch.allclose(net.weight, trained + 0.5)


@pytest.mark.parametrize(
    ("arg", "needle"),
    [
        ("split=dev", "split='dev' is not valid: expected one of val, test, train"),
        ("context=sliding", "context='sliding' is not valid: expected one of windows, stream"),
        ("unknown=ignore", "unknown='ignore' is not valid: expected one of error, skip"),
        ("stride=0", "stride=0 is not valid: expected an integer >= 1, or null"),
        ("dynamic_lr=-1", "dynamic_lr=-1 is not valid: expected a number >= 0"),
        ("batch_size=true", "batch_size=True is not valid: expected an integer"),
        ("+colour=red", "unknown key 'colour'"),
    ],
)
def test_evaluate_mistakes_are_one_line(runs, arg, needle):
    code, result, err = evaluate(f"ckpt_path={runs['lstm']}", arg, cache=runs["root"] / "cache")
    assert code == 2 and result is None
    assert [x for x in err.splitlines() if x.startswith("error:")] == [f"error: {needle}"]
