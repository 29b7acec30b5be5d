"""Shared fixtures: small generated corpora and a way to run the real command-line scripts."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from charlm.models import language_models

ROOT = Path(__file__).resolve().parents[1]
SHARED_SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"

# Overrides that make any model tiny and any run a few seconds long.
TINY = [
    "data.block_size=16",
    "data.batch_size=4",
    "data.val_batch_size=8",
    "model.hidden_size=16",
    "model.num_layers=1",
    "model.embedding_dim=8",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=16",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.log_every_n_steps=1",
    "callbacks.model_checkpoint.every_n_train_steps=2",
    "callbacks.sample_text.max_new_tokens=20",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "threads=1",
]
MODELS = language_models()  # every model= option that continues text, from the registry


def compose_train(overrides: list[str], hydra: bool = False) -> DictConfig:
    """The training config composed from conf/ as the command would, without running anything
    (`hydra=True` also returns the `hydra` node, for checks that resolve it)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("train", overrides=overrides, return_hydra_config=hydra)


def train_in_process(run_dir: Path, *overrides: str) -> float | None:
    """The train job on the config the command line would compose, run in this process (no start-up cost):
    what `python scripts/train.py hydra.run.dir=RUN_DIR OVERRIDES` does once Hydra has composed."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from charlm.jobs.train import train

    cfg = compose_train([f"hydra.run.dir={run_dir}", *overrides], hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    return train(cfg)


def tiny_overrides(model: str) -> list[str]:
    """TINY less the model keys this architecture's config does not have."""
    model_cfg = compose_train([f"model={model}"]).model
    kept = [o for o in TINY if not o.startswith("model.") or o.split("=")[0].removeprefix("model.") in model_cfg]
    return [f"model={model}", *kept]


def make_text(n_chars: int = 6000, seed: int = 0) -> str:
    """A play-shaped text: speaker names, line breaks and a small vocabulary, deterministic."""
    rng = random.Random(seed)
    words = "the king and queen shall speak of love to thee my lord what is this now good sir".split()
    speakers = ["ROMEO", "JULIET", "KING", "NURSE"]
    parts = []
    while sum(map(len, parts)) < n_chars:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 9)))
        parts.append(f"{rng.choice(speakers)}:\n{line.capitalize()}.\n\n")
    return "".join(parts)[:n_chars]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own data cache: nothing is read from or written to the user's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CHARLM_CACHE", str(cache))
    return cache


def run_script(
    script: str, *args: str, timeout: float = 240, env: dict | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run scripts/<script> as a user would; returns the finished process (never raises on failure)."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


def train_cli(run_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_script("train.py", f"hydra.run.dir={run_dir}", *args, **kwargs)


@pytest.fixture
def one_thread():
    """One torch thread, for modules of tiny nets (`pytestmark = pytest.mark.usefixtures("one_thread")`):
    they gain nothing from more, and on a shared machine the extra threads only wait."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def overfit_losses(net, x, y, lr: float, steps: int = 150) -> list[float]:
    """The loss at each of `steps` AdamW steps on one fixed batch, x and y (B, T): a net that can learn
    drives it far below where it started."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        logits, _ = net(x)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses
