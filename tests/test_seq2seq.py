"""The encoder-decoder: its two decoding paths agree, padding is invisible, it learns, and the
pairs data, training and generation commands work end to end."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlm.errors import CharLMError
from charlm.loss import IGNORE, summed_loss
from charlm.seq2seq.data import PairsDataModule, PairVocab, collate, demo_pairs, encode_pairs, read_pairs
from charlm.seq2seq.decoding import beam_search, decode_ids, translate
from charlm.seq2seq.model import Seq2Seq

from conftest import run_command, train_command

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets

ALPHABET = "abcd"


def random_words(n: int, seed: int, max_len: int = 5) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, max_len))) for _ in range(n)]


def reverse_batch(words: list[str], vocab: PairVocab) -> dict[str, torch.Tensor]:
    return collate(encode_pairs([(w, w[::-1]) for w in words], vocab))


def tiny_net(**kwargs) -> Seq2Seq:
    torch.manual_seed(0)
    settings = {"hidden_size": 16, "embedding_dim": 8, **kwargs}
    return Seq2Seq(len(PairVocab(ALPHABET)), **settings).eval()


VARIANTS = [
    {"cell": "gru", "attention": "none"},
    {"cell": "lstm", "attention": "dot", "bidirectional": True, "num_layers": 2},
    {"cell": "rnn", "attention": "additive"},
    {"cell": "lstm", "attention": "additive", "bidirectional": True},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_teacher_forced_logits_equal_step_by_step_decoding_of_the_true_characters(variant):
    net, vocab = tiny_net(**variant), PairVocab(ALPHABET)
    batch = reverse_batch(["abc", "d", "abcdab"], vocab)
    with torch.no_grad():
        whole = net(batch["x"], batch["x_len"], batch["dec_in"])  # (B, T, V)
        memory, state = net.encode(batch["x"], batch["x_len"])
        steps = []
        for t in range(batch["dec_in"].size(1)):
            logits, state = net.decode(batch["dec_in"][:, t : t + 1], state, memory)
            steps.append(logits)
    torch.testing.assert_close(whole, torch.cat(steps, dim=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(str(x) for x in v.values()))
def test_padding_does_not_change_the_loss_of_a_pair(variant):
    net, vocab = tiny_net(**variant), PairVocab(ALPHABET)
    words = ["ab", "abcdabcd", "c"]
    with torch.no_grad():
        together = reverse_batch(words, vocab)
        logits = net(together["x"], together["x_len"], together["dec_in"])
        for b, word in enumerate(words):
            alone = reverse_batch([word], vocab)
            single = net(alone["x"], alone["x_len"], alone["dec_in"])
            loss_alone, n_alone = summed_loss(single, alone["y"])
            loss_padded, n_padded = summed_loss(logits[b : b + 1], together["y"][b : b + 1])
            assert n_alone == n_padded == len(word) + 1
            torch.testing.assert_close(loss_padded, loss_alone, rtol=1e-5, atol=1e-5)


def test_learns_to_reverse_short_strings_in_seconds():
    torch.manual_seed(0)
    vocab = PairVocab(ALPHABET)
    net = Seq2Seq(len(vocab), cell="gru", hidden_size=64, embedding_dim=16, attention="dot")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(300):
        batch = reverse_batch(random_words(64, seed=step), vocab)
        loss_sum, count = summed_loss(net(batch["x"], batch["x_len"], batch["dec_in"]), batch["y"])
        optimizer.zero_grad()
        (loss_sum / count).backward()
        optimizer.step()
    held_out = random_words(100, seed=10_000)
    outputs = translate(net, vocab, held_out, max_new_tokens=12)
    exact = sum(o == w[::-1] for o, w in zip(outputs, held_out, strict=True)) / len(held_out)
    assert exact >= 0.95, list(zip(held_out, outputs, strict=True))[:10]


def test_beam_search_of_width_one_is_greedy_decoding():
    net, vocab = tiny_net(cell="lstm", attention="dot"), PairVocab(ALPHABET)
    words = random_words(12, seed=3, max_len=8)
    batch = collate(encode_pairs([(w, "") for w in words], vocab))
    greedy = decode_ids(net, batch["x"], batch["x_len"], max_new_tokens=15)
    for b in range(len(words)):
        src = batch["x"][b, : batch["x_len"][b]]
        assert beam_search(net, src, 15, beam_size=1) == greedy[b]
    wide = translate(net, vocab, words, max_new_tokens=15, beam_size=4)
    assert len(wide) == len(words) and all(set(w) <= set(ALPHABET) for w in wide)


def test_a_net_in_train_mode_is_back_in_train_mode_when_decoding_fails_midway(monkeypatch):
    net, vocab = tiny_net(cell="gru", attention="dot"), PairVocab(ALPHABET)
    net.train()
    batch = collate(encode_pairs([("abc", ""), ("d", "")], vocab))
    decode, calls = net.decode, []

    def failing_decode(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("decoder failed")
        return decode(*args)

    monkeypatch.setattr(net, "decode", failing_decode)
    with pytest.raises(RuntimeError, match="decoder failed"):
        decode_ids(net, batch["x"], batch["x_len"], max_new_tokens=10)
    assert net.training and all(m.training for m in net.modules())
    calls.clear()
    with pytest.raises(RuntimeError, match="decoder failed"):
        beam_search(net, batch["x"][0, :4], 10, beam_size=2)
    assert net.training and all(m.training for m in net.modules())


def test_free_running_training_feeds_own_predictions_and_the_schedule_lowers_the_ratio():
    net, vocab = tiny_net(teacher_forcing_final=0.0, teacher_forcing_steps=100), PairVocab(ALPHABET)
    assert [net.teacher_forcing(s) for s in (0, 50, 100, 500)] == [1.0, 0.5, 0.0, 0.0]
    batch = reverse_batch(["abcd", "dcab"], vocab)
    forced = net(batch["x"], batch["x_len"], batch["dec_in"], teacher_forcing=1.0)
    free = net(batch["x"], batch["x_len"], batch["dec_in"], teacher_forcing=0.0)
    assert free.shape == forced.shape
    torch.testing.assert_close(free[:, 0], forced[:, 0])  # the first step always reads <bos>
    assert not torch.allclose(free, forced)


def test_vocabulary_has_the_specials_first_and_batches_mask_their_padding():
    vocab = PairVocab.from_pairs([("ba", "c"), ("", "a")])
    assert len(vocab) == 6 and (vocab.PAD, vocab.BOS, vocab.EOS) == (0, 1, 2)
    assert vocab.encode("abc").tolist() == [3, 4, 5]
    assert vocab.decode([1, 5, 3, 2, 4]) == "ca"
    batch = collate(encode_pairs([("ba", "c"), ("", "a")], vocab))
    assert batch["x"].tolist() == [[4, 3, 2], [2, 0, 0]] and batch["x_len"].tolist() == [3, 1]
    assert batch["dec_in"].tolist() == [[1, 5], [1, 3]]
    assert batch["y"].tolist() == [[5, 2], [3, 2]]
    longer = collate(encode_pairs([("a", "abc"), ("b", "")], vocab))
    assert longer["y"][1].tolist() == [2, IGNORE, IGNORE, IGNORE]
    with pytest.raises(CharLMError, match="not in the vocabulary"):
        vocab.encode("x")


# ---------------------------------------------------------------------------------------- the data


def one_line_error(fn, *args) -> str:
    with pytest.raises(CharLMError) as info:
        fn(*args)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_pairs_file_errors_name_the_file_and_line(tmp_path: Path):
    no_sep = tmp_path / "no_sep.tsv"
    no_sep.write_text("a\tb\nc\td\nno separator here\n", encoding="utf-8")
    message = one_line_error(read_pairs, no_sep)
    assert str(no_sep) in message and "line 3" in message and "separator" in message

    empty = tmp_path / "empty.tsv"
    empty.write_text("", encoding="utf-8")
    message = one_line_error(read_pairs, empty)
    assert str(empty) in message and "empty" in message and "line" in message

    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"a\tb\nc\td\xff\n")
    message = one_line_error(read_pairs, bad)
    assert str(bad) in message and "line 2" in message and "byte offset 7" in message

    assert str(tmp_path / "nope.tsv") in one_line_error(read_pairs, tmp_path / "nope.tsv")


def test_pairs_file_formats_and_split(tmp_path: Path):
    tsv = tmp_path / "p.tsv"
    tsv.write_text("one\ttwo\tthree\n\r\nx\t\n", encoding="utf-8")
    assert read_pairs(tsv) == [("one", "two\tthree"), ("x", "")]
    semi = tmp_path / "p.txt"
    semi.write_text("a;b\n", encoding="utf-8")
    assert read_pairs(semi, ";") == [("a", "b")]
    table = tmp_path / "p.csv"
    table.write_text('source,target\n"a, b",c\nd,"e\nf"\n', encoding="utf-8")
    assert read_pairs(table) == [("a, b", "c"), ("d", "e\nf")]

    lines = tmp_path / "ten.tsv"
    lines.write_text("".join(f"{w}\t{w[::-1]}\n" for w in random_words(10, seed=1)), encoding="utf-8")
    data = PairsDataModule(path=str(lines), batch_size=4)
    data.setup()
    assert len(data.train_pairs) == 9 and len(data.val_pairs) == 1
    batch = next(iter(data.train_dataloader()))
    assert batch["x"].shape[0] == 4 and batch["y"].shape == batch["dec_in"].shape


class FakeTrainer:
    """What a data module reads from its Trainer when it builds the loaders."""

    def __init__(self, world_size: int, global_rank: int = 0):
        self.world_size, self.global_rank = world_size, global_rank
        self.global_step, self.accumulate_grad_batches = 0, 1


def test_fewer_pairs_than_a_batch_on_every_rank_is_refused_in_one_line_when_the_loader_is_built(tmp_path: Path):
    lines = tmp_path / "ten.tsv"
    lines.write_text("".join(f"{w}\t{w[::-1]}\n" for w in random_words(10, seed=1)), encoding="utf-8")
    data = PairsDataModule(path=str(lines), batch_size=8)
    data.setup()  # 9 training pairs: one batch of 8 fits a single process
    assert next(iter(data.train_dataloader()))["x"].shape[0] == 8
    data.trainer = FakeTrainer(world_size=2, global_rank=1)  # rank 1 would get 1 pair
    message = one_line_error(data.train_dataloader)
    assert "9 training pairs" in message and "data.batch_size=8" in message and "world size 2" in message
    assert "lower data.batch_size to at most 4" in message
    data.trainer = FakeTrainer(world_size=3, global_rank=2)  # rank 2 would get none: collate() of nothing
    assert "world size 3" in one_line_error(data.train_dataloader)


def test_demo_tasks():
    text = "First Citizen:\n\nSpeak, speak.\n" + "x" * 50 + "\n"
    assert demo_pairs(text, "reverse", 40) == [("First Citizen:", ":nezitiC tsriF"), ("Speak, speak.", ".kaeps ,kaepS")]
    assert demo_pairs(text, "restore", 20)[1] == ("speak speak", "Speak, speak.")
    with pytest.raises(CharLMError, match="data.demo"):
        demo_pairs(text, "sort", None)


# ---------------------------------------------------------------------------------------- commands

TINY = [
    "model=seq2seq",
    "data=pairs",
    "model.hidden_size=16",
    "model.embedding_dim=8",
    "data.batch_size=8",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "threads=1",
]


def test_train_and_generate_commands(tmp_path: Path):
    pairs = tmp_path / "rev.tsv"
    pairs.write_text("".join(f"{w}\t{w[::-1]}\n" for w in random_words(80, seed=2)), encoding="utf-8")
    run = tmp_path / "run"
    done = train_command(run, *TINY, f"data.path={pairs}")
    assert done.returncode == 0, done.stderr[-3000:]
    acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    assert {"train/loss", "val/loss", "val/bpc", "val/cer", "val/exact_match"} <= scalars, scalars
    assert [e.step for e in acc.Scalars("val/cer")] == [3, 6]
    assert any("sample" in tag for tag in acc.Tags()["tensors"])
    assert (run / "checkpoints" / "last.ckpt").is_file()
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)

    out = run_command("generate.py", f"ckpt_path={run}", "input=abcd", "greedy=true", "max_new_tokens=10")
    assert out.returncode == 0 and len(out.stdout.splitlines()) == 1, out.stderr[-2000:]
    assert set(out.stdout.strip()) <= set(ALPHABET)
    beam = run_command("generate.py", f"ckpt_path={run}", "input=abcd", "beam_size=1", "max_new_tokens=10")
    assert beam.returncode == 0 and beam.stdout == out.stdout, beam.stderr[-2000:]
    sources = tmp_path / "in.txt"
    sources.write_text("ab\n\ndcba\n", encoding="utf-8")
    lines = run_command("generate.py", f"ckpt_path={run}", f"input_file={sources}", "beam_size=3", "max_new_tokens=10")
    assert lines.returncode == 0 and len(lines.stdout.splitlines()) == 3, lines.stderr[-2000:]

    unknown = run_command("generate.py", f"ckpt_path={run}", "input=abz")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "characters not in the vocabulary: 'z'" in unknown.stderr


def test_language_model_data_and_seq2seq_model_do_not_mix(tmp_path: Path):
    pairs = tmp_path / "rev.tsv"
    pairs.write_text("".join(f"{w}\t{w[::-1]}\n" for w in random_words(20, seed=2)), encoding="utf-8")
    done = train_command(tmp_path / "run", "model=lstm", *TINY[1:], f"data.path={pairs}")
    assert done.returncode == 2 and "seq2seq" in done.stderr and done.stderr.count("\n") == 1, done.stderr
