"""The views of charlm.insight on tiny in-process nets: surprise, activations and the unit search, attention."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from charlm.errors import CharLMError
from charlm.insight import activations, attention_maps, surprise, text_properties, unit_search
from charlm.insight.neurons import Unit, parse_unit
from charlm.models.bigram import BigramLM
from charlm.models.recurrent import RecurrentLM
from charlm.models.transformer import TransformerLM
from charlm.vocab import Vocab

from conftest import make_text

TEXT = make_text(1500, seed=3)
VOCAB = Vocab.from_text(TEXT)


def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "bigram": BigramLM(len(VOCAB)),
        "rnn": RecurrentLM(len(VOCAB), cell="rnn", hidden_size=16, num_layers=2, embedding_dim=8),
        "lstm": RecurrentLM(len(VOCAB), cell="lstm", hidden_size=16, num_layers=2, embedding_dim=8),
        "gru": RecurrentLM(len(VOCAB), cell="gru", impl="scratch", hidden_size=8, num_layers=1, embedding_dim=8),
        "transformer": TransformerLM(len(VOCAB), block_size=64, n_layer=2, n_head=2, n_embd=16),
    }


@pytest.mark.parametrize("name", list(nets()))
@pytest.mark.parametrize("context", ["windows", "stream"])
def test_surprise_bits_are_the_loss_of_each_character_as_the_net_reads_the_text(name, context):
    net = nets()[name].eval()
    s = surprise(net, VOCAB, TEXT, context=context, block_size=100)
    ids = VOCAB.encode(TEXT)
    assert math.isnan(s.bits[0]) and s.chars == len(TEXT) - 1
    if context == "stream" and net.max_context is None:  # one pass over the whole text is the reference
        logits, _ = net(ids[None, :-1])
        expected = F.cross_entropy(logits[0], ids[1:], reduction="none") / math.log(2)
        np.testing.assert_allclose(s.bits[1:], expected.detach().numpy(), rtol=1e-4, atol=1e-4)
    if context == "windows":  # window k from a fresh state: its first character sees no context at all
        size = net.max_context or 100
        first_of_second = size + 1
        with torch.no_grad():
            logits, _ = net(ids[None, size : size + 1])
        fresh = F.cross_entropy(logits[0], ids[first_of_second : first_of_second + 1]) / math.log(2)
        assert s.bits[first_of_second] == pytest.approx(fresh.item(), abs=1e-4)
    probs = s.top_probs
    assert (np.diff(probs[1:], axis=1) <= 1e-7).all() and (probs[1:].sum(axis=1) <= 1 + 1e-5).all()
    seen = s.top_ids[1:, 0] == ids[1:].numpy()  # where the top guess is right, it has the character's probability
    np.testing.assert_allclose(probs[1:, 0][seen], 2.0 ** -s.bits[1:][seen], rtol=1e-4)


def test_surprise_refuses_characters_outside_the_vocabulary_and_too_short_texts():
    net = nets()["bigram"]
    with pytest.raises(CharLMError, match="not in the vocabulary"):
        surprise(net, VOCAB, "Zebra ~ jumps")
    with pytest.raises(CharLMError, match="at least 2"):
        surprise(net, VOCAB, "a")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_traced_states_are_the_ones_forward_computes(cell, impl):
    torch.manual_seed(1)
    net = RecurrentLM(len(VOCAB), cell=cell, impl=impl, hidden_size=12, num_layers=2, embedding_dim=6).eval()
    ids = VOCAB.encode(TEXT[:300])[None]
    with torch.no_grad():
        out, state = net.rnn(net.embed(ids))
    hs, cs, final = net.trace(ids)
    torch.testing.assert_close(hs[-1], out, rtol=1e-5, atol=1e-5)  # the top layer is what forward returns
    h_n = state[0] if cell == "lstm" else state
    torch.testing.assert_close(torch.stack([h[:, -1] for h in hs]), h_n, rtol=1e-5, atol=1e-5)  # every layer
    if cell == "lstm":
        torch.testing.assert_close(torch.stack([c[:, -1] for c in cs]), state[1], rtol=1e-5, atol=1e-5)
    else:
        assert cs == [None, None]


def test_text_properties_follow_the_characters():
    props = text_properties('KING:\nSay "hi (now)" to\nme\n')
    text = 'KING:\nSay "hi (now)" to\nme\n'
    at = {ch: i for i, ch in reversed(list(enumerate(text)))}
    assert props["in_quotes"][at['"']] == 1 and props["in_quotes"][text.rindex('"')] == 0  # opening in, closing out
    assert props["in_quotes"][at["h"]] == 1 and props["in_quotes"][at["t"]] == 0
    assert props["in_brackets"][at["n"]] == 1 and props["in_brackets"][at[")"]] == 0
    assert props["line_position"][at["S"]] == 0 and props["line_position"][at["a"]] == 1
    assert props["line_start"][at["m"]] == 1 and props["line_start"][at["e"]] == 0
    assert props["after_speaker"][at["S"]] == 1 and props["after_speaker"][at["m"]] == 0
    assert props["after_speaker"][at["K"]] == 0
    assert props["vowel"][at["a"]] == 1 and props["vowel"][at["S"]] == 0 and np.isnan(props["vowel"][at[" "]])


def quoted_text(n: int = 3000, seed: int = 0) -> str:
    """Prose with double-quoted speech in it, quotes never nested."""
    rng = random.Random(seed)
    words = "the king said that we shall go now to see her and you".split()
    parts = []
    while sum(map(len, parts)) < n:
        sentence = " ".join(rng.choice(words) for _ in range(rng.randint(3, 8)))
        parts.append(f'"{sentence}," ' if rng.random() < 0.4 else f"{sentence}. ")
        if rng.random() < 0.2:
            parts.append("\n")
    return "".join(parts)


def planted_lstm(vocab: Vocab, planted: int, hidden: int = 6) -> RecurrentLM:
    """A one-hot LSTM whose cell `planted` of layer 1 flips between -1 and +1 at every '"' and holds otherwise:
    inside quotes it is +1. The other units keep random weights, so the search has rivals."""
    torch.manual_seed(0)
    net = RecurrentLM(len(vocab), cell="lstm", hidden_size=hidden, num_layers=2, input="onehot").eval()
    quote, H, big = vocab.chars.index('"'), hidden, 30.0
    i, f, g, o = (planted + k * H for k in range(4))  # the unit's rows in the i, f, g, o gate blocks
    with torch.no_grad():
        for name in ("weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1"):
            getattr(net.rnn, name)[[i, f, g, o]] = 0.0
        # layer 1 reads layer 0's hidden state, so the quote has to pass through layer 0: unit 0 of layer 0
        # is made a quote detector (h ~ 0.76 on '"', ~ 0 elsewhere).
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(net.rnn, name)[[0, H, 2 * H, 3 * H]] = 0.0
        net.rnn.weight_ih_l0[2 * H, quote] = big  # g = 1 on a quote
        net.rnn.bias_ih_l0[H] = -big  # f = 0: the detector forgets at once
        net.rnn.weight_ih_l0[0, quote], net.rnn.bias_ih_l0[0] = 2 * big, -big  # i = 1 on a quote only
        net.rnn.bias_ih_l0[3 * H] = big  # o = 1
        net.rnn.weight_ih_l1[i, 0], net.rnn.bias_ih_l1[i] = 4 * big, -big  # write only on a quote
        net.rnn.weight_ih_l1[f, 0], net.rnn.bias_ih_l1[f] = -4 * big, big  # keep, except on a quote
        net.rnn.weight_hh_l1[g, planted], net.rnn.bias_hh_l1[g] = -big, 0.38 * big  # flip the sign of c
        net.rnn.bias_ih_l1[o] = big  # o = 1: h = tanh(c)
    return net


def test_unit_search_ranks_a_planted_quote_unit_first():
    text = quoted_text()
    vocab = Vocab.from_text(text)
    acts = activations(planted_lstm(vocab, planted=4), vocab, text)
    found = unit_search(acts, top=3)
    best = found["in_quotes"][0]
    assert (best.unit.layer, best.unit.index) == (1, 4), found["in_quotes"]
    assert best.r > 0.9
    assert found["in_brackets"] == []  # the text has no brackets: nothing to rank


def test_unit_search_fails_without_the_planted_unit():
    """The same search on the net without its construction finds no quote unit: the test above can fail."""
    text = quoted_text()
    vocab = Vocab.from_text(text)
    torch.manual_seed(0)
    plain = RecurrentLM(len(vocab), cell="lstm", hidden_size=6, num_layers=2, input="onehot")
    found = unit_search(activations(plain, vocab, text), top=1)["in_quotes"]
    assert abs(found[0].r) < 0.9


def test_a_unit_is_named_layer_index_and_a_bad_one_says_what_is_valid():
    acts = activations(nets()["lstm"], VOCAB, TEXT[:50])
    assert parse_unit("1:3", acts) == Unit(1, "h", 3)
    assert parse_unit("0:15:c", acts) == Unit(0, "c", 15)
    for bad in ("2:0", "0:16", "x", "1:2:q", "-1:0"):
        with pytest.raises(CharLMError, match=r"LAYER 0\.\.1 and INDEX 0\.\.15"):
            parse_unit(bad, acts)


def test_views_a_model_lacks_say_so_in_one_line():
    with pytest.raises(CharLMError, match="no recurrent units"):
        activations(nets()["transformer"], VOCAB, TEXT)
    with pytest.raises(CharLMError, match="no self-attention"):
        attention_maps(nets()["lstm"], VOCAB, TEXT[:20])


@pytest.mark.parametrize("pos", ["learned", "rope"])
def test_attention_rows_sum_to_one_are_causal_and_are_what_the_fast_path_applies(pos):
    torch.manual_seed(2)
    net = TransformerLM(len(VOCAB), block_size=64, n_layer=2, n_head=2, n_embd=16, pos=pos, qk_norm=pos == "rope")
    net.eval()
    window = TEXT[:40]
    maps = attention_maps(net, VOCAB, window)  # (L, nh, T, T)
    assert maps.shape == (2, 2, 40, 40)
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=1e-5)
    assert np.triu(maps, k=1).max() == 0.0
    # weights @ v through the output projection is exactly the first block's attention output
    ids = VOCAB.encode(window)[None]
    block = net.blocks[0]
    x = block.ln_1(net.tok_emb(ids) + (net.pos_emb(torch.arange(40)) if net.pos_emb is not None else 0))
    rope = None if net.rotary is None else net.rotary(0, 40)
    with torch.no_grad():
        fast, (k, v) = block.attn(x, None, rope)
        y = torch.from_numpy(maps[0])[None] @ v  # (1, nh, T, hs)
        slow = block.attn.proj(y.transpose(1, 2).reshape(1, 40, 16))
    torch.testing.assert_close(slow, fast, rtol=1e-4, atol=1e-5)


def test_attention_window_longer_than_block_size_is_refused():
    with pytest.raises(CharLMError, match="block_size=64"):
        attention_maps(nets()["transformer"], VOCAB, TEXT[:65])
