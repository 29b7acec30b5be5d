"""What training and generation show of a model's insides: TensorBoard images and projector, seq2seq alignment PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import open_dict
from PIL import Image

from charlm.errors import CharLMError
from charlm.insight.attention import alignment
from charlm.insight.figures import alignment_figure
from charlm.loading import load_model

from conftest import ROOT, tiny_overrides, train_in_process

CKPTS = ROOT / "tests" / "fixtures" / "checkpoints"


def generate_config(**values):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate")
    with open_dict(cfg):
        cfg.update(values)
    return cfg


def test_seq2seq_alignment_png_has_one_row_per_output_character(tmp_path, capsys):
    from charlm.jobs.generate import run

    png = tmp_path / "align.png"
    outputs = run(
        generate_config(ckpt_path=str(CKPTS / "seq2seq.ckpt"), input="good sir", greedy=True, attention_png=str(png))
    )
    assert capsys.readouterr().out == f"{outputs[0]}\n"
    assert Image.open(png).size[0] > 100
    model = load_model(str(CKPTS / "seq2seq.ckpt"))
    al = alignment(model.net, model.vocab, "good sir", outputs[0])
    image = alignment_figure(al).axes[0].images[0].get_array()
    assert image.shape == (len(outputs[0]), len("good sir") + 1)  # rows: output characters; columns: source + <eos>
    np.testing.assert_allclose(al.weights.sum(axis=1), 1.0, atol=1e-5)


def test_attention_png_on_a_language_model_is_one_error_line(tmp_path):
    from charlm.jobs.generate import run

    with pytest.raises(CharLMError, match="seq2seq"):
        run(generate_config(ckpt_path=str(CKPTS / "lstm.ckpt"), prompt="KING", attention_png=str(tmp_path / "a.png")))


def tensorboard_tags(run_dir: Path) -> tuple[set[str], list[Path]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    images: set[str] = set()
    for events in run_dir.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events), size_guidance={"images": 0})
        acc.Reload()
        images |= set(acc.Tags()["images"])
    return images, list(run_dir.rglob("projector_config.pbtxt"))


def test_training_logs_surprise_images_and_the_embedding_projector(tmp_path, corpus):
    run_dir = tmp_path / "run"
    train_in_process(run_dir, *tiny_overrides("lstm"), f"data.path={corpus}", "logger=tensorboard")
    images, projector = tensorboard_tags(run_dir)
    assert "insight/surprise" in images and projector
    labels = next(run_dir.rglob("metadata.tsv")).read_text(encoding="utf-8").splitlines()
    assert "\\n" in labels and "<space>" in labels


def test_both_can_be_turned_off(tmp_path, corpus):
    run_dir = tmp_path / "run"
    off = ["callbacks.surprise_image.enabled=false", "callbacks.embedding_projector.enabled=false"]
    train_in_process(run_dir, *tiny_overrides("lstm"), f"data.path={corpus}", "logger=tensorboard", *off)
    images, projector = tensorboard_tags(run_dir)
    assert "insight/surprise" not in images and not projector
