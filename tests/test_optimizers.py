"""optimizer=muon: Muon on the hidden weight matrices, AdamW on the rest, as one optimiser that trains,
splits the parameters cleanly, follows the lr schedule, checkpoints both states and resumes exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from test_resume import STEPS, kill_then_resume
from test_resume import run_args as resume_run_args

from charlm.lightning_module import build_net
from charlm.optimizers import MuonAdamW
from charlm.schedule import optimizer_and_schedule

from conftest import compose_train, make_text, train_command

VOCAB = 64  # more than the small text has


def muon_setup(model: str, *overrides: str, steps: int = 100) -> tuple[torch.nn.Module, MuonAdamW, object]:
    """A small net of `model` with the muon optimiser and schedule the training run would build."""
    extra = ["data=pairs"] if model == "seq2seq" else []
    cfg = compose_train([f"model={model}", "optimizer=muon", *extra, *overrides])
    torch.manual_seed(0)
    net = build_net(OmegaConf.to_container(cfg.model, resolve=True), VOCAB)
    optimizer, schedule = optimizer_and_schedule(
        net,
        OmegaConf.to_container(cfg.optimizer, resolve=True),
        OmegaConf.to_container(cfg.scheduler, resolve=True),
        steps,
    )
    return net, optimizer, schedule


def ids_of(group: dict) -> set[int]:
    return {id(p) for p in group["params"]}


@pytest.mark.parametrize(
    ("model", "overrides"),
    [
        ("lstm", []),
        ("lstm", ["model.input=onehot"]),
        ("gru", ["model.impl=scratch"]),
        ("rnn", []),
        ("transformer", []),
        ("transformer", ["model.tie_weights=false", "model.bias=true"]),
        ("bigram", []),
        ("seq2seq", []),
    ],
)
def test_hidden_matrices_go_to_muon_and_everything_else_to_adamw(model, overrides):
    net, optimizer, _ = muon_setup(model, *overrides)
    muon = [g for g in optimizer.param_groups if g["muon"]]
    adamw = [g for g in optimizer.param_groups if not g["muon"]]
    muon_ids = set().union(*map(ids_of, muon))
    adamw_ids = set().union(*map(ids_of, adamw))
    assert not muon_ids & adamw_ids  # no parameter in both
    assert muon_ids | adamw_ids == {id(p) for p in net.parameters()}  # none missing
    names = {id(p): n for n, p in net.named_parameters()}
    for pid in muon_ids:
        name = names[pid]
        assert not any(k in name for k in ("embed", "emb.", "head", "table", "ln", "bias")), name
    for module in net.modules():
        if isinstance(module, torch.nn.Embedding):
            assert id(module.weight) in adamw_ids
    if hasattr(net, "head"):
        assert {id(p) for p in net.head.parameters()} <= adamw_ids
    one_hot = "model.input=onehot" in overrides
    expected_muon = {
        n
        for n, p in net.named_parameters()
        if p.dim() == 2
        and "head" not in n
        and "emb" not in n
        and "table" not in n
        and not (one_hot and n.endswith("weight_ih_l0"))
    }
    assert {names[i] for i in muon_ids} == expected_muon
    if model != "bigram":
        assert muon_ids  # Muon has work to do
    assert all(p.dim() == 2 for g in muon for p in g["params"])


SMALL = {
    "transformer": ["model.n_layer=2", "model.n_head=2", "model.n_embd=64"],
    "lstm": ["model.hidden_size=64", "model.num_layers=1", "model.embedding_dim=32"],
}


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_muon_overfits_a_small_text(model):
    lr = ["optimizer.lr=1e-2", "optimizer.adamw_lr=1e-2", "scheduler.warmup_steps=5"]
    net, optimizer, schedule = muon_setup(model, *SMALL[model], *lr, steps=60)
    text = make_text(200)
    chars = sorted(set(text))
    ids = torch.tensor([[chars.index(c) for c in text[i : i + 33]] for i in range(0, 160, 40)])
    x, y = ids[:, :-1], ids[:, 1:]
    losses = []
    for _ in range(60):
        logits, _ = net(x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_the_schedule_scales_muon_and_adamw_each_from_its_own_lr():
    _, optimizer, schedule = muon_setup(
        "transformer",
        "optimizer.lr=0.02",
        "optimizer.adamw_lr=0.004",
        "scheduler.warmup_steps=3",
        "scheduler.min_lr_ratio=0.1",
        steps=10,
    )
    factor = schedule.lr_lambdas[0]
    for step in range(12):
        for group in optimizer.param_groups:
            base = 0.02 if group["muon"] else 0.004
            assert group["lr"] == pytest.approx(base * factor(step))
        optimizer.step()
        schedule.step()
    assert all(g["lr"] == pytest.approx((0.02 if g["muon"] else 0.004) * 0.1) for g in optimizer.param_groups)


def test_load_state_dict_keeps_both_optimisers_linked():
    net, optimizer, _ = muon_setup("lstm")
    net(torch.zeros(2, 4, dtype=torch.long))[0].sum().backward()
    optimizer.step()
    net2, restored, _ = muon_setup("lstm")
    restored.load_state_dict(optimizer.state_dict())
    restored.param_groups[0]["lr"] = 0.5  # a change to the wrapper's group reaches Muon's own
    restored.step()
    assert restored._muon.param_groups[0] is restored.param_groups[0]
    assert restored._muon.state is restored.state is restored._adamw.state


def run_args(model: str, corpus: Path, sampling: str) -> list[str]:
    """test_resume's short run, trained with Muon."""
    return [*resume_run_args(model, corpus, sampling), "optimizer=muon"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    path.write_text(make_text(20000), encoding="utf-8")
    return path


def test_both_optimiser_states_are_in_the_checkpoint(text_file, tmp_path):
    run = tmp_path / "run"
    args = [*run_args("transformer", text_file, "random"), "trainer.max_steps=6"]
    done = train_command(run, *args)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    [saved] = ckpt["optimizer_states"]
    by_group = {g["muon"]: set(g["params"]) for g in saved["param_groups"] if g["params"]}
    keys = {index: set(state) for index, state in saved["state"].items()}
    assert all(keys[i] == {"momentum_buffer"} for i in by_group[True])
    assert all({"exp_avg", "exp_avg_sq", "step"} <= keys[i] for i in by_group[False])
    assert {"momentum", "ns_steps"} <= set(next(g for g in saved["param_groups"] if g["muon"]))
    assert {"betas", "eps"} <= set(next(g for g in saved["param_groups"] if not g["muon"]))


def final_weights(run: Path) -> tuple[dict, float]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == STEPS
    return ckpt["state_dict"], float(ckpt["optimizer_states"][0]["param_groups"][0]["lr"])


@pytest.mark.slow
@pytest.mark.parametrize(("model", "sampling"), [("transformer", "random"), ("lstm", "stream")])
def test_muon_run_killed_and_resumed_matches_an_uninterrupted_run(model, sampling, text_file, tmp_path):
    args = run_args(model, text_file, sampling)
    reference = tmp_path / "reference"
    assert train_command(reference, *args).returncode == 0
    run = tmp_path / "run"
    kill_then_resume(run, args)
    weights, lr = final_weights(run)
    ref_weights, ref_lr = final_weights(reference)
    assert lr == ref_lr
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6, msg=name)
