"""Bad input: one line naming the value and what is valid, a non-zero exit, no traceback, nothing lost."""

import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from charlm import CharLMError
from charlm.checkpoint import load_checkpoint

from conftest import make_text, run_command, tiny_overrides, train_command


def assert_one_line_error(done, *needles: str, code: int | None = 2) -> str:
    assert done.returncode != 0
    if code is not None:
        assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, done.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@pytest.mark.parametrize(
    ("setup", "overrides", "needles"),
    [
        (lambda d: d / "missing.txt", [], ["does not exist"]),
        (lambda d: write(d / "empty.txt", ""), [], ["is empty"]),
        (lambda d: (d / "nodir").mkdir() or d / "nodir", [], ["no .txt files"]),
        (lambda d: d / "none-*.txt", [], ["matches no files"]),
        (lambda d: write(d / "bad.txt", b"fine\n" * 100 + b"\xc3\x28"), [], ["bad.txt", "byte offset 500"]),
        (lambda d: write(d / "short.txt", "ab\n" * 4), [], ["too short", "train split"]),
        (lambda d: write(d / "tiny.txt", "ab" * 5), ["data.val_fraction=0.05"], ["too short", "val split"]),
    ],
)
def test_bad_corpora_are_refused(tmp_path, setup, overrides, needles):
    run = tmp_path / "run"
    done = train_command(run, *tiny_overrides("lstm"), f"data.path={setup(tmp_path)}", *overrides)
    assert_one_line_error(done, *needles)
    assert not (run / "checkpoints").exists()  # nothing that could pass for a trained model


@pytest.mark.parametrize(
    ("model", "override", "needles"),
    [
        ("lstm", "data.block_size=0", ["data.block_size", "positive"]),
        ("lstm", "data.batch_size=-4", ["data.batch_size", "positive"]),
        ("lstm", "optimizer.lr=0", ["optimizer.lr=0", "positive"]),
        ("lstm", "optimizer.lr=-1e-3", ["optimizer.lr", "positive"]),
        ("gru", "model.hidden_size=0", ["hidden_size", "positive"]),
        ("rnn", "model.num_layers=-1", ["num_layers", "positive"]),
        ("transformer", "model.n_embd=15", ["n_embd=15", "divisible", "n_head=2"]),
        ("lstm", "model.dropout=1.0", ["dropout", "[0, 1)"]),
        ("transformer", "model.dropout=-0.1", ["dropout", "[0, 1)"]),
        ("lstm", "trainer.max_steps=abc", ["trainer.max_steps='abc'", "integer"]),
        ("lstm", "data.sampling=shuffle", ["data.sampling='shuffle'", "random, stream"]),
        ("lstm", "ckpt_path=/nonexistent/last.ckpt", ["/nonexistent/last.ckpt", "does not exist"]),
    ],
)
def test_bad_config_values_are_refused_before_anything_runs(corpus, tmp_path, model, override, needles):
    run = tmp_path / "run"
    done = train_command(run, *tiny_overrides(model), f"data.path={corpus}", override)
    assert_one_line_error(done, *needles)
    assert not (run / "checkpoints").exists()


def test_unknown_model_lists_the_options(corpus, tmp_path):
    done = train_command(tmp_path / "run", "model=lstmm", f"data.path={corpus}")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "lstmm" in done.stderr and "transformer" in done.stderr  # Hydra's list of options


def test_resuming_with_another_model_or_vocabulary_is_refused_and_keeps_the_checkpoint(corpus, tmp_path):
    run = tmp_path / "run"
    assert train_command(run, *tiny_overrides("lstm"), f"data.path={corpus}").returncode == 0
    last = run / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    done = train_command(run, *tiny_overrides("lstm"), f"data.path={corpus}", "model.hidden_size=24", "ckpt_path=last")
    assert_one_line_error(done, "different model", "hidden_size")
    other = tmp_path / "other.txt"
    other.write_text(make_text() + "~#")
    done = train_command(run, *tiny_overrides("lstm"), f"data.path={other}", "ckpt_path=last")
    assert_one_line_error(done, "different vocabulary")
    assert last.read_bytes() == before


def test_divergence_stops_with_the_step_and_never_checkpoints_bad_weights(corpus, tmp_path):
    run = tmp_path / "run"
    done = train_command(
        run,
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "optimizer.lr=1e30",
        "scheduler.warmup_steps=0",
        "trainer.gradient_clip_val=null",
        "callbacks.model_checkpoint.every_n_train_steps=1",
    )
    assert_one_line_error(done, "diverged", "at step")
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        weights = torch.load(ckpt, weights_only=True)["state_dict"].values()
        assert all(torch.isfinite(v).all() for v in weights if v.is_floating_point()), ckpt


class Exploit:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_crafted_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    Exploit.marker = str(marker)
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Exploit()}}, evil)
    with pytest.raises(CharLMError, match="refused"):
        load_checkpoint(evil)
    assert not marker.exists()
    done = run_command("generate.py", f"ckpt_path={evil}")
    assert_one_line_error(done, "evil.ckpt", "refused")
    assert not marker.exists()
    plain_pickle = tmp_path / "plain.ckpt"
    plain_pickle.write_bytes(pickle.dumps(Exploit()))
    assert_one_line_error(run_command("generate.py", f"ckpt_path={plain_pickle}"))
    assert not marker.exists()


def test_truncated_and_foreign_files_are_not_checkpoints(corpus, tmp_path, trained_run):
    run = trained_run("bigram")
    good = (run / "checkpoints" / "last.ckpt").read_bytes()
    truncated = write(tmp_path / "truncated.ckpt", good[: len(good) // 2])
    assert_one_line_error(run_command("generate.py", f"ckpt_path={truncated}"), "truncated.ckpt", "truncated")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={corpus}"), "corpus.txt")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    assert_one_line_error(run_command("generate.py", f"ckpt_path={foreign}"), "not a charlm checkpoint")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={tmp_path / 'nope.ckpt'}"), "does not exist")
    assert zipfile.is_zipfile(run / "checkpoints" / "last.ckpt")


def test_bad_generation_options_and_prompts_are_refused(trained_run):
    run = trained_run("bigram")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={run}", "prompt=KING@"), "'@'", "vocabulary")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={run}", "temperature=-1"), "temperature")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={run}", "top_k=0"), "top_k=0")
    assert_one_line_error(run_command("generate.py", f"ckpt_path={run}", "top_p=1.5"), "(0, 1]")
