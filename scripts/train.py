"""Train a character-level language model: python scripts/train.py model=lstm trainer.devices=1"""

import sys

import hydra
from omegaconf import DictConfig

from charlm.errors import exit_on_user_error
from charlm.resume import expand_resume
from charlm.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    sys.argv = exit_on_user_error(expand_resume)(sys.argv)  # resume=RUN_DIR shorthand
    main()
