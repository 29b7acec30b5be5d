"""The architectures: shared contract, scratch cells, carried state and learning."""

import pytest
import torch

from charlm import CharLMError
from charlm.models import BigramLM, RecurrentLM, TransformerLM

from conftest import MODELS, overfit_losses, tiny_net

V = 11


def make(kind: str, **kw):
    if kind == "bigram":
        return BigramLM(V)
    if kind == "transformer":
        return TransformerLM(V, block_size=32, n_layer=2, n_head=2, n_embd=16, **kw)
    return RecurrentLM(V, cell=kind, hidden_size=12, num_layers=2, embedding_dim=6, **kw)


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_maps_ids_to_logits_of_shape_b_t_v(kind):
    logits, _ = tiny_net(kind, V)(torch.randint(0, V, (3, 7)))
    assert logits.shape == (3, 7, V)


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_continues_from_its_state_as_one_longer_call_would(kind):
    torch.manual_seed(0)
    net = tiny_net(kind, V).eval()
    ids = torch.randint(0, V, (2, 12))
    whole, _ = net(ids)
    first, state = net(ids[:, :5])
    rest, _ = net(ids[:, 5:], state)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), whole, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("input", ["embedding", "onehot"])
def test_scratch_cells_compute_what_torch_modules_compute(cell, input):
    torch.manual_seed(0)
    ref = RecurrentLM(V, cell=cell, impl="torch", hidden_size=12, num_layers=2, input=input, embedding_dim=6)
    scratch = RecurrentLM(V, cell=cell, impl="scratch", hidden_size=12, num_layers=2, input=input, embedding_dim=6)
    scratch.load_state_dict(ref.state_dict())  # same parameter names and shapes
    ids = torch.randint(0, V, (3, 9))
    out_ref, state_ref = ref(ids)
    out_scr, state_scr = scratch(ids)
    torch.testing.assert_close(out_scr, out_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state_scr, state_ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("impl", ["torch", "scratch"])
def test_carrying_state_across_chunks_equals_one_long_forward(kind, impl):
    torch.manual_seed(0)
    net = make(kind, impl=impl).eval()
    ids = torch.randint(0, V, (2, 24))
    whole, _ = net(ids)
    state, parts = None, []
    for chunk in ids.split(8, dim=1):
        out, state = net(chunk, state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)


def test_transformer_key_value_cache_equals_full_forward():
    torch.manual_seed(0)
    net = make("transformer").eval()
    ids = torch.randint(0, V, (2, 20))
    whole, _ = net(ids)
    out, cache = net(ids[:, :5])
    parts = [out]
    for t in range(5, 20):  # one position at a time, and then a multi-token chunk
        out, cache = net(ids[:, t : t + 1], cache)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=1e-5, atol=1e-5)
    _, cache = net(ids[:, :12])
    chunk, _ = net(ids[:, 12:20], cache)
    torch.testing.assert_close(chunk, whole[:, 12:20], rtol=1e-5, atol=1e-5)


def test_transformer_refuses_more_than_block_size_positions():
    with pytest.raises(CharLMError, match="block_size=32"):
        make("transformer")(torch.zeros(1, 33, dtype=torch.long))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TransformerLM(V, n_embd=30, n_head=4), "n_embd=30 must be divisible by model.n_head=4"),
        (lambda: RecurrentLM(V, hidden_size=0), "hidden_size must be a positive number, got 0"),
        (lambda: RecurrentLM(V, num_layers=-1), "num_layers must be a positive number, got -1"),
        (lambda: RecurrentLM(V, dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (lambda: RecurrentLM(V, cell="transformer"), "model.cell='transformer' is not valid"),
        (lambda: RecurrentLM(V, impl="cuda"), "model.impl='cuda' is not valid; choose one of torch, scratch"),
    ],
)
def test_mis_sized_models_fail_before_training_with_clear_message(build, message):
    with pytest.raises(CharLMError, match=message):
        build()


@pytest.mark.parametrize("kind", MODELS)
def test_each_model_overfits_a_small_fixed_text(kind):
    torch.manual_seed(0)
    text = torch.tensor([i % 7 for i in range(0, 65)])  # period-7 sequence
    x, y = text[:-1].view(4, 16), text[1:].view(4, 16)
    net = tiny_net(kind, V)
    losses = overfit_losses(net, x, y, lr=0.1 if kind == "bigram" else 1e-2)
    # A bigram table can learn this sequence exactly too: each id has one successor.
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
