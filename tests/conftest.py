"""Shared fixtures: small generated corpora, and two ways to run the command-line scripts: in this process
(`run_command`, `train_command`: what the script runs, without its start-up cost) and as a user does, in a
process of its own (`run_script`, `train_script`: for what only a real process shows)."""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import random
import signal
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from charlm.models import language_models

ROOT = Path(__file__).resolve().parents[1]

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

    with process_state_kept():
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
    """Run scripts/<script> as a user would, in a process of its own; returns the finished process (never
    raises on failure). For what only a real process shows: start-up, signals, kills, launchers."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
        cwd=cwd or ROOT,
    )


def train_script(run_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    return run_script("train.py", f"hydra.run.dir={run_dir}", *args, **kwargs)


def command_entry_point(script: str):
    """The function scripts/<script> calls (charlm.cli.app's `*_cli`, the same as the installed commands)."""
    from charlm.cli import app

    return getattr(app, f"{script.removesuffix('.py')}_cli")


@contextlib.contextmanager
def process_state_kept() -> Iterator[None]:
    """Whatever a command changes in its process is put back afterwards, so that commands run in this process
    neither see each other nor the test around them: environment, argv, working directory, torch's threads,
    dtype, RNGs and flags, Hydra's singletons, every logger's handlers and level, the SIGINT/SIGTERM handlers,
    warning filters and charlm's note of the current run directory."""
    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins
    from hydra.core.singleton import Singleton

    from charlm.cli import rundir

    environ, argv, stdin, path, cwd = dict(os.environ), list(sys.argv), sys.stdin, list(sys.path), os.getcwd()
    threads, dtype, matmul = torch.get_num_threads(), torch.get_default_dtype(), torch.get_float32_matmul_precision()
    deterministic, anomaly = torch.are_deterministic_algorithms_enabled(), torch.is_anomaly_enabled()
    grad = torch.is_grad_enabled()
    rngs = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    # copies: Hydra initialises the GlobalHydra object it finds in place
    singletons = {k: v if k is Plugins else copy.deepcopy(v) for k, v in Singleton._instances.items()}
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    loggers = {
        name: (logger.level, list(logger.handlers), list(logger.filters), logger.propagate, logger.disabled)
        for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    disabled = logging.root.manager.disable
    try:
        with warnings.catch_warnings():
            yield
    finally:
        os.environ.clear()
        os.environ.update(environ)
        sys.argv[:], sys.stdin, sys.path[:] = argv, stdin, path
        os.chdir(cwd)
        torch.set_num_threads(threads)
        torch.set_default_dtype(dtype)
        torch.set_float32_matmul_precision(matmul)
        torch.use_deterministic_algorithms(deterministic)
        torch.set_anomaly_enabled(anomaly)
        torch.set_grad_enabled(grad)
        random.setstate(rngs[0])
        np.random.set_state(rngs[1])
        torch.random.set_rng_state(rngs[2])
        GlobalHydra.instance().clear()
        Singleton._instances.clear()
        Singleton._instances.update(singletons)
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
        kept = {id(h) for state in loggers.values() for h in state[1]}
        for name, (level, handlers_, filters, propagate, was_disabled) in loggers.items():
            logger = logging.getLogger(name or None)
            for handler in logger.handlers:
                if id(handler) not in kept:
                    handler.close()  # the run's log file, its console handler
            logger.setLevel(level)
            logger.handlers[:], logger.filters[:] = handlers_, filters
            logger.propagate, logger.disabled = propagate, was_disabled
        logging.disable(disabled)
        rundir.forget_run_dir()


def run_command(
    script: str, *args: str, env: dict | None = None, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess:
    """What `python scripts/<script> ARGS` does, run in this process: the same entry point with the same argv,
    environment and working directory, its exit status, stdout and stderr (an uncaught exception's traceback
    too, with status 1) returned as `run_script` returns them. Nothing it changes in the process outlives it."""
    out, err = io.StringIO(), io.StringIO()
    code = 0
    with process_state_kept():
        os.environ.update({"HYDRA_FULL_ERROR": "0", **(env or {})})
        os.chdir(cwd or ROOT)
        sys.argv[:] = [str(ROOT / "scripts" / script), *args]
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                command_entry_point(script)()
            except SystemExit as exit_:
                if isinstance(exit_.code, str):
                    print(exit_.code, file=sys.stderr)
                code = 1 if isinstance(exit_.code, str) else exit_.code or 0
            except Exception:
                traceback.print_exc()
                code = 1
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


def train_command(run_dir: Path, *args: str, **kwargs) -> subprocess.CompletedProcess:
    """`python scripts/train.py hydra.run.dir=RUN_DIR ARGS`, in this process (`run_command`)."""
    return run_command("train.py", f"hydra.run.dir={run_dir}", *args, **kwargs)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """`trained_run(model)`: a run directory of that model trained with TINY on `make_text()` (the `corpus`
    fixture's text), trained once per session in this process and shared by the tests that only read it
    (copy it to write into it)."""
    runs: dict[str, Path] = {}

    def get(model: str) -> Path:
        if model not in runs:
            root = tmp_path_factory.mktemp(f"trained-{model}")
            corpus = root / "corpus.txt"
            corpus.write_text(make_text(), encoding="utf-8")
            env = {"CHARLM_CACHE": str(root / "cache")}
            done = train_command(root / "run", *tiny_overrides(model), f"data.path={corpus}", env=env)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[model] = root / "run"
        return runs[model]

    return get


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


def tiny_net(model: str, vocab_size: int, *overrides: str):
    """A freshly initialised net of a `model=` option at the tiny test sizes, built through the registry
    as training builds it: shared tests cover every registered architecture, a new one included."""
    from omegaconf import OmegaConf

    from charlm.lightning_module import build_net

    cfg = compose_train([*tiny_overrides(model), *overrides])
    return build_net(OmegaConf.to_container(cfg.model, resolve=True), vocab_size)
