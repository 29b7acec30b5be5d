"""The one generation routine: cache correctness, options and reproducibility."""

import pytest
import torch

from charlm import CharLMError, Vocab
from charlm.models import BigramLM, RecurrentLM, TransformerLM
from charlm.sampling import SamplingOptions, filter_logits, generate, generate_ids

from conftest import MODELS, tiny_net

VOCAB = Vocab("\n :ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
V = len(VOCAB)


def nets():
    torch.manual_seed(0)
    return {
        "bigram": BigramLM(V),
        "lstm": RecurrentLM(V, cell="lstm", hidden_size=16, num_layers=2),
        "gru-scratch": RecurrentLM(V, cell="gru", impl="scratch", hidden_size=16, num_layers=1),
        "transformer": TransformerLM(V, block_size=16, n_layer=2, n_head=2, n_embd=16),
    }


def logits_trace(net, use_cache: bool, n: int = 40) -> torch.Tensor:
    trace = []
    prompt = VOCAB.encode("ROMEO:").repeat(2, 1)
    generate_ids(net, prompt, n, SamplingOptions(), seed=3, use_cache=use_cache, on_logits=trace.append)
    return torch.stack(trace)  # (n, B, V)


@pytest.mark.parametrize("name", ["bigram", "lstm", "gru-scratch", "transformer"])
def test_cached_and_uncached_generation_give_the_same_logits_at_every_step(name):
    net = nets()[name]
    # 40 new characters after a 6-character prompt run well past the transformer's block_size=16.
    torch.testing.assert_close(logits_trace(net, True), logits_trace(net, False), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("model", MODELS)
def test_every_registered_model_generates_the_same_with_and_without_its_state(model):
    torch.manual_seed(0)
    net = tiny_net(model, V)  # tiny sizes: block_size 16, so 40 characters slide a transformer's window
    torch.testing.assert_close(logits_trace(net, True), logits_trace(net, False), rtol=1e-4, atol=1e-4)


def test_prompt_longer_than_block_size_still_generates_the_same_with_and_without_cache():
    net = nets()["transformer"]
    prompt = VOCAB.encode("ABCDEFGHIJKLMNOPQRSTUVWXYZ abc").unsqueeze(0)  # 30 > 16
    outs = [generate_ids(net, prompt, 25, SamplingOptions(greedy=True), use_cache=c) for c in (True, False)]
    assert torch.equal(outs[0], outs[1])


def test_same_seed_same_text_and_samples_do_not_depend_on_batching():
    net = nets()["lstm"]
    a = generate(net, VOCAB, "KING:", 60, num_samples=3, seed=7)
    b = generate(net, VOCAB, "KING:", 60, num_samples=3, seed=7)
    assert a == b and len(set(a)) == 3
    assert generate(net, VOCAB, "KING:", 60, num_samples=1, seed=8) == [a[1]]
    assert all(t.startswith("KING:") and len(t) == 65 for t in a)


def test_empty_prompt_starts_from_a_newline():
    text = generate(nets()["bigram"], VOCAB, "", 10, seed=0)[0]
    assert text.startswith("\n") and len(text) == 11


def test_streaming_callback_sees_each_new_character_of_the_first_sample():
    seen = []
    text = generate(nets()["lstm"], VOCAB, "A", 30, num_samples=2, seed=1, on_text=seen.append)[0]
    assert "A" + "".join(seen) == text


def test_top_k_and_top_p_keep_only_the_likeliest_characters():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isfinite(filter_logits(logits, SamplingOptions(top_k=2))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, SamplingOptions(top_p=0.7))).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, SamplingOptions(top_p=0.4))).tolist() == [[True, False, False, False]]


def test_greedy_decoding_is_deterministic_whatever_the_seed():
    net = nets()["transformer"]
    texts = {generate(net, VOCAB, "A", 30, greedy=True, seed=s)[0] for s in range(3)}
    assert len(texts) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": 0}, "temperature=0 is not valid: expected a number > 0"),
        ({"temperature": -1.0}, "temperature=-1.0 is not valid: expected a number > 0"),
        ({"top_k": 0}, "top_k=0 is not valid: expected an integer >= 1"),
        ({"top_k": 2.5}, "top_k=2.5 is not valid: expected an integer >= 1"),
        ({"top_p": 0.0}, r"top_p=0.0 is not valid: expected a number in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p=1.5 is not valid: expected a number in \(0, 1\]"),
    ],
)
def test_out_of_range_sampling_options_are_refused_with_the_valid_range(options, message):
    with pytest.raises(CharLMError, match=message):
        generate(nets()["bigram"], VOCAB, "A", 5, **options)


def test_prompt_characters_outside_the_vocabulary_are_listed():
    with pytest.raises(CharLMError, match=r"characters not in the vocabulary: '\$%'"):
        generate(nets()["bigram"], VOCAB, "A$%", 5)


class Stop(Exception):
    pass


def stop_after(n: int):
    calls = []

    def on_step(_):
        calls.append(1)
        if len(calls) == n:
            raise Stop

    return on_step


def test_a_net_in_train_mode_is_back_in_train_mode_when_generation_fails_midway():
    net = nets()["lstm"].train()
    with pytest.raises(Stop):
        generate_ids(net, VOCAB.encode("A")[None], 10, on_step=stop_after(3))
    assert net.training and all(m.training for m in net.modules())
    with pytest.raises(Stop):
        generate(net, VOCAB, "A", 10, on_text=stop_after(3))
    assert net.training and all(m.training for m in net.modules())
    generate(net, VOCAB, "A", 5)
    assert net.training


def test_generate_on_another_device_moves_the_net_there_and_back_even_on_an_error(monkeypatch):
    net = nets()["lstm"]
    moves = []
    monkeypatch.setattr(net, "to", lambda device: moves.append(torch.device(device)) or net)
    elsewhere = torch.nn.Parameter(torch.zeros(1, device="meta"))  # the net reports living on "meta"
    monkeypatch.setattr(net, "parameters", lambda recurse=True: iter([elsewhere]))
    generate(net, VOCAB, "A", 5, device="cpu")
    assert moves == [torch.device("cpu"), torch.device("meta")]
    moves.clear()
    with pytest.raises(Stop):
        generate(net, VOCAB, "A", 10, device="cpu", on_text=stop_after(3))
    assert moves == [torch.device("cpu"), torch.device("meta")]


def test_generate_without_a_device_leaves_the_net_where_it_is(monkeypatch):
    net = nets()["bigram"]
    moves = []
    monkeypatch.setattr(net, "to", lambda *a, **k: moves.append(a) or net)
    generate(net, VOCAB, "A", 5)
    generate(net, VOCAB, "A", 5, device="cpu")  # the net's own device: nothing to move
    assert moves == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_generate_on_the_gpu_leaves_a_cpu_net_on_the_cpu():
    net = nets()["transformer"]
    texts = generate(net, VOCAB, "A", 20, greedy=True, device="cuda")
    assert all(p.device.type == "cpu" for p in net.parameters())
    assert len(texts[0]) == 21
