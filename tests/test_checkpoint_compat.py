"""Checkpoints written by earlier versions of charlm keep loading and generate the same text.

The fixtures are tiny LSTM, transformer and seq2seq checkpoints trained for six steps, with the
text the generate command printed from each when they were written (expected.json).
"""

import json
from pathlib import Path

import pytest

from charlm.loading import load_model
from charlm.sampling import SamplingOptions, generate
from charlm.seq2seq.decoding import translate

FIXTURES = Path(__file__).parent / "fixtures" / "checkpoints"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_an_old_language_model_checkpoint_generates_the_same_text(name: str) -> None:
    model = load_model(str(FIXTURES / f"{name}.ckpt"))
    text = generate(model.net, model.vocab, "ROMEO:", max_new_tokens=40, seed=0)[0]
    assert text + "\n" == EXPECTED[name]["text"]


def test_an_old_seq2seq_checkpoint_decodes_the_same_text() -> None:
    model = load_model(str(FIXTURES / "seq2seq.ckpt"))
    [text] = translate(model.net, model.vocab, ["good sir"], max_new_tokens=40, opts=SamplingOptions(greedy=True))
    assert text + "\n" == EXPECTED["seq2seq"]["text"]
