import pytest
import torch

from charlm import CharLMError, Vocab


def test_vocabulary_is_the_sorted_character_set():
    assert Vocab.from_text("hello world\n").chars == "\n dehlorw"


def test_encode_decode_round_trip_including_non_ascii():
    text = "Ünïcödé — ok?\n"
    vocab = Vocab.from_text(text)
    ids = vocab.encode(text)
    assert ids.dtype == torch.long
    assert vocab.decode(ids) == text


def test_unknown_characters_are_listed_in_one_line_error():
    vocab = Vocab.from_text("abc")
    with pytest.raises(CharLMError) as err:
        vocab.encode("abxzx")
    msg = str(err.value)
    assert "'xz'" in msg and "abc" in msg and "\n" not in msg
