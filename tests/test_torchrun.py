"""`torchrun` (and `srun`) start every rank themselves: one run directory, one set of checkpoints.

Each rank runs the whole command, Hydra included; charlm.cli.launch makes global rank 0 choose the run
directory and the others receive it, and sets the Trainer's devices and nodes from the launch. The
slow tests launch real processes on this machine (gloo on 127.0.0.1): `torchrun --standalone`, two
torchrun "nodes" (static and c10d rendezvous) and two processes with srun's environment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from charlm.cli.argv import ConfigSource
from charlm.cli.launch import (
    SRUN_VARS,
    TORCHRUN_ID,
    TORCHRUN_VARS,
    Launch,
    detect,
    match_trainer,
    pin_run_dir,
    resolve_dir,
)
from charlm.errors import CharLMError

from conftest import ROOT, make_text, tiny_overrides

CONFIGS = ConfigSource("pkg://charlm.conf", "train")
TIMEOUT = 180
STEPS = 4
LAUNCH_ENV = (*TORCHRUN_VARS, TORCHRUN_ID, "GROUP_RANK", "NODE_RANK", "TORCHELASTIC_USE_AGENT_STORE", "OMP_NUM_THREADS")


def torchrun_env(rank: int = 0, world: int = 2, local_rank: int = 0, local_world: int = 2) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(local_rank),
        "LOCAL_WORLD_SIZE": str(local_world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
        TORCHRUN_ID: "none",
    }


def srun_env(rank: int = 0, tasks: int = 2, per_node: int = 2, nodes: int = 1) -> dict[str, str]:
    return {
        "SLURM_JOB_NAME": "charlm",
        "SLURM_JOB_ID": "4242",
        "SLURM_NTASKS": str(tasks),
        "SLURM_NTASKS_PER_NODE": str(per_node),
        "SLURM_NNODES": str(nodes),
        "SLURM_NODEID": str(rank // per_node),
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank % per_node),
        "SLURM_STEP_NUM_TASKS": str(tasks),
        "SLURM_NODELIST": "127.0.0.1",
    }


# ---- which launcher started this process


def test_torchrun_and_srun_ranks_are_detected_and_other_processes_are_not():
    assert detect(torchrun_env(rank=3, world=4, local_rank=1, local_world=2)) == Launch("torchrun", 3, 4, 1, 2)
    assert detect(srun_env(rank=1)) == Launch("srun", 1, 2, 1, 2)
    assert detect({}) is None
    # a rank that Lightning's trainer=ddp started by re-running the command line: its run dir is given
    assert detect({"LOCAL_RANK": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}) is None
    # the batch script of an sbatch job (no srun step) and Lightning's "interactive" opt-out
    assert detect({k: v for k, v in srun_env().items() if k != "SLURM_STEP_NUM_TASKS"}) is None
    assert detect({**srun_env(), "SLURM_JOB_NAME": "interactive"}) is None
    assert detect(srun_env(tasks=1, per_node=1)) is None
    assert set(SRUN_VARS) <= set(srun_env())


# ---- the Trainer follows the launch


def test_the_trainer_gets_the_launch_s_devices_nodes_and_ddp_unless_the_command_line_gives_them():
    two_nodes = Launch("torchrun", rank=0, world_size=4, local_rank=0, local_world_size=2)
    argv = match_trainer(["train.py", "model=bigram", "trainer=ddp"], two_nodes, gpu=False)
    assert argv == [
        "train.py",
        "model=bigram",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.num_nodes=2",
        "trainer.strategy=ddp",
        "trainer.accelerator=cpu",
        "parallel_jobs=2",  # threads=0: each of the 2 local ranks takes half the cores
    ]
    typed = ["train.py", "trainer.devices=2", "trainer.num_nodes=2", "trainer.strategy=ddp_find_unused_parameters_true"]
    assert match_trainer(typed, two_nodes, gpu=True) == [*typed, "parallel_jobs=2"]
    auto = match_trainer(
        ["train.py", "trainer.devices=auto", "trainer.strategy=auto", "threads=1"], two_nodes, gpu=True
    )
    assert auto == ["train.py", "trainer.devices=2", "trainer.strategy=ddp", "threads=1", "trainer.num_nodes=2"]


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.devices=4", "torchrun --nproc_per_node=2 starts 2 process(es) per node"),
        ("trainer.num_nodes=1", "torchrun --nnodes=2 gives 2 node(s)"),
        ("trainer.strategy=ddp_spawn", "trainer.strategy=ddp_spawn cannot train the processes torchrun started"),
        ("trainer.accelerator=gpu", "trainer.accelerator=gpu but torch sees no GPU here"),
        ("trainer=gpu", "trainer=gpu but torch sees no GPU here"),
    ],
)
def test_a_trainer_setting_that_contradicts_the_launch_is_one_error_naming_both(override, named):
    two_nodes = Launch("torchrun", rank=0, world_size=4, local_rank=0, local_world_size=2)
    with pytest.raises(CharLMError, match="does not match|cannot train|no GPU") as err:
        match_trainer(["train.py", override], two_nodes, gpu=False)
    message = str(err.value)
    assert override in message and named in message and "\n" not in message


# ---- the run directory


def test_rank_0_resolves_the_run_dir_hydra_would_make_from_the_command_line_and_config_dir(tmp_path):
    default = resolve_dir(["train.py", "model=bigram"], CONFIGS, "hydra.run.dir")
    assert default is not None and default.startswith("outputs/runs/20") and "$" not in default
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "mine.yaml").write_text("# @package _global_\nhydra: {run: {dir: 'mine/${now:%Y}'}}\n")
    mine = resolve_dir(["train.py", "-cd", str(tmp_path), "experiment=mine"], CONFIGS, "hydra.run.dir")
    assert mine is not None and mine.startswith("mine/20") and len(mine) == len("mine/2025")
    sweep = resolve_dir(["train.py", "-m", "seed=1,2"], CONFIGS, "hydra.sweep.dir")
    assert sweep is not None and sweep.startswith("outputs/multirun/20")
    assert resolve_dir(["train.py", "modle=bigram"], CONFIGS, "hydra.run.dir") is None  # Hydra will say why


def test_every_rank_gets_rank_0_s_dir_and_ranks_above_0_log_beside_it(monkeypatch):
    import torch.distributed as dist

    sent = {}

    def broadcast(payload, src):  # what rank 0 sends, as rank 1 receives it
        sent["src"] = src
        payload[0] = "outputs/runs/2025-01-01_00-00-00"

    monkeypatch.setattr(dist, "broadcast_object_list", broadcast)
    rank1 = Launch("torchrun", rank=1, world_size=2, local_rank=1, local_world_size=2)
    argv = pin_run_dir(["train.py", "model=bigram"], rank1, CONFIGS)
    assert sent == {"src": 0}
    assert argv == [
        "train.py",
        "model=bigram",
        "hydra.run.dir='outputs/runs/2025-01-01_00-00-00'",
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    # a run dir the user gave verbatim is used as it is, with no broadcast
    sent.clear()
    argv = pin_run_dir(["train.py", "hydra.run.dir=/data/run1"], rank1, CONFIGS)
    assert sent == {} and argv[1] == "hydra.run.dir=/data/run1" and argv[2] == "hydra.job.name=train_ddp_process_1"


# ---- real launches on this machine


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A directory to launch in: its corpus.txt, and the runs appear in its outputs/."""
    (tmp_path / "corpus.txt").write_text(make_text(), encoding="utf-8")
    return tmp_path


def train_args() -> list[str]:
    """A tiny bigram run of STEPS steps, validated (and checkpointed) every 2 steps; no hydra.run.dir."""
    tiny = [
        o for o in tiny_overrides("bigram") if not o.startswith(("trainer.max_steps=", "trainer.val_check_interval="))
    ]
    return [
        str(ROOT / "scripts" / "train.py"),
        *tiny,
        "data.path=corpus.txt",
        f"trainer.max_steps={STEPS}",
        "trainer.val_check_interval=2",
    ]


def launch_env() -> dict[str, str]:
    """This environment without any launcher's variables; gloo on the loopback interface."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV and not k.startswith("SLURM_")}
    if Path("/sys/class/net/lo").exists():
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return {**env, "HYDRA_FULL_ERROR": "0"}


def start(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=env or launch_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout kills the launcher and its workers
    )


def finish(procs: list[subprocess.Popen]) -> list[tuple[int, str]]:
    """Each process's exit status and output; all are killed (with their workers) after TIMEOUT seconds."""
    results = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=TIMEOUT)
            results.append((proc.returncode, out))
    except subprocess.TimeoutExpired:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
        outputs = [proc.communicate()[0] for proc in procs]
        pytest.fail(f"the launch did not end in {TIMEOUT} s:\n" + "\n----\n".join(o[-3000:] for o in outputs))
    return results


def assert_ok(results: list[tuple[int, str]]) -> None:
    for code, out in results:
        assert code == 0, out[-4000:]


def assert_one_run(workdir: Path, devices: int, num_nodes: int) -> Path:
    """One run dir, one set of checkpoints at step STEPS, and rank 0 alone wrote logs, config and result."""
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()  # no rank made a dir of its own
    assert not (workdir / "outputs" / "multirun").exists()
    assert {p.parent for p in workdir.rglob("*.ckpt")} == {run_dir / "checkpoints"}
    import torch

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == STEPS
    assert list((run_dir / "checkpoints").glob("best-*.ckpt"))
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["status"], result["steps"], result["world_size"]) == ("ok", STEPS, 2)
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1
    assert (run_dir / "train.log").is_file() and (run_dir / "train_ddp_process_1.log").is_file()
    assert [p.name for p in workdir.rglob(".hydra")] == [".hydra"]  # rank 1 wrote no config copy
    trainer = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["trainer"]
    assert (trainer["devices"], trainer["num_nodes"], trainer["strategy"]) == (devices, num_nodes, "ddp")
    return run_dir


@pytest.mark.slow
def test_torchrun_standalone_with_two_processes_trains_one_run_into_one_dir(workdir):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert_ok(finish([start([*torchrun, *train_args()], workdir)]))
    assert_one_run(workdir, devices=2, num_nodes=1)


@pytest.mark.slow
@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_two_torchrun_nodes_train_one_run_into_one_dir(workdir, rendezvous):
    port = free_port()
    if rendezvous == "static":  # as nanoGPT's README types it
        where = ["--master_addr=127.0.0.1", f"--master_port={port}"]
    else:
        where = ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=charlm-test"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1"]
    nodes = [start([*torchrun, f"--node_rank={rank}", *where, *train_args()], workdir) for rank in (1, 0)]
    assert_ok(finish(nodes))
    assert_one_run(workdir, devices=1, num_nodes=2)


@pytest.mark.slow
def test_two_srun_tasks_train_one_run_into_one_dir(workdir):
    """srun's environment, set by hand (there is no SLURM here): Lightning's SLURMEnvironment and charlm.cli.launch."""
    env = {**launch_env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    args = [a for a in train_args() if a != "threads=1"]  # threads=0: the two tasks share the cores
    args += ["trainer.num_nodes=1", "trainer.devices=2", "trainer.strategy=ddp"]
    tasks = [start([sys.executable, *args], workdir, {**env, **srun_env(rank)}) for rank in (1, 0)]
    assert_ok(finish(tasks))
    run_dir = assert_one_run(workdir, devices=2, num_nodes=1)
    result = json.loads((run_dir / "result.json").read_text())
    assert result["torch_threads"] == max(1, (os.cpu_count() or 1) // 2)
