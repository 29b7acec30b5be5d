"""The commands: `charlm-train`, `-generate`, `-evaluate`, `-inspect`, `-benchmark` (and `scripts/*.py`).

Each is a Hydra app over the configs installed with the package (`pkg://charlm.conf`), so it
works from any directory; `--config-dir DIR` adds a user's own configs. Nothing here imports
torch or Lightning: `--help`, `--cfg job` and tab completion answer at once, and Lightning is
first imported after Hydra has set up logging, so its messages reach the run's log file too.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from charlm.cli.argv import ConfigSource, exit_on_user_error, flags_first, run_app
from charlm.overrides import verbatim

CONFIGS = "pkg://charlm.conf"
TEXT_KEYS = ("prompt", "prompt_file", "input", "input_file")  # free text and paths: taken verbatim
PATH_KEYS = ("ckpt_path", "text_file")  # paths, taken verbatim too (spaces, commas, '=': run dirs have them)
COMMANDS = {
    "charlm-train": "train a model: charlm-train model=lstm (python scripts/train.py)",
    "charlm-generate": "sample text from a checkpoint: charlm-generate ckpt_path=RUN prompt=... (scripts/generate.py)",
    "charlm-evaluate": "score a text (loss, bits per character): charlm-evaluate ckpt_path=RUN (scripts/evaluate.py)",
    "charlm-inspect": "look inside a model (surprise, neurons, attention) as one HTML page (scripts/inspect.py)",
    "charlm-benchmark": "throughput against plain PyTorch, corpus scale: charlm-benchmark train|generate|scale",
}


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="train")
@exit_on_user_error
def train_job(cfg: DictConfig) -> float | None:
    from charlm.console import stdout_to_stderr
    from charlm.jobs.train import train

    with stdout_to_stderr():  # training prints nothing on stdout: bars and tables of fit, validate, test alike
        return train(cfg)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="generate")
@exit_on_user_error
def generate_job(cfg: DictConfig) -> None:
    from charlm.jobs.generate import run

    run(cfg)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="evaluate")
@exit_on_user_error
def evaluate_job(cfg: DictConfig) -> None:
    from charlm.jobs.evaluate import run

    run(cfg)


@hydra.main(version_base="1.3", config_path=CONFIGS, config_name="inspect")
@exit_on_user_error
def inspect_job(cfg: DictConfig) -> None:
    from charlm.jobs.inspect import run

    run(cfg)


def train_cli() -> None:
    """resume=RUN_DIR is shorthand for that run's overrides; Hydra's flags may stand anywhere. Under
    torchrun or srun every rank trains into the one run directory rank 0 chose (charlm.cli.launch)."""
    from charlm.cli.launch import share_launch
    from charlm.cli.resume import expand_resume

    configs = ConfigSource(CONFIGS, "train")
    run_app(train_job, configs, rewrite=lambda argv: share_launch(flags_first(expand_resume(argv)), configs))


def generate_cli() -> None:
    """prompt=, input= and the file arguments are taken verbatim; Hydra's flags may stand anywhere."""
    configs = ConfigSource(CONFIGS, "generate")
    keys = (*TEXT_KEYS, *PATH_KEYS, "attention_png")
    run_app(generate_job, configs, rewrite=lambda argv: flags_first(verbatim(argv, keys)))


def evaluate_cli() -> None:
    configs = ConfigSource(CONFIGS, "evaluate")
    run_app(evaluate_job, configs, rewrite=lambda argv: flags_first(verbatim(argv, PATH_KEYS)))


def inspect_cli() -> None:
    """text= and the paths (text_file=, output=) are taken verbatim; Hydra's flags may stand anywhere."""
    configs = ConfigSource(CONFIGS, "inspect")
    run_app(inspect_job, configs, rewrite=lambda argv: flags_first(verbatim(argv, ("text", *PATH_KEYS, "output"))))


def benchmark_cli() -> None:
    def job() -> None:
        from charlm.tooling.benchmark import main

        main()

    run_app(job, ConfigSource(CONFIGS, "train"), hydra_flags=False)


def main() -> None:
    """`python -m charlm`: what is installed."""
    print("charlm: character-level language models. Commands:")
    for name, what in COMMANDS.items():
        print(f"  {name:<17} {what}")
    print("Each takes --help.")
    sys.exit(0)
