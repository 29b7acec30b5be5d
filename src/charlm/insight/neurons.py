"""Neurons: what single units of a recurrent net track, and a search for units that follow simple properties
of the text (Karpathy, Johnson and Fei-Fei, 2015, "Visualizing and Understanding Recurrent Networks").

Activations are the state after reading each character: hidden h (and cell c for an LSTM), per layer. A
property is a number per character computed from the characters alone, aligned the same way (its value once
that character has been read), so a unit that tracks it correlates with it. See `text_properties`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from charlm.errors import CharLMError
from charlm.sampling import eval_mode
from charlm.vocab import Vocab

TRACE_CHUNK = 2048  # characters traced per call; the state is carried between them
VOWELS = set("aeiouAEIOU")
OPENING, CLOSING = "([{", ")]}"
SPEAKER = re.compile(r"^[A-Z][A-Za-z' .-]{0,40}:$")  # "ROMEO:", "First Citizen:" on a line of its own

PROPERTY_DOCS = {
    "in_quotes": 'inside a double-quoted span: 1 from an opening " up to (not including) its closing "',
    "in_brackets": "inside (), [] or {}: 1 from an opening bracket while any is open (its closing one excluded)",
    "line_position": "the character's column: 0 for the first character of a line, counting up to the newline",
    "line_start": "1 for the first character of each line, else 0",
    "after_speaker": 'on the line that follows a speaker\'s name line ("ROMEO:" alone on a line), else 0',
    "vowel": "1 for a vowel letter (aeiou), 0 for any other letter; not defined (left out) for non-letters",
}


@dataclass(frozen=True)
class Unit:
    """One unit of a recurrent net: its layer (from 0), its state ('h' hidden or 'c' cell) and index."""

    layer: int
    state: str
    index: int

    def __str__(self) -> str:
        return f"{self.layer}:{self.index}" + ("" if self.state == "h" else " (cell)")

    @property
    def key(self) -> str:
        return f"{self.layer}:{self.state}:{self.index}"


@dataclass
class Activations:
    """Every unit's activation after each character: values[layer][state] is (n, H)."""

    text: str
    values: dict[tuple[int, str], np.ndarray]

    @property
    def layers(self) -> int:
        return 1 + max(layer for layer, _ in self.values)

    def states(self) -> list[str]:
        return sorted({s for _, s in self.values}, key="hc".index)

    def of(self, unit: Unit) -> np.ndarray:
        """(n,) activations of one unit."""
        return self.values[(unit.layer, unit.state)][:, unit.index]

    def units(self) -> list[Unit]:
        return [Unit(layer, state, i) for (layer, state), v in self.values.items() for i in range(v.shape[1])]


def has_units(net: torch.nn.Module) -> bool:
    """Whether `net` has recurrent units to look at (RNN, LSTM, GRU language models)."""
    return callable(getattr(net, "trace", None))


def parse_unit(spec: str, acts: Activations) -> Unit:
    """`LAYER:INDEX` (a hidden unit) or `LAYER:INDEX:c` (an LSTM cell unit), checked against the net."""
    parts = str(spec).split(":")
    state = parts[2] if len(parts) == 3 else "h"
    layers, width = acts.layers, next(iter(acts.values.values())).shape[1]
    valid = f"LAYER:INDEX with LAYER 0..{layers - 1} and INDEX 0..{width - 1}"
    if "c" in acts.states():
        valid += " (LAYER:INDEX:c for the cell state)"
    try:
        unit = Unit(int(parts[0]), state, int(parts[1]))
        if len(parts) not in (2, 3) or (unit.layer, unit.state) not in acts.values or not 0 <= unit.index < width:
            raise ValueError
    except (ValueError, IndexError):
        raise CharLMError(f"unit={spec!r} is not a unit of this net; give {valid}") from None
    return unit


@torch.no_grad()
def activations(net: torch.nn.Module, vocab: Vocab, text: str, device: str | torch.device | None = None) -> Activations:
    """The states of every layer after each character of `text`, the text read as one sequence."""
    if not has_units(net):
        raise CharLMError(f"{type(net).__name__} has no recurrent units; the neuron view is for rnn, lstm and gru")
    if not text:
        raise CharLMError("the text is empty; nothing to read")
    ids = vocab.encode(text)
    device = device or next(net.parameters()).device
    hidden: list[list[np.ndarray]] = []
    cell: list[list[np.ndarray]] = []
    state = None
    with eval_mode(net):
        for start in range(0, len(ids), TRACE_CHUNK):
            hs, cs, state = net.trace(ids[start : start + TRACE_CHUNK].to(device)[None], state)  # per layer (1, T, H)
            for layer, (h, c) in enumerate(zip(hs, cs, strict=True)):
                if len(hidden) <= layer:
                    hidden.append([])
                    cell.append([])
                hidden[layer].append(h[0].float().cpu().numpy())
                if c is not None:
                    cell[layer].append(c[0].float().cpu().numpy())
    values = {(layer, "h"): np.concatenate(h) for layer, h in enumerate(hidden)}
    values.update({(layer, "c"): np.concatenate(c) for layer, c in enumerate(cell) if c})
    return Activations(text, values)


# ---- properties of the text -----------------------------------------------------------------


def text_properties(text: str) -> dict[str, np.ndarray]:
    """Each property of PROPERTY_DOCS as a float array (n,); NaN where a property is not defined."""
    n = len(text)
    quotes, brackets = np.zeros(n), np.zeros(n)
    column, line_start, after_speaker, vowel = np.zeros(n), np.zeros(n), np.zeros(n), np.full(n, np.nan)
    inside, depth, col = False, 0, 0
    lines = text.split("\n")
    speaker_next = [False] + [bool(SPEAKER.match(line.strip())) for line in lines[:-1]]  # line i follows a name
    line = 0
    for t, ch in enumerate(text):
        if ch == '"':
            inside = not inside
        elif ch in OPENING:
            depth += 1
        elif ch in CLOSING:
            depth = max(0, depth - 1)
        quotes[t] = inside
        brackets[t] = depth > 0
        column[t], line_start[t] = col, col == 0
        after_speaker[t] = speaker_next[line]
        if ch.isalpha():
            vowel[t] = ch in VOWELS
        if ch == "\n":
            col, line = 0, line + 1
        else:
            col += 1
    return {
        "in_quotes": quotes,
        "in_brackets": brackets,
        "line_position": column,
        "line_start": line_start,
        "after_speaker": after_speaker,
        "vowel": vowel,
    }


# ---- the search -----------------------------------------------------------------------------


def correlations(values: np.ndarray, prop: np.ndarray) -> np.ndarray:
    """Pearson r of every column of values (n, H) with prop (n,) over the characters where prop is defined;
    NaN for a constant property, 0 for a constant unit."""
    keep = np.isfinite(prop)
    x, y = values[keep].astype(np.float64), prop[keep]
    if len(y) < 2 or y.std() == 0:
        return np.full(values.shape[1], np.nan)
    x = x - x.mean(axis=0)
    y = y - y.mean()
    norm = np.sqrt((x * x).sum(axis=0)) * np.sqrt((y * y).sum())
    return np.divide(x.T @ y, norm, out=np.zeros(values.shape[1]), where=norm > 0)


@dataclass
class Finding:
    unit: Unit
    r: float


def unit_search(acts: Activations, top: int = 5) -> dict[str, list[Finding]]:
    """For each property, the `top` units whose activation correlates most strongly (|r|) with it, best first;
    an empty list where the text does not vary in that property (e.g. a text with no quotes)."""
    props = text_properties(acts.text)
    found: dict[str, list[Finding]] = {}
    for name, prop in props.items():
        ranked: list[Finding] = []
        for (layer, state), values in acts.values.items():
            r = correlations(values, prop)
            ranked += [Finding(Unit(layer, state, i), float(r[i])) for i in range(len(r)) if np.isfinite(r[i])]
        found[name] = sorted(ranked, key=lambda f: -abs(f.r))[:top]
    return found
