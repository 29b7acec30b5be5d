"""The recurrent models' options: a tied head and an output LayerNorm each learn, and are off by default."""

import pytest
import torch

from charlm import CharLMError, Vocab
from charlm.build import build_module
from charlm.models import RecurrentLM
from charlm.sampling import SamplingOptions, generate_ids

from conftest import compose_train, make_text, overfit_losses

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets

TEXT = make_text(257, seed=5)
VOCAB = Vocab.from_text(TEXT)
V = len(VOCAB)

OPTIONS = {
    "tied_head": {"tie_weights": True},
    "tied_head_same_width": {"tie_weights": True, "embedding_dim": 32},  # no projection needed
    "layer_norm": {"layer_norm": True},
    "both": {"tie_weights": True, "layer_norm": True},
}


def make(cell: str = "lstm", **options) -> RecurrentLM:
    torch.manual_seed(0)
    settings = {"hidden_size": 32, "num_layers": 2, "embedding_dim": 16, **options}
    return RecurrentLM(V, cell=cell, **settings)


@pytest.mark.parametrize(("name", "cell"), [(name, "lstm") for name in OPTIONS] + [("both", "gru"), ("both", "rnn")])
def test_each_option_overfits_a_small_text(name, cell):
    ids = VOCAB.encode(TEXT)
    x, y = ids[:-1].view(4, 64), ids[1:].view(4, 64)  # (B, T)
    net = make(cell, **OPTIONS[name])
    losses = overfit_losses(net, x, y, lr=1e-2)
    assert losses[-1] < 0.05 * losses[0], (losses[0], losses[-1])


def test_a_tied_head_scores_characters_with_the_input_embedding():
    untied, tied = make(), make(tie_weights=True)
    assert tied.head.weight is tied.embed.weight
    assert tied.proj.weight.shape == (16, 32)  # hidden 32 -> embedding 16
    params = {id(p) for p in tied.parameters()}
    assert tied.embed.weight.grad is None and id(tied.head.weight) in params
    # the head's V x H matrix is gone, an H x E projection came in
    saved = V * 32 - 32 * 16
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == saved
    logits, _ = tied(VOCAB.encode(TEXT[:20])[None])
    logits.sum().backward()
    assert tied.embed.weight.grad is not None and tied.embed.weight.grad.abs().sum() > 0


def test_a_tied_head_needs_an_embedding():
    with pytest.raises(CharLMError, match="tie_weights=true needs model.input=embedding"):
        make(tie_weights=True, input="onehot")


def test_layer_norm_normalises_what_the_head_reads():
    net = make(layer_norm=True).eval()
    seen = []
    net.proj.register_forward_hook(lambda _module, inputs, _out: seen.append(inputs[0]))
    net(VOCAB.encode(TEXT[:30])[None])
    (features,) = seen  # (B, T, H)
    torch.testing.assert_close(features.mean(-1), torch.zeros(1, 30), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        features.std(-1, unbiased=False), torch.ones(1, 30), atol=1e-2, rtol=0
    )  # LayerNorm's eps


@pytest.mark.parametrize("model", ["rnn", "lstm", "gru"])
def test_defaults_keep_the_recurrent_models_and_their_checkpoints_unchanged(model, tmp_path):
    cfg = compose_train([f"hydra.run.dir={tmp_path}", f"model={model}"])
    assert cfg.model.tie_weights is False and cfg.model.layer_norm is False
    net = build_module(cfg, VOCAB.chars).net
    names = {name for name, _ in net.named_parameters()}
    assert not any(name.startswith(("proj", "norm")) for name in names)
    assert {"embed.weight", "head.weight", "head.bias"} <= names


def test_carried_state_generation_equals_rereading_the_whole_text_with_both_options():
    net = make(tie_weights=True, layer_norm=True)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():  # sharper logits than the init, so a state error would show
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    prompt = VOCAB.encode(TEXT[:6]).repeat(2, 1)

    def trace(use_cache: bool) -> tuple[torch.Tensor, torch.Tensor]:
        seen: list[torch.Tensor] = []
        ids = generate_ids(net, prompt, 30, SamplingOptions(), seed=3, use_cache=use_cache, on_logits=seen.append)
        return torch.stack(seen), ids

    (carried_logits, carried), (reread_logits, reread) = trace(True), trace(False)
    torch.testing.assert_close(carried_logits, reread_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(carried, reread)
