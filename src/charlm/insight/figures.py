"""The views as matplotlib figures: for a notebook, a paper, TensorBoard's IMAGES tab and PNG files.

Figures are built on `matplotlib.figure.Figure` with the Agg canvas, never through pyplot, so they need no
display and leave no global state behind (safe inside a training run).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from charlm.insight.attention import Alignment
from charlm.insight.neurons import Activations, Unit
from charlm.insight.surprise import Surprise

SHOWN = {"\n": "↵", " ": "·", "\t": "→"}


def shown(ch: str) -> str:
    """A character as drawn in a cell: whitespace made visible."""
    return SHOWN.get(ch, ch)


def layout(text: str, columns: int) -> list[tuple[int, int]]:
    """(row, column) of each character: rows wrap at `columns` and end after a newline."""
    cells, row, col = [], 0, 0
    for ch in text:
        if col >= columns:
            row, col = row + 1, 0
        cells.append((row, col))
        col += 1
        if ch == "\n":
            row, col = row + 1, 0
    return cells


def char_grid(
    text: str, values: np.ndarray, cmap: str, vmin: float, vmax: float, label: str, title: str, columns: int = 80
) -> Figure:
    """`text` laid out in rows, each character's cell coloured by its value, with a colour bar as the legend."""
    cells = layout(text, columns)
    rows = cells[-1][0] + 1 if cells else 1
    grid = np.full((rows, columns), np.nan)
    for (r, c), v in zip(cells, values, strict=True):
        grid[r, c] = v
    fig = Figure(figsize=(columns * 0.13 + 1.2, rows * 0.22 + 0.9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.01, 0.02, 0.9, 0.88 if rows > 3 else 0.7))
    image = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    for (r, c), ch in zip(cells, text, strict=True):
        ax.text(c, r, shown(ch), ha="center", va="center", fontsize=8, family="DejaVu Sans Mono")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9, loc="left")
    bar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.1, 0.015, 0.75)))
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def surprise_figure(s: Surprise, start: int = 0, length: int = 800, columns: int = 80, vmax: float = 8.0) -> Figure:
    """The text coloured by each character's loss in bits (white: expected, red: a surprise)."""
    end = min(len(s.text), start + length)
    part = s.bits[start:end]
    title = f"surprise: {s.bpc:.3f} bits per character over {s.chars:,} characters (shown: {start}..{end})"
    return char_grid(s.text[start:end], part, "Reds", 0.0, vmax, "-log2 p (bits)", title, columns)


def unit_figure(acts: Activations, unit: Unit, start: int = 0, length: int = 800, columns: int = 80) -> Figure:
    """The text coloured by one unit's activation (blue negative, red positive)."""
    values = acts.of(unit)
    end = min(len(acts.text), start + length)
    bound = float(max(np.abs(values).max(), 1e-6))
    title = f"unit {unit}: activation after each character (shown: {start}..{end})"
    return char_grid(acts.text[start:end], values[start:end], "RdBu_r", -bound, bound, "activation", title, columns)


def heatmap(weights: np.ndarray, rows: list[str], cols: list[str], title: str, xlabel: str, ylabel: str) -> Figure:
    """A weights matrix with a character on every row and column."""
    height, width = weights.shape
    fig = Figure(figsize=(max(4.0, width * 0.2 + 1.8), max(3.0, height * 0.2 + 1.4)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(width), [shown(c) for c in cols], fontsize=7, family="DejaVu Sans Mono")
    ax.set_yticks(range(height), [shown(c) for c in rows], fontsize=7, family="DejaVu Sans Mono")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04).set_label("attention weight", fontsize=8)
    fig.tight_layout()
    return fig


def attention_figure(maps: np.ndarray, text: str, layer: int, head: int) -> Figure:
    """One head's attention over `text`: row t = where position t looks among 0..t."""
    title = f"layer {layer}, head {head}: attention of each position (row) over earlier characters"
    return heatmap(maps[layer, head], list(text), list(text), title, "attended character", "position")


def alignment_figure(al: Alignment) -> Figure:
    """Seq2seq alignment: one row per output character, one column per source character (and <eos>)."""
    cols = [c if len(c) == 1 else "⏎" for c in al.source]
    return heatmap(al.weights, al.output, cols, "alignment: output (rows) over source (columns)", "source", "output")


def to_rgb(fig: Figure) -> np.ndarray:
    """The figure's pixels, (H, W, 3) uint8: what an image logger takes."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_png(fig: Figure, path: str | Path) -> Path:
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
