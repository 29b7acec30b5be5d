"""The real `train.py` and `generate.py` commands, as a user runs them, on tiny models."""

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import MODELS, run_script, tiny_overrides, train_cli


def events(run_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_each_model_trains_logs_samples_checkpoints_and_generates(model, corpus, tmp_path):
    run = tmp_path / "run"
    done = train_cli(run, *tiny_overrides(model), f"data.path={corpus}")
    assert done.returncode == 0, done.stderr[-3000:]
    acc = events(run)
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/bpc", "train/lr", "train/tokens_per_sec"} <= scalars, scalars
    val = [e.value for e in acc.Scalars("val/loss")]
    assert [e.step for e in acc.Scalars("val/loss")] == [3, 6]
    bpc = acc.Scalars("val/bpc")[-1].value
    assert abs(bpc - val[-1] / 0.6931471805599453) < 1e-4
    assert any("sample" in tag for tag in acc.Tags()["tensors"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert list((run / "checkpoints").glob("best-*.ckpt"))
    assert (run / ".hydra" / "config.yaml").is_file()

    out = run_script("generate.py", f"ckpt_path={run}", "prompt=KING:", "max_new_tokens=40", "seed=1")
    assert out.returncode == 0, out.stderr[-2000:]
    again = run_script("generate.py", f"ckpt_path={run}/checkpoints/last.ckpt", "prompt=KING:",
                       "max_new_tokens=40", "seed=1", "which=last")
    assert out.stdout.startswith("KING:") and len(out.stdout.rstrip("\n")) >= 40
    assert again.returncode == 0


def test_no_validation_means_no_val_loss_and_no_samples(corpus, tmp_path):
    run = tmp_path / "run"
    done = train_cli(run, *tiny_overrides("bigram"), f"data.path={corpus}", "trainer.limit_val_batches=0")
    assert done.returncode == 0, done.stderr[-3000:]
    acc = events(run)
    assert "val/loss" not in acc.Tags()["scalars"] and "train/loss" in acc.Tags()["scalars"]
    assert not any("sample" in tag for tag in acc.Tags()["tensors"])
    assert (run / "checkpoints" / "last.ckpt").is_file()


def test_generate_is_reproducible_with_a_seed_and_varies_without(corpus, tmp_path):
    run = tmp_path / "run"
    assert train_cli(run, *tiny_overrides("lstm"), f"data.path={corpus}").returncode == 0
    texts = [run_script("generate.py", f"ckpt_path={run}", f"seed={s}", "max_new_tokens=80", "num_samples=2").stdout
             for s in (5, 5, 6)]
    assert texts[0] == texts[1] and texts[0] != texts[2]
    greedy = run_script("generate.py", f"ckpt_path={run}", "greedy=true", "use_cache=false", "max_new_tokens=30")
    cached = run_script("generate.py", f"ckpt_path={run}", "greedy=true", "max_new_tokens=30")
    assert greedy.returncode == 0 and greedy.stdout == cached.stdout
