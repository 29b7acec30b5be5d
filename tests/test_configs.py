"""Every option of every config group composes into a config the code accepts."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from charlm.config import check_config
from charlm.models import ARCHITECTURES

from conftest import ROOT, compose_train

CONF = ROOT / "conf"
NOT_GROUPS = {"hydra"}  # Hydra's own config tree, exercised by the sweep tests
BASE = "base"  # GROUP/base/NAME.yaml: what a group's options share, reached through their defaults lists


def group_options() -> list[tuple[str, str]]:
    options = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if rel.parent == Path("."):  # a command's primary config (train.yaml, generate.yaml, ...), no group's
            continue
        group = rel.parent.as_posix()
        if group.split("/")[0] in NOT_GROUPS or rel.parent.name == BASE:
            continue
        options.append((group, rel.stem))
    return options


@pytest.mark.parametrize(("group", "option"), group_options())
def test_every_group_option_composes_and_resolves(group, option, tmp_path):
    overrides = [f"{group}={option}", f"hydra.run.dir={tmp_path}"]
    if group == "data":
        overrides.append(f"data.path={tmp_path}")
    if group == "model" and option == "seq2seq":
        overrides.append("data=pairs")
    if group in ("data",) and option == "pairs":
        overrides.append("model=seq2seq")
    cfg = compose_train(overrides, hydra=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)  # what a real launch fills in
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output_dir"] == str(tmp_path)
    check_config(cfg)


def test_generate_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("generate", overrides=["ckpt_path=x", "top_k=5"])
    assert cfg.top_k == 5 and cfg.temperature == 1.0


def test_main_config_names_are_kept():
    """Names that users, docs and checks rely on."""
    cfg = compose_train([f"hydra.run.dir={ROOT / 'outputs' / 'unused'}"], hydra=True)
    for key in (
        "data.path",
        "data.block_size",
        "data.batch_size",
        "data.sampling",
        "model.hidden_size",
        "model.num_layers",
        "model.dropout",
        "model.impl",
        "optimizer.lr",
        "seed",
        "ckpt_path",
        "callbacks.model_checkpoint.every_n_train_steps",
        "trainer.max_steps",
        "trainer.devices",
    ):
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key
    transformer = compose_train(["model=transformer", f"hydra.run.dir={ROOT / 'outputs' / 'unused'}"], hydra=True)
    for key in ("model.n_layer", "model.n_head", "model.n_embd"):
        assert OmegaConf.select(transformer, key, default="<absent>") != "<absent>", key


@pytest.mark.parametrize("name", ["trainer/default.yaml", "callbacks/default.yaml", "model/base/recurrent.yaml"])
def test_every_key_of_the_trainer_callback_and_recurrent_defaults_has_a_comment(name):
    uncommented = [
        line
        for line in (CONF / name).read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#") and " #" not in line
    ]
    assert uncommented == []


def test_evaluate_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["ckpt_path=x", "context=stream"])
    assert cfg.context == "stream" and cfg.split == "val" and cfg.unknown == "error" and not cfg.dynamic_eval


def test_the_speedrun_composes_to_its_recorded_recipe():
    cfg = compose_train(["experiment=speedrun_cpu"])
    check_config(cfg)
    assert cfg.model._target_ == "charlm.models.RecurrentLM" and cfg.model.cell == "lstm"
    assert cfg.averaging._target_ == "charlm.callbacks.WeightEMA" and cfg.averaging.decay == 0.999
    assert (cfg.trainer.max_steps, cfg.optimizer.lr) == (4200, 3.0e-3)
    assert cfg.trainer.max_steps % cfg.trainer.val_check_interval == 0  # its last step is a full validation
    assert cfg.trainer.limit_val_batches == 1.0 and cfg.data.val_max_chars >= 0.1 * 1_115_394  # the whole val split


# ---- configs inherit instead of repeating

RECURRENT = ["rnn", "lstm", "gru"]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
SEARCHES = sorted(p.stem for p in (CONF / "hparams_search").glob("*.yaml"))
# Keys an experiment names although they equal the default it composes on, and why.
PINNED = {
    ("nanogpt_cpu", "optimizer.betas"): "AdamW-only: with optimizer=muon, ~optimizer.betas removes it",
    ("nanogpt_shakespeare_char", "optimizer.betas"): "AdamW-only: with optimizer=muon, ~optimizer.betas removes it",
}


def flat(container: dict) -> dict:
    """A nested dict as {dotted key: leaf value}."""
    leaves: dict = {}

    def walk(value, prefix):
        if isinstance(value, dict) and value:
            for key, inner in value.items():
                walk(inner, f"{prefix}{key}.")
        else:
            leaves[prefix[:-1]] = value

    walk(container, "")
    return leaves


def own_keys(path: Path) -> dict:
    """A config file's own values (its defaults list left out), as dotted keys."""
    node = OmegaConf.load(path)
    with open_dict(node):
        node.pop("defaults", None)
    return flat(OmegaConf.to_container(node))


def group_choices(path: Path) -> list[str]:
    """`override /model: lstm` entries of a file's defaults list, as `model=lstm` overrides."""
    entries = OmegaConf.to_container(OmegaConf.load(path)).get("defaults", [])
    return [
        f"{key.removeprefix('override /')}={value}"
        for entry in entries
        if isinstance(entry, dict)
        for key, value in entry.items()
        if key.startswith("override /") and not key.startswith("override /hydra")
    ]


def test_shared_bases_are_no_options_of_their_group():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        registered = sorted(name for arch in ARCHITECTURES.values() for name in arch.configs)
        assert loader.get_group_options("model") == registered
        assert loader.get_group_options("hparams_search") == SEARCHES == ["optuna", "optuna_transformer"]


@pytest.mark.parametrize("cell", RECURRENT)
def test_the_recurrent_models_name_their_cell_on_one_shared_base(cell):
    assert own_keys(CONF / "model" / f"{cell}.yaml") == {"cell": cell}
    base = own_keys(CONF / "model" / "base" / "recurrent.yaml")
    composed = OmegaConf.to_container(compose_train([f"model={cell}"]).model)
    assert list(composed) == list(base)  # the base's keys, in the base's order
    assert composed == {**base, "cell": cell}


def test_the_recurrent_base_leaves_the_cell_to_its_options():
    assert OmegaConf.load(CONF / "model" / "base" / "recurrent.yaml")._get_node("cell")._is_missing()


@pytest.mark.parametrize("search", SEARCHES)
def test_the_optuna_searches_hold_only_their_model_and_params_on_one_shared_base(search):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    path = CONF / "hparams_search" / f"{search}.yaml"
    assert "base/optuna" in OmegaConf.load(path).defaults
    assert all(key.startswith("hydra.sweeper.params.") for key in own_keys(path))  # a search's own: its params
    assert [choice.split("=")[0] for choice in group_choices(path)] == ["model"]
    cfg = compose_train([f"hparams_search={search}"], hydra=True)
    composed = flat(OmegaConf.to_container(cfg, enum_to_str=True))
    base = own_keys(CONF / "hparams_search" / "base" / "optuna.yaml")
    assert {key: composed.get(key) for key in base} == base
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert {key: value for key, value in composed.items() if key.startswith("hydra.sweeper.params.")} == own_keys(path)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiments_restate_no_defaults(name):
    """An experiment holds what it changes: each of its values differs from the config composed from the
    same group choices without it (PINNED lists the exceptions, with their reasons)."""
    path = CONF / "experiment" / f"{name}.yaml"
    choices = group_choices(path)
    assert any(choice.startswith("model=") for choice in choices)  # a recipe names its model
    without = compose_train(choices)
    restated = []
    for key, value in own_keys(path).items():
        default = OmegaConf.select(without, key, default="<absent>")
        if OmegaConf.is_config(default):
            default = OmegaConf.to_container(default)
        if default == value and (name, key) not in PINNED:
            restated.append(key)
    assert restated == []
    assert all(key in own_keys(path) for (experiment, key) in PINNED if experiment == name)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_header_gives_its_command_and_its_measured_result(name):
    header = (CONF / "experiment" / f"{name}.yaml").read_text(encoding="utf-8").split("\ndefaults:")[0]
    assert f"python scripts/train.py experiment={name}" in header
    assert "Measured" in header or "Not yet run" in header or "not measured" in header
