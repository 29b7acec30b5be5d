"""The schedule's defaults are written once (conf/scheduler/default.yaml) and every caller reads them there."""

from __future__ import annotations

from omegaconf import OmegaConf

from charlm.schedule import ScheduleSettings, WarmupCosine, defaults, lr_factor

from conftest import compose_train


def test_a_training_config_composes_the_schedule_defaults_from_their_one_file():
    cfg = compose_train([])
    assert OmegaConf.to_container(cfg.scheduler) == defaults()


def test_a_schedule_given_no_settings_takes_the_config_files_defaults():
    factor = lr_factor(None, max_steps=1000)
    assert isinstance(factor, WarmupCosine)
    assert (factor.warmup_steps, factor.min_ratio, factor.total_steps) == (
        defaults()["warmup_steps"],
        defaults()["min_lr_ratio"],
        1000,
    )


def test_settings_given_override_the_defaults_key_by_key():
    settings = ScheduleSettings.of({"warmup_steps": 7})
    assert settings.warmup_steps == 7 and settings.min_lr_ratio == defaults()["min_lr_ratio"]


def test_the_scheduler_group_can_be_chosen_and_overridden_like_any_other():
    cfg = compose_train(["scheduler=default", "scheduler.min_lr_ratio=0.02"])
    assert cfg.scheduler.min_lr_ratio == 0.02 and cfg.scheduler.warmup_steps == defaults()["warmup_steps"]
