"""The process's launcher environment: torchrun's or srun's ranks, and the one run directory they share.

`torchrun --nproc_per_node=2 scripts/train.py ...` (or `srun` in a SLURM job) starts every rank itself,
each running the whole command: Hydra in each would compose its own `outputs/runs/${now:...}` and
the ranks, started a second apart, would train one model into two directories. `share_launch`, the
last step of `charlm-train`'s command-line rewrite, runs before Hydra in every rank:

- the run directory is decided once: global rank 0 composes the config as Hydra is about to and
  resolves `hydra.run.dir` (`hydra.sweep.dir` under -m), and every rank receives it over the
  default process group, initialised here (gloo; with nccl for CUDA tensors when the run may use
  the GPU), which Lightning's DDP strategy then uses as it is (`_init_dist_connection` returns
  early on an initialised group). Each rank adds `hydra.run.dir=<that dir>` to its command line;
  ranks > 0 also name their log `train_ddp_process_<rank>.log` and write no `.hydra/` (as
  Lightning's own re-run ranks of `trainer=ddp` do), and only rank 0 writes logs, checkpoints and
  result.json (Lightning's rank-zero rules);
- the Trainer matches the launch: `trainer.devices` = processes per node, `trainer.num_nodes` =
  nodes, `trainer.strategy=ddp` (and `trainer.accelerator=cpu` without a GPU), each unless the
  command line gives it; a value that contradicts the launch is one error line;
- `parallel_jobs` = processes per node, so that `threads=0` gives each rank its share of the
  cores (`charlm.config.resolve_threads`) rather than all of them.

Lightning finds the ranks itself (TorchElasticEnvironment, SLURMEnvironment) and starts none.
Nothing here imports torch unless one of these launchers started the process.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from charlm.cli.argv import ConfigSource
from charlm.errors import CharLMError
from charlm.overrides import quote_override

# what torchrun (torch.distributed.run) sets in each worker's environment
TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
TORCHRUN_ID = "TORCHELASTIC_RUN_ID"  # what torch.distributed.is_torchelastic_launched and Lightning look for
# what srun sets in each task (SLURM_STEP_NUM_TASKS only in a job step, not in the batch script itself)
SRUN_VARS = ("SLURM_PROCID", "SLURM_LOCALID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS")
SLURM_INTERACTIVE = ("bash", "interactive")  # job names for which Lightning ignores SLURM
# flags after which Hydra runs nothing: answer them at once, as without a launcher
INFO_FLAGS = {"--help", "-h", "--hydra-help", "--info", "-i", "--cfg", "-c", "--shell-completion", "-sc", "--version"}
MULTIRUN_FLAGS = {"--multirun", "-m"}
# strategies that start processes of their own: under torchrun or srun the processes already exist
SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
DISTRIBUTED = ("ddp", "fsdp", "deepspeed")  # the families that train processes started by a launcher


@dataclass(frozen=True)
class Launch:
    """Where this process stands among the ranks an external launcher started."""

    launcher: str  # "torchrun" | "srun"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int

    @property
    def num_nodes(self) -> int:
        return max(1, self.world_size // self.local_world_size)

    def per_node(self) -> str:
        """How the launcher was told the processes per node, for messages."""
        if self.launcher == "torchrun":
            return f"torchrun --nproc_per_node={self.local_world_size}"
        return f"srun --ntasks-per-node={self.local_world_size}"

    def nodes(self) -> str:
        flag = "--nnodes" if self.launcher == "torchrun" else "--nodes"
        return f"{self.launcher} {flag}={self.num_nodes}"


def detect(environ: Mapping[str, str] = os.environ) -> Launch | None:
    """The ranks torchrun or srun started, or None for a process started any other way (Lightning's own
    `trainer=ddp` ranks included: they get no TORCHELASTIC_RUN_ID and their run dir on the command line)."""
    if TORCHRUN_ID in environ and all(key in environ for key in TORCHRUN_VARS):
        return Launch(
            "torchrun",
            rank=int(environ["RANK"]),
            world_size=int(environ["WORLD_SIZE"]),
            local_rank=int(environ["LOCAL_RANK"]),
            local_world_size=int(environ["LOCAL_WORLD_SIZE"]),
        )
    if all(key in environ for key in SRUN_VARS) and environ.get("SLURM_JOB_NAME") not in SLURM_INTERACTIVE:
        world = int(environ["SLURM_NTASKS"])
        if world < 2:
            return None
        per_node = environ.get("SLURM_NTASKS_PER_NODE", "")
        nodes = int(environ.get("SLURM_NNODES") or 1)
        local_world = int(per_node) if per_node.isdigit() else max(1, world // nodes)
        return Launch(
            "srun",
            rank=int(environ["SLURM_PROCID"]),
            world_size=world,
            local_rank=int(environ["SLURM_LOCALID"]),
            local_world_size=local_world,
        )
    return None


def share_launch(argv: list[str], configs: ConfigSource) -> list[str]:
    """argv for this rank of a torchrun/srun launch (unchanged for any other process): the Trainer's
    devices and nodes, and the run directory rank 0 chose."""
    launch = detect()
    if launch is None or INFO_FLAGS & set(argv[1:]):
        return argv
    argv = match_trainer(argv, launch, gpu=gpu_available())
    init_process_group(launch, backend=backend_for(argv))
    return pin_run_dir(argv, launch, configs)


# ---- the Trainer


def given(argv: list[str]) -> dict[str, tuple[int, Any]]:
    """The overrides of argv by key (`trainer.devices`, ...): their index and the override as Hydra reads
    it; the last wins. Flags, and what Hydra will refuse itself, are left out."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    found = {}
    for index, arg in enumerate(argv[1:], start=1):
        if arg.startswith("-") or "=" not in arg:
            continue
        try:
            override = parser.parse_override(arg)
        except Exception:
            continue
        if not override.is_delete():
            found[override.key_or_group] = (index, override)
    return found


def match_trainer(argv: list[str], launch: Launch, gpu: bool) -> list[str]:
    """argv with the Trainer's devices, num_nodes, strategy (and accelerator) set to what the launch
    gives, unless the command line gives them; a value that contradicts the launch is a `CharLMError`."""
    typed = given(argv)
    wanted = {
        "trainer.devices": launch.local_world_size,
        "trainer.num_nodes": launch.num_nodes,
        "trainer.strategy": "ddp",
    }
    if not gpu:
        wanted["trainer.accelerator"] = "cpu"
        if "trainer" in typed and typed["trainer"][1].value() == "gpu":
            raise CharLMError(
                f"trainer=gpu but torch sees no GPU here: leave it out ({launch.launcher} then trains on the CPU) "
                "or run on a machine with GPUs"
            )
    if launch.local_world_size > 1 and "parallel_jobs" not in typed:
        threads = typed.get("threads")
        if threads is None or threads[1].value() in (0, None):  # threads=0: share the cores among local ranks
            wanted["parallel_jobs"] = launch.local_world_size
    out = list(argv)
    for key, value in wanted.items():
        if key not in typed:
            out.append(f"{key}={value}")
            continue
        index, override = typed[key]
        if override.is_sweep_override():
            raise CharLMError(
                f"{override.input_line} sweeps a setting that {launch.launcher} fixes for the whole launch "
                f"({key}={value}); leave {key} out of the command line"
            )
        if replace_auto(key, override.value()):
            out[index] = f"{key}={value}"
            continue
        check(key, override.value(), launch, gpu)
    return out


def replace_auto(key: str, value: Any) -> bool:
    """Whether a given value only asks Lightning to choose: the launch's value takes its place."""
    if key == "trainer.devices":
        return value in ("auto", -1, "-1")
    if key == "trainer.strategy":
        return value == "auto"
    return key == "trainer.accelerator" and value == "auto"


def check(key: str, value: Any, launch: Launch, gpu: bool) -> None:
    """Refuse a typed Trainer setting that the processes the launcher started cannot have."""
    if key == "trainer.devices":
        count = len(value) if isinstance(value, list) else value if isinstance(value, int) else None
        if count != launch.local_world_size:
            raise CharLMError(
                f"trainer.devices={value} does not match the launch: {launch.per_node()} starts "
                f"{launch.local_world_size} process(es) per node, one per device; leave trainer.devices out "
                f"or make the two agree"
            )
    elif key == "trainer.num_nodes":
        if value != launch.num_nodes:
            raise CharLMError(
                f"trainer.num_nodes={value} does not match the launch: {launch.nodes()} gives {launch.num_nodes} "
                f"node(s) ({launch.world_size} processes, {launch.local_world_size} per node); leave "
                f"trainer.num_nodes out or make the two agree"
            )
    elif key == "trainer.strategy":
        if isinstance(value, str) and (value.startswith(SPAWNING) or not value.startswith(DISTRIBUTED)):
            raise CharLMError(
                f"trainer.strategy={value} cannot train the processes {launch.launcher} started "
                f"({launch.world_size} of them): use trainer.strategy=ddp (the default under {launch.launcher}), "
                f"fsdp or deepspeed"
            )
    elif key == "trainer.accelerator":
        if not gpu and value in ("gpu", "cuda"):
            raise CharLMError(
                f"trainer.accelerator={value} but torch sees no GPU here: leave trainer.accelerator out "
                f"({launch.launcher} then trains on the CPU) or run on a machine with GPUs"
            )


def gpu_available() -> bool:
    import torch

    return torch.cuda.is_available()


def backend_for(argv: list[str]) -> str:
    """gloo, as Lightning picks for CPU runs; with nccl beside it for CUDA tensors when the run may use the GPU."""
    import torch.distributed as dist

    typed = given(argv)
    accelerator = typed.get("trainer.accelerator")
    on_cpu = (accelerator is not None and accelerator[1].value() == "cpu") or (
        "trainer" in typed and typed["trainer"][1].value() == "cpu"
    )
    if gpu_available() and dist.is_nccl_available() and not on_cpu:
        return "cpu:gloo,cuda:nccl"
    return "gloo"


# ---- the run directory


def init_process_group(launch: Launch, backend: str) -> None:
    """The default process group of all ranks (torchrun's or srun's rendezvous), for Lightning to reuse."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if launch.launcher == "srun":
        set_slurm_main_address()
    dist.init_process_group(backend, init_method="env://", rank=launch.rank, world_size=launch.world_size)
    atexit.register(destroy_process_group)


def destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def set_slurm_main_address() -> None:
    """MASTER_ADDR and MASTER_PORT as Lightning's SLURMEnvironment chooses them (the first node of the job,
    port 15000 + the job id's last four digits), set so that it finds them here and agrees."""
    import re

    if "MASTER_ADDR" not in os.environ:
        nodes = os.environ.get("SLURM_NODELIST", "127.0.0.1")
        nodes = re.sub(r"\[(.*?)[,-].*\]", "\\1", nodes)
        nodes = re.sub(r"\[(.*?)\]", "\\1", nodes)
        os.environ["MASTER_ADDR"] = nodes.split(" ")[0].split(",")[0]
    if "MASTER_PORT" not in os.environ:
        job_id = os.environ.get("SLURM_JOB_ID")
        os.environ["MASTER_PORT"] = str(int(job_id[-4:]) + 15000 if job_id else 12910)


def pin_run_dir(argv: list[str], launch: Launch, configs: ConfigSource) -> list[str]:
    """argv with the run (or sweep) directory that global rank 0 resolved; ranks > 0 log beside it."""
    import torch.distributed as dist

    key = "hydra.sweep.dir" if MULTIRUN_FLAGS & set(argv[1:]) else "hydra.run.dir"
    typed = given(argv).get(key)
    literal = typed is not None and "${" not in str(typed[1].value())
    payload: list[Any] = [None]
    if not literal:
        if launch.rank == 0:
            payload[0] = resolve_dir(argv, configs, key)
        dist.broadcast_object_list(payload, src=0)
    out = list(argv)
    if payload[0] is not None:
        if typed is not None:
            del out[typed[0]]
        out.append(quote_override(key, payload[0]))
    if launch.rank > 0:
        out += [f"hydra.job.name=train_ddp_process_{launch.rank}", "hydra.output_subdir=null"]
    return out


def resolve_dir(argv: list[str], configs: ConfigSource, key: str) -> str | None:
    """`key` (hydra.run.dir) of the config argv composes, resolved now; None if it does not compose (Hydra
    then reports the mistake in every rank, as without a launcher)."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path, get_args_parser
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    try:
        args = get_args_parser().parse_args(argv[1:])
        import charlm.cli.app

        search_path = create_automatic_config_search_path(
            charlm.cli.app.__file__, None, args.config_path or configs.config_path
        )
        if args.config_dir:
            search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(args.config_dir)}")
        GlobalHydra.instance().clear()
        hydra = Hydra.create_main_hydra2(task_name="train", config_search_path=search_path)
        mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
        cfg = hydra.compose_config(args.config_name or configs.config_name, args.overrides, run_mode=mode)
        previous = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(cfg)
        try:
            value = OmegaConf.select(cfg, key)
        finally:
            HydraConfig.instance().cfg = previous
        return None if value is None else str(value)
    except (Exception, SystemExit):  # argparse exits on a bad flag: Hydra will say so in every rank
        return None
    finally:
        GlobalHydra.instance().clear()
