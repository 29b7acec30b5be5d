"""Train a character-level language model: python scripts/train.py model=lstm trainer.devices=1"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from charlm.cli import ConfigSource, flags_first, run_app
from charlm.errors import exit_on_user_error
from charlm.resume import expand_resume
from charlm.train import train

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


def cli() -> None:
    """resume=RUN_DIR is shorthand for that run's overrides; Hydra's flags may stand anywhere."""
    run_app(main, ConfigSource(str(CONFIG_DIR), "train"), rewrite=lambda argv: flags_first(expand_resume(argv)))


if __name__ == "__main__":
    cli()
