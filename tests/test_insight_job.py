"""charlm-inspect: the page it writes (bpc as charlm-evaluate's, every view, nothing fetched), and its errors."""

from __future__ import annotations

import base64
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from charlm.errors import CharLMError
from charlm.insight.browser import find_browser, screenshot

from conftest import ROOT, make_text, run_script

CKPTS = ROOT / "tests" / "fixtures" / "checkpoints"


def play(n_chars: int, seed: int) -> str:
    """A play-shaped text in the fixture checkpoints' vocabulary (which has no J or U)."""
    return make_text(n_chars, seed).replace("JULIET", "KING").replace("U", "O")


def config(name: str, **values) -> DictConfig:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(name)
    with open_dict(cfg):
        for key, value in values.items():
            cfg[key] = value
    return cfg


def inspect(tmp_path: Path, **values) -> Path:
    from charlm.jobs.inspect import run

    out = tmp_path / "page.html"
    run(config("inspect", output=str(out), **values))
    return out


class Page(HTMLParser):
    """The elements (by id), every src/href and the embedded data of a page."""

    def __init__(self, html: str):
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.data: dict = {}
        self._in_data = False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        self.links += [attrs[k] for k in ("src", "href", "action") if attrs.get(k)]
        self._in_data = attrs.get("id") == "data"

    def handle_data(self, data):
        if self._in_data:
            self.data = json.loads(data)
            self._in_data = False


def page_bits(page: Page) -> np.ndarray:
    return np.frombuffer(base64.b64decode(page.data["surprise"]["bits"]), dtype="<f4")


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "play.txt"
    path.write_text(play(3000, seed=7), encoding="utf-8")
    return path


@pytest.mark.parametrize("model", ["lstm", "transformer"])
@pytest.mark.parametrize("context", ["windows", "stream"])
def test_the_page_bpc_is_charlm_evaluate_bpc_on_the_same_text(tmp_path, text_file, model, context, capsys):
    from charlm.jobs.evaluate import run as evaluate

    ckpt = str(CKPTS / f"{model}.ckpt")
    out = inspect(tmp_path, ckpt_path=ckpt, text_file=str(text_file), context=context)
    assert capsys.readouterr().out == f"{out}\n"  # the path, and nothing else
    page = Page(out.read_text(encoding="utf-8"))
    bits = page_bits(page)
    scored = bits[np.isfinite(bits)]
    result = evaluate(config("evaluate", ckpt_path=ckpt, text_file=str(text_file), context=context))
    assert len(scored) == result["chars"]
    assert float(scored.astype(np.float64).mean()) == pytest.approx(result["bpc"], abs=1e-3)
    assert page.data["surprise"]["bpc"] == pytest.approx(result["bpc"], abs=1e-3)


@pytest.mark.parametrize("model, views", [("lstm", {"neurons"}), ("transformer", {"attention"})])
def test_the_page_has_every_view_of_its_model_and_no_external_url(tmp_path, text_file, model, views):
    out = inspect(tmp_path, ckpt_path=str(CKPTS / f"{model}.ckpt"), text_file=str(text_file))
    html = out.read_text(encoding="utf-8")
    page = Page(html)
    assert {"tabs", "text", "tip", "data", "view-surprise", "view-neurons", "view-attention"} <= page.ids
    assert {"surprise-stats", "unit-select", "unit-search", "att-canvas", "att-layer", "att-head"} <= page.ids
    assert page.links == []  # no src or href at all: nothing to fetch
    assert "http://" not in html and "https://" not in html and "url(" not in html
    assert set(page.data) >= {"text", "vocab", "surprise"}
    assert {"neurons", "attention"} & set(page.data) == views
    assert page.data["text"] == text_file.read_text(encoding="utf-8")
    k = page.data["surprise"]["k"]
    top = np.frombuffer(base64.b64decode(page.data["surprise"]["top_ids"]), dtype="<u2")
    assert k == 5 and len(top) == 5 * len(page.data["text"])
    if "neurons" in views:
        neurons = page.data["neurons"]
        assert set(neurons["search"]) == {
            "in_quotes",
            "in_brackets",
            "line_position",
            "line_start",
            "after_speaker",
            "vowel",
        }
        assert neurons["chosen"] == "0:h:0" and neurons["units"][0]["key"] == "0:h:0"
    else:
        att = page.data["attention"]
        weights = np.frombuffer(base64.b64decode(att["weights"]), dtype=np.uint8)
        assert weights.size == att["layers"] * att["heads"] * att["length"] ** 2 and att["length"] == 16


def test_a_20000_character_text_makes_one_page(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(play(20300, seed=1)[:20000], encoding="utf-8")
    out = inspect(tmp_path, ckpt_path=str(CKPTS / "lstm.ckpt"), text_file=str(path), unit="0:3:c")
    page = Page(out.read_text(encoding="utf-8"))
    assert page.data["text"] == path.read_text(encoding="utf-8") and len(page.data["text"]) == 20_000
    assert page.data["neurons"]["chosen"] == "0:c:3"
    assert out.stat().st_size < 3_000_000


def one_line_error(tmp_path: Path, **values) -> str:
    with pytest.raises(CharLMError) as err:
        inspect(tmp_path, **values)
    message = str(err.value)
    assert "\n" not in message
    assert not (tmp_path / "page.html").exists()  # nothing written
    return message


def test_mistakes_give_one_error_line_and_write_nothing(tmp_path, capsys):
    lstm, transformer, s2s = (str(CKPTS / f"{m}.ckpt") for m in ("lstm", "transformer", "seq2seq"))
    assert "LAYER 0..0 and INDEX 0..15" in one_line_error(tmp_path, ckpt_path=lstm, text="KING:\nGood", unit="3:99")
    assert "no recurrent units" in one_line_error(tmp_path, ckpt_path=transformer, text="KING:\nGood", unit="0:1")
    message = one_line_error(tmp_path, ckpt_path=lstm, text="KING: Zed~")
    assert "'Z~'" in message and "unknown=skip" in message
    assert "empty" in one_line_error(tmp_path, ckpt_path=lstm, text="")
    assert "seq2seq" in one_line_error(tmp_path, ckpt_path=s2s, text="good sir") and "attention_png" in str(
        pytest.raises(CharLMError, inspect, tmp_path, ckpt_path=s2s, text="good sir").value
    )
    assert "text=" in one_line_error(tmp_path, ckpt_path=lstm)
    assert "context=" in one_line_error(tmp_path, ckpt_path=lstm, text="KING", context="both")
    assert "unknown=" in one_line_error(tmp_path, ckpt_path=lstm, text="KING", unknown="drop")
    assert capsys.readouterr().out == ""  # nothing on stdout before the checks pass


def test_the_inspect_command_writes_the_page_and_prints_only_its_path(tmp_path, text_file):
    """The real command, in a process of its own, as a user runs it."""
    out = tmp_path / "a page, vol=1.html"
    done = run_script("inspect.py", f"ckpt_path={CKPTS / 'lstm.ckpt'}", f"text_file={text_file}", f"output={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout == f"{out}\n" and [p.name for p in tmp_path.iterdir() if p.suffix == ".html"] == [out.name]
    assert page_bits(Page(out.read_text(encoding="utf-8"))).size > 0


def test_unknown_skip_leaves_unknown_characters_out_and_says_how_many(tmp_path):
    out = inspect(tmp_path, ckpt_path=str(CKPTS / "lstm.ckpt"), text="KING: Zed~ good", unknown="skip")
    page = Page(out.read_text(encoding="utf-8"))
    assert page.data["text"] == "KING: ed good" and "2 characters" in page.data["notes"]["left out"]
    assert math.isnan(page_bits(page)[0])


@pytest.mark.skipif(find_browser() is None, reason="Chromium is not installed (apt-get install chromium)")
def test_every_view_renders_in_headless_chromium(tmp_path, text_file):
    from PIL import Image

    for model, view in (("lstm", "surprise"), ("lstm", "neurons"), ("transformer", "attention")):
        out = inspect(tmp_path, ckpt_path=str(CKPTS / f"{model}.ckpt"), text_file=str(text_file))
        png = screenshot(out, tmp_path / f"{model}-{view}.png", view, size=(900, 700))
        pixels = np.asarray(Image.open(png).convert("RGB"))
        assert pixels.shape[:2] == (700, 900)
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # coloured text, not a blank page
