"""The benchmark command end to end on tiny settings, the experiment recipes, and torch.compile.

The benchmark runs as its command runs it (in this process, with its own data cache) and must write JSON
a later comparison can read. Its numbers are not checked, only its shape and its honesty check:
the framework and the plain loop end on the same loss, so they did the same computation.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from charlm.build import build_module
from charlm.config import check_config
from charlm.lightning_module import build_net
from charlm.models import TransformerLM
from charlm.sampling import SamplingOptions, generate_ids
from charlm.tooling.benchmark import MODELS

from conftest import ROOT, compose_train, make_text, run_command, tiny_overrides, train_command
from conftest import TINY as CONFTEST_TINY

EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
# Applied to every model; the benchmark skips model.* keys a model's config does not have.
TINY = [o for o in CONFTEST_TINY if o.startswith(("data.block_size=", "data.batch_size=", "model.", "threads="))]
MEASUREMENT_KEYS = {"tokens_per_s", "ms_per_step", "steps", "peak_mb", "base_mb", "final_loss"}


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    lines = ["ROMEO:", "But soft, what light through yonder window breaks?", "JULIET:", "O Romeo, Romeo!", ""]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 60), encoding="utf-8")
    return path


def one_compile_thread():
    """No worker pool to start for one tiny graph. Through torch's own `patch`, which restores the setting
    (a monkeypatch of the config module deletes the attribute on undo: the next test then fails)."""
    import torch._inductor.config as inductor_config

    return inductor_config.patch(compile_threads=1)


def benchmark(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python scripts/benchmark.py ARGS` in `tmp_path` (in this process; the scale benchmark still trains each
    corpus in processes of their own)."""
    return run_command("benchmark.py", *args, env={"CHARLM_CACHE": str(tmp_path / "cache")}, cwd=tmp_path)


def compose_job(*overrides: str) -> DictConfig:
    return compose_train([*overrides, "paths.output_dir=unused"])


@pytest.mark.slow
def test_train_benchmark_writes_a_table_and_json(tmp_path: Path, text_file: Path) -> None:
    out = tmp_path / "train.json"
    proc = benchmark(
        tmp_path,
        "train",
        "--data",
        str(text_file),
        "--steps",
        "3",
        "--warmup",
        "1",
        "--scaling-blocks",
        "8",
        "16",
        "--scaling-widths",
        "16",
        "--out",
        str(out),
        "--set",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tok/s framework" in proc.stdout and "how the cost of a step grows" in proc.stdout
    payload = json.loads(out.read_text())
    assert payload["benchmark"] == "train" and payload["machine"]["torch"] == torch.__version__
    assert [row["model"] for row in payload["models"]] == list(MODELS)
    assert [(row["block_size"], row["n_embd"]) for row in payload["scaling"]] == [(8, 16), (16, 16)]
    for row in payload["models"] + payload["scaling"]:
        assert row["params"] > 0 and row["ratio"] > 0 and row["device"] == "cpu"
        for side in ("framework", "plain"):
            assert set(row[side]) == MEASUREMENT_KEYS
            assert row[side]["steps"] == 3 and row[side]["tokens_per_s"] > 0 and row[side]["peak_mb"] > 0
            assert math.isfinite(row[side]["final_loss"])
        assert row["loss_gap"] < 1e-4, f"{row['model']}: the plain loop did not train the same way"


def test_generate_benchmark_writes_a_table_and_json(tmp_path: Path, text_file: Path) -> None:
    out = tmp_path / "generate.json"
    proc = benchmark(
        tmp_path,
        "generate",
        "--models",
        "bigram",
        "lstm",
        "transformer",
        "--data",
        str(text_file),
        "--tokens",
        "40",
        "--block-size",
        "16",
        "--out",
        str(out),
        "--set",
        *TINY,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "chars/s cached" in proc.stdout
    rows = json.loads(out.read_text())["models"]
    assert [row["model"] for row in rows] == ["bigram", "lstm", "transformer"]
    for row in rows:
        assert row["chars_per_s_cached"] > 0 and row["chars_per_s_uncached"] > 0 and row["speedup"] > 0
        assert row["same_ids"], f"{row['model']}: cached and uncached generation disagree"
    assert rows[-1]["max_context"] == 16  # 40 characters overflow the window: the cache is rebuilt too


def test_benchmark_refuses_a_run_without_timed_steps(tmp_path: Path, text_file: Path) -> None:
    proc = benchmark(tmp_path, "train", "--models", "bigram", "--warmup", "0", "--data", str(text_file))
    assert proc.returncode == 2 and "error: --warmup" in proc.stderr


# What each recipe must say; the header must give its command and what it measured (or that it has not run).
RECIPES = {
    "nanogpt_cpu": {
        "model.n_layer": 4,
        "model.n_head": 4,
        "model.n_embd": 128,
        "model.block_size": 64,
        "data.batch_size": 12,
        "data.sampling": "random",
        "trainer.max_steps": 2000,
        "scheduler.total_steps": 2000,
        "scheduler.min_lr_ratio": 0.1,
        "scheduler.warmup_steps": 100,
        "optimizer.lr": 3e-3,
        "optimizer.weight_decay": 0.1,
        "optimizer.betas": [0.9, 0.99],
        "model.dropout": 0.0,
        "trainer.val_check_interval": 250,
    },
    "nanogpt_shakespeare_char": {
        "model.n_layer": 6,
        "model.n_head": 6,
        "model.n_embd": 384,
        "model.block_size": 256,
        "data.batch_size": 64,
        "trainer.max_steps": 5000,
        "model.dropout": 0.2,
        "optimizer.lr": 1e-3,
        "scheduler.min_lr_ratio": 0.1,
        "scheduler.warmup_steps": 100,
        "trainer.precision": "bf16-mixed",
        "model.compile": True,
        "matmul_precision": "high",
        "optimizer.fused": True,
    },
    "char_rnn_lstm": {
        "model.cell": "lstm",
        "model.num_layers": 2,
        "model.hidden_size": 128,
        "data.sampling": "stream",
        "data.block_size": 50,
        "data.batch_size": 50,
        "optimizer.lr": 2e-3,
    },
}


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_config_composes_into_a_valid_run(name: str) -> None:
    cfg = compose_job(f"experiment={name}")
    check_config(cfg)
    for key, expected in RECIPES.get(name, {}).items():
        value = OmegaConf.select(cfg, key)
        assert (OmegaConf.to_container(value) if OmegaConf.is_config(value) else value) == expected, key
    build_net(OmegaConf.to_container(cfg.model, resolve=True), vocab_size=65)  # the model's arguments are valid
    header = (ROOT / "conf" / "experiment" / f"{name}.yaml").read_text().split("defaults:")[0]
    assert header.startswith("# @package _global_")
    assert f"python scripts/train.py experiment={name}" in header
    assert "Measured" in header or "Not yet run" in header


def test_every_recipe_named_here_exists() -> None:
    assert set(RECIPES) <= set(EXPERIMENTS)


@pytest.mark.slow
def test_compiled_and_eager_transformer_agree_on_cpu() -> None:
    """`model.compile=true` must change speed only: same loss and gradients as eager, within float tolerance.

    Inductor generates and compiles C++ for the CPU: ~15 s of CPU time for this tiny model."""
    with one_compile_thread():
        check_compiled_and_eager_agree()


def check_compiled_and_eager_agree() -> None:
    tiny = ["model=transformer", "data.block_size=16", "model.n_layer=1", "model.n_head=2", "model.n_embd=16"]
    modules = {}
    for compiled in (False, True):
        torch.manual_seed(0)
        modules[compiled] = build_module(compose_job(*tiny, f"model.compile={compiled}"), "abcdefgh")
    modules[True].net.load_state_dict(modules[False].net.state_dict())  # compile in place keeps the names
    x, y = torch.randint(0, 8, (2, 4, 16), generator=torch.Generator().manual_seed(1))
    losses = {}
    for compiled, module in modules.items():
        logits, _ = module(x)
        losses[compiled] = F.cross_entropy(logits.reshape(-1, 8), y.reshape(-1))
        losses[compiled].backward()
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-5, atol=1e-5)
    for (name, eager), compiled in zip(
        modules[False].net.named_parameters(), modules[True].net.parameters(), strict=True
    ):
        torch.testing.assert_close(compiled.grad, eager.grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_fused_adamw_gradients_are_clipped(precision: str) -> None:
    """The GPU recipe's fused AdamW + grad clipping: Lightning refuses it under bf16-mixed unless the
    module clips itself, which is right there because bf16 has no GradScaler (runs on CPU too)."""
    torch.manual_seed(0)
    cfg = compose_job(
        "model=transformer",
        "data.block_size=16",
        "model.n_layer=1",
        "model.n_head=2",
        "model.n_embd=16",
        "optimizer.fused=true",
    )
    module = build_module(cfg, "abcdefgh")
    module.trainer = L.Trainer(
        accelerator="cpu",
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"]
    logits, _ = module(torch.randint(0, 8, (2, 16)))
    (1e4 * logits.square().mean()).backward()  # gradients far above the clip value
    module.configure_gradient_clipping(optimizer, 1.0, "norm")
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in module.parameters() if p.grad is not None]))
    assert norm <= 1.0 + 1e-4


def test_gpu_recipe_precision_trains_on_cpu_and_checkpoints_float32_weights(tmp_path: Path) -> None:
    """bf16-mixed with fused AdamW and clipping, the GPU recipe's settings, through the real command."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    run = tmp_path / "run"
    done = train_command(
        run,
        *tiny_overrides("transformer"),
        f"data.path={corpus}",
        "trainer.precision=bf16-mixed",
        "optimizer.fused=true",
        "trainer.gradient_clip_val=1.0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    weights = [v for v in checkpoint["state_dict"].values() if v.is_floating_point()]
    assert weights and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)
    assert checkpoint["global_step"] == 6


@pytest.mark.slow
def test_compiled_transformer_generates_what_eager_generates() -> None:
    """Sampling after each validation runs the compiled net with a key/value cache and past block_size.

    ~20 s of CPU time: every cache length and the window jump are new shapes for the compiler."""
    with one_compile_thread():
        check_compiled_generation()


def check_compiled_generation() -> None:
    torch.manual_seed(0)
    nets = [TransformerLM(vocab_size=8, block_size=16, n_layer=1, n_head=2, n_embd=16) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    nets[1].compile()
    prompt = torch.tensor([[1, 2]])
    eager, compiled = (generate_ids(net.eval(), prompt, 24, SamplingOptions(), seed=0) for net in nets)
    assert compiled.shape == (1, 26)  # past block_size: the window jumped once
    assert torch.equal(compiled, eager)


SCALE_COLUMNS = ["corpus", "size MB", "chars", "vocab", "dtype", "prep s", "step1 s 1st", "step1 s 2nd"]


@pytest.mark.slow
def test_scale_benchmark_trains_each_corpus_twice_and_reports_memory(tmp_path: Path, text_file: Path) -> None:
    """Two real training runs per corpus (a baseline and a 200 KB one built from text on the machine):
    the first prepares into an empty cache, the second maps what the first prepared."""
    out = tmp_path / "scale.json"
    tiny = [o for o in CONFTEST_TINY if not o.startswith("model.n_")]  # the default model is the LSTM
    proc = benchmark(
        tmp_path, "scale", "--sizes", "200KB", "--baseline", str(text_file), "--out", str(out), "--set", *tiny
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header = proc.stdout.splitlines()[0]
    assert all(column in header for column in [*SCALE_COLUMNS, "RSS MB 1st", "ΔRSS 2nd"])
    payload = json.loads(out.read_text())
    baseline, generated = payload["rows"]
    assert (baseline["corpus"], generated["corpus"]) == ("corpus", "200KB")
    assert 190_000 < generated["bytes"] <= 200_000 and generated["characters"] > 150_000
    assert generated["vocab"] > 30 and generated["dtype"] in ("uint8", "uint16", "int32")
    for row in payload["rows"]:
        assert not row["first"]["mapped"] and row["second_mapped"], "the second run must reuse the cache"
        assert row["prep_s"] is not None and row["prep_s"] < 30
        for run in (row["first"], row["second"]):
            assert 0 < run["first_step_s"] < run["wall_s"] < 300
            assert 100 < run["peak_rss_mb"] < 8000 and run["vocab"] == row["vocab"]
    assert baseline["second"]["delta_rss_mb"] == 0 and generated["second"]["delta_rss_mb"] is not None
    assert set(generated["goals"]) == {"prep_ok", "rss_ok", "startup_ok"}
    assert "200KB: prep yes" in proc.stdout


def test_scale_benchmark_refuses_a_size_it_cannot_read(tmp_path: Path) -> None:
    proc = benchmark(tmp_path, "scale", "--sizes", "ten", "--baseline", "none")
    assert proc.returncode != 0 and "--sizes 'ten' is not a size" in proc.stderr
