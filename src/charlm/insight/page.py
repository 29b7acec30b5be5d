"""The inspection page: one self-contained HTML file with every view the model supports.

Everything is inline (CSS, script, data); the page makes no network request, so it opens from a file in a
browser offline. The numbers travel as base64 typed arrays and the script builds the text's spans, which
keeps a 20,000-character page small and quick: per-character bits as float32 (exact, so the page's mean is
the bpc it prints), top-5 predictions as uint16 ids with uint8 probabilities, unit activations as int8 scaled
per unit, attention weights as uint8.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import torch

from charlm.errors import CharLMError
from charlm.insight.attention import attention_maps, has_attention
from charlm.insight.neurons import PROPERTY_DOCS, Activations, Finding, Unit, activations, has_units, parse_unit
from charlm.insight.neurons import unit_search as search_units
from charlm.insight.surprise import Surprise, surprise
from charlm.vocab import Vocab

VIEWS = ("surprise", "neurons", "attention")
PLACEHOLDER = re.compile(r"/\*STYLE\*/|/\*SCRIPT\*/|__TITLE__|__DATA__")


def b64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


@dataclass
class PageData:
    """What the page shows; the views a model lacks stay None."""

    title: str
    surprise: Surprise
    activations: Activations | None = None
    unit: Unit | None = None
    search: dict[str, list[Finding]] | None = None
    attention: np.ndarray | None = None  # (L, nh, W, W)
    attention_start: int = 0
    notes: dict[str, str] = field(default_factory=dict)  # extra header lines (checkpoint, reproduce command)


def surprise_json(s: Surprise) -> dict[str, Any]:
    return {
        "bits": b64(s.bits.astype("<f4")),
        "top_ids": b64(np.maximum(s.top_ids, 0).astype("<u2")),
        "top_probs": b64(np.round(s.top_probs * 255).astype(np.uint8)),
        "k": int(s.top_ids.shape[1]),
        "bpc": s.bpc,
        "chars": s.chars,
        "context": s.context,
    }


def neurons_json(acts: Activations, chosen: Unit, search: dict[str, list[Finding]]) -> dict[str, Any]:
    """The chosen unit and every unit the search ranks, each as int8 scaled by its largest |activation|."""
    units = [chosen] + [f.unit for found in search.values() for f in found]
    shown = list(dict.fromkeys(units))
    payload = []
    for unit in shown:
        values = acts.of(unit)
        scale = float(max(np.abs(values).max(), 1e-6))
        payload.append(
            {
                "key": unit.key,
                "label": str(unit),
                "scale": scale,
                "values": b64(np.round(values / scale * 127).astype(np.int8)),
            }
        )
    table = {
        name: [{"key": f.unit.key, "label": str(f.unit), "r": round(f.r, 4)} for f in found]
        for name, found in search.items()
    }
    return {
        "units": payload,
        "chosen": chosen.key,
        "search": table,
        "docs": PROPERTY_DOCS,
        "layers": acts.layers,
        "width": next(iter(acts.values.values())).shape[1],
    }


def attention_json(maps: np.ndarray, start: int) -> dict[str, Any]:
    layers, heads, width, _ = maps.shape
    return {
        "layers": layers,
        "heads": heads,
        "start": start,
        "length": width,
        "weights": b64(np.round(np.clip(maps, 0, 1) * 255).astype(np.uint8)),
    }


def script_json(data: dict[str, Any]) -> str:
    """JSON safe inside a <script> element: no `</script>` or `<!--` can appear in it."""
    return json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace("\u2028", "\\u2028")


def render(data: PageData) -> str:
    """The page's HTML for already computed views."""
    payload: dict[str, Any] = {
        "text": data.surprise.text,
        "vocab": data.surprise.vocab.chars,
        "surprise": surprise_json(data.surprise),
        "notes": data.notes,
    }
    if data.activations is not None and data.search is not None and data.unit is not None:
        payload["neurons"] = neurons_json(data.activations, data.unit, data.search)
    if data.attention is not None:
        payload["attention"] = attention_json(data.attention, data.attention_start)
    assets = resources.files("charlm.insight") / "assets"
    fills = {
        "/*STYLE*/": (assets / "page.css").read_text(encoding="utf-8"),
        "/*SCRIPT*/": (assets / "page.js").read_text(encoding="utf-8"),
        "__TITLE__": html.escape(data.title),
        "__DATA__": script_json(payload),
    }
    template = (assets / "page.html").read_text(encoding="utf-8")
    return PLACEHOLDER.sub(lambda m: fills[m.group(0)], template)  # one pass: no fill is read as a placeholder


def page(
    net: torch.nn.Module,
    vocab: Vocab,
    text: str,
    *,
    title: str = "charlm: inside the model",
    context: str = "windows",
    block_size: int | None = None,
    stride: int | None = None,
    unit: str | None = None,
    top_units: int = 5,
    attention_start: int = 0,
    attention_length: int = 128,
    notes: dict[str, str] | None = None,
    device: str | torch.device | None = None,
) -> str:
    """The whole page for `text` under a language model: surprise always, neurons for a recurrent net, attention
    for the transformer (over `attention_length` characters from `attention_start`)."""
    if hasattr(net, "encode") and hasattr(net, "decode"):
        raise CharLMError(
            "a seq2seq checkpoint has no surprise, neuron or attention page; "
            "charlm-generate ckpt_path=... input=... attention_png=PATH draws its alignment"
        )
    data = PageData(title, surprise(net, vocab, text, context, block_size, stride, device=device), notes=notes or {})
    if has_units(net):
        data.activations = activations(net, vocab, text, device)
        data.unit = parse_unit(unit, data.activations) if unit else Unit(0, "h", 0)
        data.search = search_units(data.activations, top_units)
    elif unit:
        raise CharLMError(
            f"unit={unit!r}: {type(net).__name__} has no recurrent units (the neuron view is for rnn, lstm, gru)"
        )
    if has_attention(net):
        if not 0 <= attention_start < len(text):
            raise CharLMError(f"attention_start={attention_start} is outside the text (0..{len(text) - 1})")
        length = min(attention_length, net.max_context, len(text) - attention_start)
        if length < 1:
            raise CharLMError(f"attention_length={attention_length} must be >= 1")
        window = text[attention_start : attention_start + length]
        data.attention, data.attention_start = attention_maps(net, vocab, window, device), attention_start
    return render(data)
