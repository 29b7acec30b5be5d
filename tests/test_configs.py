"""Every option of every config group composes into a config the code accepts."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from charlm.config import check_config

from conftest import ROOT, compose_train

CONF = ROOT / "conf"
PRIMARY = {"train.yaml", "generate.yaml", "evaluate.yaml"}
NOT_GROUPS = {"hydra"}  # Hydra's own config tree, exercised by the sweep tests


def group_options() -> list[tuple[str, str]]:
    options = []
    for path in sorted(CONF.rglob("*.yaml")):
        rel = path.relative_to(CONF)
        if rel.name in PRIMARY and rel.parent == Path("."):
            continue
        group = rel.parent.as_posix()
        if group.split("/")[0] in NOT_GROUPS:
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


@pytest.mark.parametrize("name", ["trainer/default.yaml", "callbacks/default.yaml"])
def test_every_key_of_the_trainer_and_callback_defaults_has_a_comment(name):
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
