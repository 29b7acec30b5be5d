"""Sample text from a checkpoint: python scripts/generate.py ckpt_path=RUN_DIR prompt="ROMEO:" """

import hydra
from omegaconf import DictConfig

from charlm.errors import exit_on_user_error
from charlm.generate import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
