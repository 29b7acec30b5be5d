"""DDP inside a Hydra multirun: the extra ranks must re-run this job, not the whole sweep.

Lightning's `ddp` strategy starts ranks 1..N-1 by running the command line again with
`hydra.run.dir=<hydra.run.dir>` added (`_hydra_subprocess_cmd`). In a single run that puts every
rank in the one run directory. In a multirun the command line is the whole sweep
(`-m model=lstm,gru ...`) and `hydra.run.dir` is not the job's directory, so each extra rank would
start a sweep of its own (Lightning #11300). `ddp_fit` makes the command line this job's
overrides and `hydra.run.dir` this job's directory for the length of `fit`, then puts back what
Lightning changed in this process (the process group, MASTER_PORT, LOCAL_RANK ...), which would
otherwise make the next DDP job of the sweep believe its ranks already exist.

Only the basic launcher runs jobs in the process that read the command line. Under joblib or
submitit there is no command line to re-run, so DDP that starts its own ranks is refused there;
under SLURM (hydra/launcher=slurm with tasks_per_node = trainer.devices) srun starts the ranks
and nothing is re-run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import lightning as L
import torch
from hydra._internal.utils import get_args_parser
from hydra.core.hydra_config import HydraConfig
from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher
from omegaconf import DictConfig, OmegaConf, read_write

from charlm.errors import CharLMError
from charlm.hydra_run import in_multirun

# what Lightning's launcher sets in this process's environment (see _call_children_scripts)
LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "OMP_NUM_THREADS")
BASIC_LAUNCHER = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def starts_ranks_by_rerunning(trainer: L.Trainer) -> bool:
    """Whether `fit` will start more processes by re-running the script (strategy=ddp, devices > 1)."""
    launcher = trainer.strategy.launcher
    return (
        isinstance(launcher, _SubprocessScriptLauncher)
        and launcher.num_processes > 1
        and not launcher.cluster_environment.creates_processes_externally
    )


def job_command_line(argv: list[str], hydra: DictConfig) -> list[str]:
    """This job as a single run: the script, its config options and the job's own overrides (no -m)."""
    args = get_args_parser().parse_args(argv[1:])
    options = [
        (flag, value)
        for flag, value in (
            ("--config-path", args.config_path),
            ("--config-name", args.config_name),
            ("--config-dir", args.config_dir),
        )
        if value
    ]
    return [argv[0], *(item for option in options for item in option), *hydra.overrides.task]


def end_ranks(launcher: _SubprocessScriptLauncher, kill: bool, timeout: float = 60.0) -> None:
    """Wait for the ranks this job started; after a failure kill them, as they would wait in a collective."""
    for proc in launcher.procs:
        try:
            if kill:
                proc.kill()
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def ddp_fit(trainer: L.Trainer) -> Iterator[None]:
    """Wrap `trainer.fit` so that DDP ranks started by re-running the script join this multirun job."""
    if not (in_multirun() and starts_ranks_by_rerunning(trainer)):
        yield
        return
    hydra = HydraConfig.get()
    launcher = str(hydra.launcher._target_)
    if launcher != BASIC_LAUNCHER:
        raise CharLMError(
            f"trainer.strategy=ddp starts its ranks by re-running the command line, which a job of "
            f"{launcher.rsplit('.', 1)[-1]} cannot do: sweep DDP jobs with the default launcher, or "
            f"on SLURM with hydra/launcher=slurm and tasks_per_node={trainer.num_devices}"
        )
    argv, env = sys.argv, {key: os.environ.get(key) for key in LAUNCH_ENV}
    run_dir = OmegaConf.to_container(hydra.run)["dir"]  # unresolved, to put back as it was
    sys.argv = job_command_line(argv, hydra)
    with read_write(hydra.run):
        hydra.run.dir = hydra.runtime.output_dir
    failed = True
    try:
        yield
        failed = False
    finally:
        end_ranks(trainer.strategy.launcher, kill=failed)
        sys.argv = argv
        with read_write(hydra.run):
            hydra.run.dir = run_dir
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
