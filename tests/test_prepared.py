"""Preparing a corpus into an id file: round trips, the cache, batches read from it, and memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from charlm import CharLMError, corpus
from charlm.data import CharDataModule, TrainBatches, Windows, validation_windows
from charlm.prepared import Tokens, id_dtype, prepare
from charlm.vocab import Vocab

from conftest import make_text


def distinct_text(n_distinct: int, length: int, seed: int = 0) -> str:
    """A text with exactly `n_distinct` characters, many of them multi-byte (no surrogates)."""
    codepoints = [c for c in range(32, 0x30000) if not 0xD800 <= c <= 0xDFFF][:n_distinct]
    rng = np.random.default_rng(seed)
    picks = np.concatenate([np.arange(n_distinct), rng.integers(0, n_distinct, length - n_distinct)])
    return "".join(chr(codepoints[i]) for i in picks)


def old_file(path: Path, text: str) -> Path:
    """Write `text` and date the file a minute back, as a corpus that was not just written."""
    path.write_text(text, encoding="utf-8")
    past = time.time() - 60
    os.utime(path, (past, past))
    return path


@pytest.mark.parametrize(("n_distinct", "dtype"), [(60, "uint8"), (300, "uint16"), (70_000, "int32")])
def test_prepared_ids_decode_to_the_text_for_each_dtype(tmp_path, monkeypatch, n_distinct, dtype):
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 997)  # many chunk edges, some inside multi-byte characters
    text = distinct_text(n_distinct, 90_000)
    path = old_file(tmp_path / "t.txt", text)
    prepared = prepare([path], tmp_path / "cache")
    assert prepared.tokens.dtype == np.dtype(dtype) == id_dtype(len(prepared.vocab))
    assert len(prepared.vocab) == n_distinct and len(prepared.tokens) == len(text)
    assert prepared.vocab.decode(prepared.tokens.tensor()) == text
    again = prepare([path], tmp_path / "cache")  # from the cache
    assert again.vocab == prepared.vocab and torch.equal(again.tokens.tensor(), prepared.tokens.tensor())


def test_several_files_join_with_a_newline_between_them(tmp_path):
    (tmp_path / "books").mkdir()
    old_file(tmp_path / "books" / "a.txt", "first book")
    old_file(tmp_path / "books" / "b.txt", "second book\n")
    prepared = prepare(corpus.text_files(tmp_path / "books"), tmp_path / "cache")
    assert prepared.vocab.decode(prepared.tokens.tensor()) == "first book\nsecond book\n"


def test_cache_is_rebuilt_when_the_text_changes_even_at_the_same_size_and_time(tmp_path):
    path = old_file(tmp_path / "t.txt", "abcabc" * 100)
    first = prepare([path], tmp_path / "cache")
    stamp = path.stat().st_mtime_ns
    path.write_text("abcabd" * 100, encoding="utf-8")
    os.utime(path, ns=(stamp, stamp))  # same size, same time: only the content says it changed
    second = prepare([path], tmp_path / "cache")
    assert second.vocab.chars == "abcd" and second.tokens.tensor()[:6].tolist() == [0, 1, 2, 0, 1, 3]
    assert first.tokens.path != second.tokens.path


def test_a_just_written_file_is_hashed_again_so_a_quick_rewrite_is_seen(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcabc" * 100, encoding="utf-8")
    prepare([path], tmp_path / "cache")
    path.write_text("xyzxyz" * 100, encoding="utf-8")  # maybe within the same clock tick
    assert prepare([path], tmp_path / "cache").vocab.chars == "xyz"


def test_truncated_or_damaged_prepared_files_are_rebuilt(tmp_path):
    path = old_file(tmp_path / "t.txt", make_text(5000))
    prepared = prepare([path], tmp_path / "cache")
    ids_path, expected = prepared.tokens.path, prepared.tokens.tensor()
    with ids_path.open("r+b") as fh:
        fh.truncate(1000)
    assert torch.equal(prepare([path], tmp_path / "cache").tokens.tensor(), expected)
    ids_path.with_suffix(".json").write_text("{not json")
    assert torch.equal(prepare([path], tmp_path / "cache").tokens.tensor(), expected)
    assert json.loads(ids_path.with_suffix(".json").read_text())["length"] == 5000


def test_a_given_vocabulary_refuses_or_skips_unknown_characters(tmp_path):
    path = old_file(tmp_path / "t.txt", "abc{ab}c€")
    vocab = Vocab("abc")
    with pytest.raises(CharLMError, match=r"not in the model's vocabulary: '\{\}€' \(3 occurrences\)"):
        prepare([path], tmp_path / "cache", vocab=vocab)
    skipped = prepare([path], tmp_path / "cache", vocab=vocab, unknown="skip")
    assert skipped.skipped == 3 and vocab.decode(skipped.tokens.tensor()) == "abcabc"


def test_tokens_slice_and_pickle_without_copying_the_file(tmp_path):
    import pickle

    path = tmp_path / "ids"
    np.arange(100, dtype=np.uint8).tofile(path)
    part = Tokens(path, "uint8")[10:20][2:5]
    assert len(part) == 3 and part.tensor().tolist() == [12, 13, 14]
    assert len(pickle.dumps(part)) < 400
    assert pickle.loads(pickle.dumps(part)).rows(torch.tensor([0, 1]), 2).tolist() == [[12, 13], [13, 14]]


@pytest.mark.parametrize("sampling", ["random", "stream"])
def test_batches_read_from_the_file_equal_those_from_an_in_memory_tensor(tmp_path, sampling):
    path = old_file(tmp_path / "t.txt", make_text(20_000))
    tokens = prepare([path], tmp_path / "cache").tokens
    kwargs = dict(block_size=16, batch_size=4, sampling=sampling, seed=7, epoch_batches=50, rank=1, world_size=2)
    mapped, in_memory = TrainBatches(tokens, **kwargs), TrainBatches(tokens.tensor(), **kwargs)
    for index in (0, 1, 17, 49):
        a, b = mapped.batch(index), in_memory.batch(index)
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"]) and a["x"].dtype == torch.long


def test_windows_score_every_character_once_and_a_subset_is_evenly_spaced(tmp_path):
    ids = torch.arange(1001) % 50
    every = Windows(ids, 16)
    ys = torch.cat([every[i][1] for i in range(len(every))])
    assert torch.equal(ys[ys != -100], ids[1:]) and every.chars() == 1000
    subset = validation_windows(ids, 16, max_chars=160)
    assert len(subset) == 10 and subset.keep[0] == 0 and subset.keep[-1] == every.total - 1
    assert np.all(np.diff(subset.keep) >= 6)  # spread over the whole split, not its start
    assert validation_windows(ids, 16, max_chars=10_000).keep.tolist() == list(range(every.total))


def test_test_fraction_takes_the_end_and_leaves_train_and_val_as_before(tmp_path):
    path = old_file(tmp_path / "t.txt", make_text(10_000))
    plain = CharDataModule(path=str(path), cache_dir=str(tmp_path / "c"), block_size=16, batch_size=4)
    split = CharDataModule(
        path=str(path), cache_dir=str(tmp_path / "c"), block_size=16, batch_size=4, test_fraction=0.05
    )
    plain.setup(), split.setup()
    assert len(plain.splits["train"]) == 9000 and len(plain.splits["val"]) == 1000 and len(plain.splits["test"]) == 0
    assert [len(split.splits[k]) for k in ("train", "val", "test")] == [8500, 1000, 500]
    with pytest.raises(CharLMError, match=r"data.test_fraction=0.9 must be at least 0"):
        CharDataModule(path=str(path), test_fraction=0.9)


PEAK_SCRIPT = """
import resource, sys, time
from pathlib import Path
from charlm.prepared import prepare
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
prepared = prepare([Path(sys.argv[1])], Path(sys.argv[2]))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(len(prepared.tokens), (after - before) // 1024)
"""


@pytest.mark.slow
def test_preparing_a_200_mb_corpus_keeps_memory_bounded(tmp_path):
    piece = make_text(1 << 20).encode()
    big = tmp_path / "big.txt"
    with big.open("wb") as fh:
        for _ in range(200):
            fh.write(piece)
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(big), str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    chars, grew_mb = int(out[0]), int(out[1])
    assert chars == 200 << 20
    assert grew_mb < 120, f"preparing 200 MB raised peak RSS by {grew_mb} MB"
