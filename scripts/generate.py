"""Sample text from a checkpoint: python scripts/generate.py ckpt_path=RUN_DIR prompt="To be, or not to be"

prompt=, input=, prompt_file= and input_file= take their text exactly as the shell gives it.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from charlm.cli import ConfigSource, flags_first, run_app, verbatim
from charlm.errors import exit_on_user_error
from charlm.generate import TEXT_KEYS, run

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="generate")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    run(cfg)


def cli() -> None:
    """Text arguments are taken verbatim; Hydra's flags may stand anywhere."""
    configs = ConfigSource(str(CONFIG_DIR), "generate")
    run_app(main, configs, rewrite=lambda argv: flags_first(verbatim(argv, TEXT_KEYS)))


if __name__ == "__main__":
    cli()
