"""The transformer's modern options: each one learns, keeps the KV cache exact, and is off by default."""

from pathlib import Path

import pytest
import torch

from charlm import CharLMError, Vocab
from charlm.build import build_module
from charlm.config import check_config
from charlm.models import TransformerLM
from charlm.models.transformer import Rotary, rotate
from charlm.sampling import SamplingOptions, generate_ids

from conftest import ROOT, compose_train, make_text, overfit_losses, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny nets

TEXT = make_text(257, seed=3)
VOCAB = Vocab.from_text(TEXT)
V = len(VOCAB)
OLD_CHECKPOINT = Path(__file__).parent / "fixtures" / "checkpoints" / "transformer.ckpt"

# Each option on its own, then all of them together; the keys name the behaviour under test.
OPTIONS = {
    "rope": {"pos": "rope"},
    "qk_norm": {"qk_norm": True},
    "relu2_mlp": {"mlp": "relu2"},
    "zero_init_proj": {"zero_init_proj": True},
    "untied_head": {"tie_weights": False},
    "logit_softcap": {"logit_softcap": 5.0},
}
OPTIONS["all_together"] = {k: v for opts in OPTIONS.values() for k, v in opts.items()}


def make(block_size: int = 16, n_layer: int = 2, n_embd: int = 16, **options) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(V, block_size=block_size, n_layer=n_layer, n_head=2, n_embd=n_embd, **options)


def scrambled(net: TransformerLM) -> TransformerLM:
    """The net with weights far from their small init, so attention is sharp and logits are large:
    a position or cache error then shows in the logits instead of hiding in near-uniform outputs."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return net.eval()


def logits_trace(net: TransformerLM, use_cache: bool, n: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    """The (n, B, V) logits seen at each generation step, and the (B, T0 + n) ids generated."""
    trace: list[torch.Tensor] = []
    prompt = VOCAB.encode(TEXT[:6]).repeat(2, 1)
    ids = generate_ids(net, prompt, n, SamplingOptions(), seed=3, use_cache=use_cache, on_logits=trace.append)
    return torch.stack(trace), ids


@pytest.mark.parametrize("name", list(OPTIONS))
def test_each_option_overfits_a_small_text(name):
    ids = VOCAB.encode(TEXT)
    x, y = ids[:-1].view(4, 64), ids[1:].view(4, 64)  # (B, T)
    net = make(block_size=64, n_embd=32, **OPTIONS[name])
    losses = overfit_losses(net, x, y, lr=1e-2)
    assert losses[-1] < 0.02 * losses[0], (losses[0], losses[-1])


@pytest.mark.parametrize("name", ["rope", "all_together"])
def test_rope_with_the_kv_cache_equals_the_full_forward_at_every_position(name):
    net = scrambled(make(**OPTIONS[name]))
    ids = torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(0))  # a full block
    whole, _ = net(ids)
    out, cache = net(ids[:, :1])
    parts = [out]
    for t in range(1, 16):  # one token at a time: each new query sits at the cache's length
        out, cache = net(ids[:, t : t + 1], cache)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole, rtol=0, atol=1e-5)
    _, cache = net(ids[:, :7])
    chunk, _ = net(ids[:, 7:], cache)  # several new positions after a cache
    torch.testing.assert_close(chunk, whole[:, 7:], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", list(OPTIONS))
def test_cached_generation_equals_uncached_generation_past_block_size(name):
    net = scrambled(make(**OPTIONS[name]))
    # 40 new characters after a 6-character prompt outgrow block_size=16 several times.
    cached_logits, cached_ids = logits_trace(net, use_cache=True)
    fresh_logits, fresh_ids = logits_trace(net, use_cache=False)
    torch.testing.assert_close(cached_logits, fresh_logits, rtol=1e-4, atol=1e-4)
    assert torch.equal(cached_ids, fresh_ids)


def test_rotary_attention_scores_depend_only_on_the_distance_between_positions():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8, generator=gen), torch.randn(1, 1, 1, 8, generator=gen)  # (B, nh, T, hs)
    rotary = Rotary(head_size=8, block_size=32)

    def score(m: int, n: int) -> torch.Tensor:
        return (rotate(q, rotary(m, 1)) * rotate(k, rotary(n, 1))).sum()

    torch.testing.assert_close(score(9, 4), score(25, 20))
    torch.testing.assert_close(score(3, 3), (q * k).sum())  # no distance, no rotation left
    assert not torch.allclose(score(9, 4), score(9, 5))


def test_rope_has_no_position_table_and_checkpoints_carry_no_rotation_tables():
    net = make(pos="rope")
    assert net.pos_emb is None
    assert not any("pos_emb" in k or "rotary" in k for k in net.state_dict())
    again = make(pos="rope")
    again.load_state_dict(net.state_dict(), strict=True)
    ids = torch.randint(0, V, (1, 10), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again(ids)[0], net(ids)[0])


def test_defaults_have_the_same_parameters_as_an_old_checkpoint():
    ckpt = torch.load(OLD_CHECKPOINT, map_location="cpu", weights_only=False)
    hp = {k: v for k, v in ckpt["hyper_parameters"]["model"].items() if k not in ("_target_", "compile")}
    old = {k.removeprefix("net."): tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    net = TransformerLM(old["tok_emb.weight"][0], **hp)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == old
    assert [name for name, _ in net.named_parameters()] == [
        "tok_emb.weight",
        "pos_emb.weight",
        "blocks.0.ln_1.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.proj.weight",
        "blocks.0.ln_2.weight",
        "blocks.0.mlp.fc.weight",
        "blocks.0.mlp.proj.weight",
        "ln_f.weight",
    ]  # the head is the token embedding


def test_options_switched_off_explicitly_give_the_same_net_as_the_defaults():
    off = {"pos": "learned", "qk_norm": False, "mlp": "gelu", "zero_init_proj": False, "logit_softcap": None}
    ids = torch.randint(0, V, (2, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(make(**off)(ids)[0], make()(ids)[0], rtol=0, atol=0)


def test_zero_init_proj_zeroes_only_the_residual_projections():
    default, zeroed = make().state_dict(), make(zero_init_proj=True).state_dict()
    for name, value in zeroed.items():
        if name.endswith(("attn.proj.weight", "mlp.proj.weight")):
            assert not value.any(), name
        else:
            assert torch.equal(value, default[name]), name


def test_untied_head_is_a_parameter_of_its_own():
    net = make(tie_weights=False)
    assert net.head.weight is not net.tok_emb.weight
    assert "head.weight" in dict(net.named_parameters())


def test_logit_softcap_bounds_every_logit():
    net = scrambled(make(logit_softcap=2.0))
    with torch.no_grad():
        for p in net.head.parameters():
            p.mul_(100.0)  # raw logits far beyond the cap
    logits, _ = net(torch.randint(0, V, (2, 16), generator=torch.Generator().manual_seed(0)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pos": "absolute"}, "model.pos='absolute' is not valid; choose one of learned, rope"),
        ({"mlp": "swiglu"}, "model.mlp='swiglu' is not valid; choose one of gelu, relu2"),
        ({"logit_softcap": -1}, "model.logit_softcap=-1 must be positive or null"),
        ({"logit_softcap": 0.0}, "model.logit_softcap=0.0 must be positive or null"),
        ({"logit_softcap": float("inf")}, "model.logit_softcap=inf must be positive or null"),
        ({"pos": "rope", "n_embd": 6}, "model.pos=rope needs an even head size; model.n_embd=6 / model.n_head=2"),
    ],
)
def test_bad_option_values_are_refused_with_a_one_line_message(options, message):
    with pytest.raises(CharLMError) as err:
        make(**options)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_every_option_can_be_set_from_the_command_line():
    overrides = [f"model.{k}={'null' if v is None else str(v).lower()}" for k, v in OPTIONS["all_together"].items()]
    cfg = compose_train([*tiny_overrides("transformer"), "paths.output_dir=unused", *overrides])
    check_config(cfg)
    net = build_module(cfg, VOCAB.chars).net
    assert net.rotary is not None and net.blocks[0].attn.q_norm is not None and net.logit_softcap == 5.0


def test_every_key_of_the_transformer_config_has_a_comment():
    lines = (ROOT / "conf" / "model" / "transformer.yaml").read_text(encoding="utf-8").splitlines()
    keys = [line for line in lines if line.strip() and not line.startswith("#") and not line.startswith("_target_")]
    assert [line for line in keys if " # " not in line] == []
