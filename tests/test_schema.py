"""The config schema: every shipped config passes; a misspelt key or a wrongly typed value is refused
with one line naming it (and the closest valid key), whether it comes from an override or a user's own YAML."""

import re
from pathlib import Path

import pytest

from charlm import CharLMError
from charlm.config import check_config
from charlm.models import language_models
from charlm.options import target_schema

from conftest import ROOT, compose_train, run_command

CONF = ROOT / "conf"
LM_MODELS = language_models()
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
MINE = "# @package _global_\nscheduler:\n  warmup_step: 500\n"


def user_experiment(config_dir: Path, text: str) -> Path:
    """A user's own `--config-dir` with experiment/mine.yaml."""
    (config_dir / "experiment").mkdir(parents=True, exist_ok=True)
    (config_dir / "experiment" / "mine.yaml").write_text(text)
    return config_dir


def refusal(overrides: list[str]) -> str:
    cfg = compose_train(overrides)
    with pytest.raises(CharLMError) as err:
        check_config(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    "overrides",
    [[f"model={m}"] for m in LM_MODELS]
    + [["model=seq2seq", "data=pairs"], ["data=text"]]
    + [[f"experiment={e}"] for e in EXPERIMENTS]
    + [[f"trainer={t}"] for t in ("gpu", "ddp", "debug", "cpu")]
    + [["logger=none"]],
    ids=lambda o: ",".join(o),
)
def test_every_shipped_config_passes_the_schema(overrides):
    check_config(compose_train(overrides))


@pytest.mark.parametrize("search", SEARCHES)
def test_every_hparams_search_passes_the_schema(search):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    check_config(compose_train([f"hparams_search={search}"]))


def test_every_shipped_target_has_a_key_schema_unless_it_takes_kwargs():
    found = {
        m.group(1)
        for path in CONF.rglob("*.yaml")
        if path.relative_to(CONF).parts[0] not in ("hydra", "hparams_search")  # Hydra's own nodes
        for m in re.finditer(r"^\s*_target_:\s*(\S+)", path.read_text(), re.MULTILINE)
    }
    # both pass **kwargs on (to TensorBoard's SummaryWriter, to wandb.init): any key may be meant
    kwargs_only = {"lightning.pytorch.loggers.TensorBoardLogger", "lightning.pytorch.loggers.WandbLogger"}
    assert {t for t in found if target_schema(t) is None} == kwargs_only


def test_a_misspelt_key_in_a_users_experiment_file_is_refused_with_the_closest_key(tmp_path):
    user = user_experiment(tmp_path, MINE)
    message = refusal([f"hydra.searchpath=[file://{user}]", "experiment=mine"])
    assert message == "unknown key 'scheduler.warmup_step' (did you mean scheduler.warmup_steps?)"


def test_the_correct_spelling_in_a_users_experiment_file_passes(tmp_path):
    user = user_experiment(tmp_path, MINE.replace("warmup_step:", "warmup_steps:"))
    cfg = compose_train([f"hydra.searchpath=[file://{user}]", "experiment=mine"])
    check_config(cfg)
    assert cfg.scheduler.warmup_steps == 500


@pytest.mark.parametrize(
    ("override", "key", "suggestion"),
    [
        ("+model.hidden_sise=64", "model.hidden_sise", "model.hidden_size"),
        ("+model.n_embed=64", "model.n_embed", "model.n_embd"),
        ("+data.batch_sise=8", "data.batch_sise", "data.batch_size"),
        ("+optimizer.weight_decy=0.0", "optimizer.weight_decy", "optimizer.weight_decay"),
        (
            "+callbacks.sample_text.max_new_token=5",
            "callbacks.sample_text.max_new_token",
            "callbacks.sample_text.max_new_tokens",
        ),
        ("+trainer.max_step=5", "trainer.max_step", "trainer.max_steps"),
        ("+logger.tensorboard.sav_dir=x", "logger.tensorboard.sav_dir", None),  # TensorBoardLogger takes **kwargs
        ("+threds=2", "threds", "threads"),
    ],
)
def test_misspelt_keys_are_refused_with_the_closest_valid_key(override, key, suggestion):
    model = ["model=transformer"] if key.startswith("model.n_") else []
    if suggestion is None:  # a node whose constructor takes **kwargs has no key check
        check_config(compose_train([*model, override]))
        return
    assert refusal([*model, override]) == f"unknown key {key!r} (did you mean {suggestion}?)"


def test_an_unknown_key_with_nothing_close_is_refused_without_a_suggestion():
    assert refusal(["+banana=1"]) == "unknown key 'banana'"


def test_keys_the_code_consumes_before_the_constructor_are_allowed():
    check_config(compose_train(["model=transformer", "model.compile=true", "model.block_size=64"]))


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("scheduler.warmup_steps=abc", "scheduler.warmup_steps='abc' is not valid: expected an integer"),
        ("scheduler.min_lr_ratio=high", "scheduler.min_lr_ratio='high' is not valid: expected a number"),
        ("trainer.max_steps=abc", "trainer.max_steps='abc' is not valid: expected an integer"),
        ("data.block_size=1.5", "data.block_size=1.5 is not valid: expected an integer"),
        ("model.dropout=none", "model.dropout='none' is not valid: expected a number"),
        ("optimizer.lr=fast", "optimizer.lr='fast' is not valid: expected a number"),
        ("seed=true", "seed=True is not valid: expected an integer"),
        ("callbacks.model_checkpoint.every_n_train_steps=x", "every_n_train_steps='x' is not valid"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused(override, needle):
    assert needle in refusal([override])


def test_the_cli_refuses_a_misspelt_key_in_a_users_config_dir_before_training(tmp_path):
    user = user_experiment(tmp_path / "mine", MINE)
    run = tmp_path / "run"
    done = run_command("train.py", "--config-dir", str(user), "experiment=mine", f"hydra.run.dir={run}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "unknown key 'scheduler.warmup_step' (did you mean scheduler.warmup_steps?)" in errors[0]
    assert not (run / "checkpoints").exists()
