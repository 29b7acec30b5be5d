"""Looking inside a trained character model: what it finds hard (surprise), what its units track (neurons), where
it attends (attention), as arrays, matplotlib figures and one self-contained HTML page.

Each view takes a net and its vocabulary (or a loaded model) and a text, so a notebook uses them as the
`charlm-inspect` command does:

    from charlm.loading import load_model
    from charlm import insight
    model = load_model("outputs/runs/RUN")
    s = insight.surprise(model.net, model.vocab, text)          # per-character bits, top-5 predictions
    insight.surprise_figure(s)                                   # a matplotlib figure
    html = insight.page(model.net, model.vocab, text)            # the whole page, as a string
"""

from charlm.insight.attention import attention_maps
from charlm.insight.figures import alignment_figure, attention_figure, surprise_figure, unit_figure
from charlm.insight.neurons import Activations, activations, text_properties, unit_search
from charlm.insight.page import page
from charlm.insight.surprise import Surprise, surprise

__all__ = [
    "Activations",
    "Surprise",
    "activations",
    "alignment_figure",
    "attention_figure",
    "attention_maps",
    "page",
    "surprise",
    "surprise_figure",
    "text_properties",
    "unit_figure",
    "unit_search",
]
