"""The command line as a person types it: free text verbatim, one error line for every mistake,
every run measured at its last step, Ctrl-C and resume= that always work."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charlm.cli.argv import flags_first
from charlm.models import ARCHITECTURES
from charlm.overrides import quote_override, verbatim

from conftest import ROOT, TINY, run_command, run_script, tiny_overrides, train_command

# Every character class a prompt may hold: commas, quotes, brackets, `=`, `:`, `#`, `$`, `${...}`,
# backslashes, non-ASCII letters, emoji, tabs, newlines and spaces at either end.
MODEL_OPTIONS = [name for arch in ARCHITECTURES.values() for name in arch.configs]  # the registry's
HAZARDS = [
    "To be, or not to be",
    "What's this?",
    'say "hi"',
    "[brackets] (parens) {braces}",
    "a = b: c",
    "# not a comment",
    "$HOME and $PATH",
    "${oc.env:HOME}",
    "${x} and \\${y}",
    "back\\slash\\",
    "Père Noël à Noël",
    "🎭 masks 🎭",
    "  spaces at both ends  ",
    "tab\there",
    "two\nlines",
    "'single'",
    "~+-@!?%^&*|<>`;",
]
CORPUS = "".join(f"{''.join(HAZARDS)}\nROMEO: line {i}, my lord.\n" for i in range(120))


def run_in_process(script: str, args: list[str], stdin: str | None = None, cwd: Path | None = None):
    """The script's command in this process, as `python scripts/<script>.py args` would run it."""
    done = run_command(f"{script}.py", *args, stdin=stdin, cwd=cwd)
    return done.returncode, done.stdout, done.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def scalars(run_dir: Path) -> dict[str, list[int]]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    steps["sample"] = (
        [e.step for e in events.Tensors("sample/text_summary")]
        if "sample/text_summary" in events.Tags().get("tensors", [])
        else []
    )
    return steps


@pytest.fixture(scope="module")
def hazard_run(tmp_path_factory) -> Path:
    """A tiny LSTM trained on a corpus that holds every hazardous character."""
    root = tmp_path_factory.mktemp("hazards")
    corpus = root / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    run = root / "run"
    env = {"CHARLM_CACHE": str(root / "cache")}
    done = train_command(run, *tiny_overrides("lstm"), f"data.path={corpus}", env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return run


# ---- free text, verbatim


@pytest.mark.parametrize("text", HAZARDS)
def test_any_text_survives_the_override_grammar_exactly(text: str) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("generate", overrides=verbatim([f"prompt={text}"], ["prompt"]))
    assert cfg.prompt == text


@pytest.mark.parametrize("prompt", HAZARDS)
def test_generate_starts_with_the_prompt_exactly(hazard_run, prompt) -> None:
    code, out, err = run_in_process("generate", [f"ckpt_path={hazard_run}", f"prompt={prompt}", "max_new_tokens=5"])
    assert code == 0, err
    assert out.startswith(prompt) and len(out) == len(prompt) + 5 + 1  # 5 new characters and the final newline


def test_prompt_file_keeps_its_newlines_and_dash_reads_standard_input(hazard_run, tmp_path) -> None:
    text = "ROMEO:\n  What's this, my lord?\n\n"
    (tmp_path / "a prompt, with = and 'quotes'.txt").write_text(text, encoding="utf-8")
    for source, stdin in ((str(tmp_path / "a prompt, with = and 'quotes'.txt"), None), ("-", text)):
        code, out, err = run_in_process(
            "generate",
            [f"ckpt_path={hazard_run}", f"prompt_file={source}", "max_new_tokens=3"],
            stdin=stdin,
        )
        assert code == 0, err
        assert out.startswith(text) and len(out) == len(text) + 3 + 1


def test_generate_flags_may_follow_the_prompt(hazard_run) -> None:
    code, out, _ = run_in_process("generate", [f"ckpt_path={hazard_run}", "prompt=a, b", "--cfg", "job"])
    assert code == 0
    assert yaml.safe_load(out)["prompt"] == "a, b"


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["prompt=ROMEO: Zebra"], ["not in the vocabulary", "Z"]),
        (["temperature=abc"], ["temperature='abc'", "expected a number"]),
        (["top_p=2"], ["top_p=2", "(0, 1]"]),
        (["num_samples=0"], ["num_samples=0"]),
        (["promt=x"], ["unknown key 'promt'", "did you mean prompt?"]),
        (["which=newest"], ["which='newest'", "expected one of best, last"]),
        (["prompt=a", "prompt_file=b.txt"], ["prompt= or prompt_file="]),
        (["prompt_file=/no/such/file.txt"], ["prompt_file=", "does not exist"]),
        (["input=x"], ["seq2seq"]),
    ],
)
def test_a_generation_mistake_prints_nothing_on_stdout(hazard_run, args, needles) -> None:
    code, out, err = run_in_process("generate", [f"ckpt_path={hazard_run}", *args])
    assert (code, out) == (2, "")
    [line] = error_lines(err)
    assert all(n in line for n in needles), line


# ---- one error line, exit 2, for every mistake


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["modle=lstm"], ["unknown key 'modle'", "did you mean model?"]),
        (["model=lstmm"], ["model=lstmm", ", ".join(sorted(MODEL_OPTIONS)), "did you mean lstm?"]),
        (["experiment=nope"], ["experiment=nope", "nanogpt_cpu"]),
        (["optimizer.lrr=1"], ["unknown key 'optimizer.lrr'", "did you mean optimizer.lr?"]),
        (["tranier.max_steps=5"], ["did you mean trainer.max_steps?"]),
        (["trainer.max_steps=[1"], ["could not parse the override 'trainer.max_steps=[1'"]),
        (["trainer.max_steps=abc"], ["trainer.max_steps='abc'", "integer"]),
        (["data.path=/no/such/corpus.txt"], ["does not exist"]),
        (["resume=/no/such/run"], ["resume=/no/such/run", "does not exist"]),
    ],
)
def test_a_train_mistake_is_one_error_line_and_exit_2(args, needles, tmp_path) -> None:
    code, out, err = run_in_process("train", [f"hydra.run.dir={tmp_path / 'run'}", *args], cwd=tmp_path)
    assert (code, out) == (2, "")
    [line] = error_lines(err)
    assert all(n in line for n in needles), line
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["trian"], ["invalid choice: 'trian'"]),
        (["train", "--steps", "x"], ["--steps", "'x'"]),
        (["train", "--set", "modle=lstm"], ["unknown key 'modle'"]),
    ],
)
def test_a_benchmark_mistake_is_one_error_line_and_exit_2(args, needles) -> None:
    code, out, err = run_in_process("benchmark", args)
    assert (code, out) == (2, "")
    [line] = error_lines(err)
    assert all(n in line for n in needles), line


def test_hydra_errors_from_the_real_command_are_one_line_unless_the_user_asks_for_the_traceback() -> None:
    done = run_script("train.py", "model=lstmm", env={"HYDRA_FULL_ERROR": ""})
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("error: model=lstmm")
    full = run_script("train.py", "model=lstmm", env={"HYDRA_FULL_ERROR": "1"})
    assert full.returncode != 0 and "Traceback" in full.stderr


def test_flags_may_stand_before_between_or_after_the_overrides() -> None:
    argv = ["train.py", "a=1", "--cfg", "job", "b=2", "-m", "--info", "searchpath", "c=3", "-cd", "dir"]
    assert flags_first(argv) == [
        "train.py",
        "--cfg",
        "job",
        "-m",
        "--info",
        "searchpath",
        "-cd",
        "dir",
        "a=1",
        "b=2",
        "c=3",
    ]
    assert quote_override("k", "it's") == "k='it\\'s'"


# ---- every run ends measured


def test_a_run_of_odd_length_validates_logs_and_samples_its_last_step(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    done = train_command(
        run,
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "trainer.max_steps=7",
        "trainer.val_check_interval=5",
        "trainer.log_every_n_steps=3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = scalars(run)
    assert steps["val/loss"] == [5, 7] and steps["val/bpc"] == [5, 7]  # validated once per step, the last included
    assert steps["train/loss"] == [3, 6, 7] and steps["train/lr"] == [3, 6, 7]
    assert steps["sample"] == [5, 7]
    assert (run / "checkpoints" / "best-000007.ckpt").is_file() or (run / "checkpoints" / "best-000005.ckpt").is_file()
    assert [p.name for p in (run / "checkpoints").glob("last*")] == ["last.ckpt"]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 7


def test_a_run_shorter_than_every_interval_with_logging_off_still_ends_measured(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    done = train_command(
        run,
        *tiny_overrides("gru"),
        f"data.path={corpus}",
        "trainer.max_steps=4",
        "trainer.val_check_interval=600",
        "trainer.log_every_n_steps=0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = scalars(run)
    assert steps["val/loss"] == [4] and steps["train/loss"] == [4] and steps["sample"] == [4]
    assert "train/tokens_per_sec" not in steps  # no periodic logging at all
    assert list((run / "checkpoints").glob("best-*.ckpt"))


def test_a_run_stopped_by_its_time_budget_validates_the_step_it_reached(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    done = train_command(
        run,
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "trainer.max_steps=1000000",
        "trainer.val_check_interval=100000",
        "trainer.max_time=00:00:00:03",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reached = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    steps = scalars(run)
    assert steps["val/loss"] == [reached] and steps["train/loss"][-1] == reached


@pytest.mark.slow
def test_ctrl_c_saves_the_step_reached_and_resume_continues_from_it(corpus, tmp_path) -> None:
    run = tmp_path / "run"
    args = [
        *tiny_overrides("lstm"),
        f"data.path={corpus}",
        "trainer.max_steps=1000000",
        "trainer.val_check_interval=1000",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), f"hydra.run.dir={run}", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    deadline = time.monotonic() + 120
    while not (run / "events.out.tfevents").parent.exists() or not list(run.glob("events.out.tfevents.*")):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(2)  # some steps into training
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    [line] = error_lines(err)
    step = int(line.split("interrupted at step ")[1].split(";")[0])
    assert step > 0 and f"resume={run}" in line
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step
    done = run_command("train.py", f"resume={run}", f"trainer.max_steps={step + 2}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == step + 2


# ---- sweeps and resume=


def test_a_sweep_job_dir_is_flat_and_resume_takes_it_with_flags_after(tmp_path) -> None:
    folder = tmp_path / "my books, vol=1"
    folder.mkdir()
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    sweep = tmp_path / "sweep"
    done = run_command(
        "train.py",
        "-m",
        f"hydra.sweep.dir={sweep}",
        "model=lstm",
        f"data.path='{corpus}'",
        *[o for o in TINY if not o.startswith(("model.n_", "trainer.max_steps"))],
        "trainer.max_steps=4",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [job] = [p.parent.parent for p in sweep.rglob(".hydra/overrides.yaml")]
    assert job.parent == sweep and "data.path=corpus.txt" in job.name and "," in job.name  # flat, readable
    shown = run_command("train.py", f"resume={job}", "--cfg", "job", "trainer.max_steps=6")
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert yaml.safe_load(shown.stdout)["trainer"]["max_steps"] == 6
    resumed = run_command("train.py", "--cfg", "job", f"resume={job}")
    assert resumed.returncode == 0 and yaml.safe_load(resumed.stdout)["data"]["path"] == str(corpus)
    done = run_command("train.py", f"resume={job}", "trainer.max_steps=6")
    assert done.returncode == 0, done.stderr[-3000:]
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_resume_of_a_directory_without_a_checkpoint_is_one_line(tmp_path) -> None:
    (tmp_path / "run" / ".hydra").mkdir(parents=True)
    (tmp_path / "run" / ".hydra" / "overrides.yaml").write_text("- model=lstm\n")
    code, out, err = run_in_process("train", [f"resume={tmp_path / 'run'}"])
    assert (code, out) == (2, "")
    [line] = error_lines(err)
    assert "holds no checkpoint" in line


def test_a_search_whose_trials_all_fail_ends_in_one_line_naming_the_first_error(tmp_path) -> None:
    pytest.importorskip("optuna")
    done = run_command(
        "train.py",
        "-m",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.storage=null",
        "data.path=/no/such/corpus.txt",
        *tiny_overrides("lstm")[1:],
    )
    assert done.returncode == 2, done.stderr[-3000:]
    [line] = error_lines(done.stderr)
    assert "all 2 jobs" in line and "does not exist" in line and "Traceback" not in done.stderr


# ---- an installed app


def test_the_commands_are_installed_and_run_from_any_directory(tmp_path) -> None:
    listing = subprocess.run([sys.executable, "-m", "charlm"], capture_output=True, text=True, cwd=tmp_path)
    assert listing.returncode == 0 and all(c in listing.stdout for c in ("charlm-train", "charlm-generate"))
    command = Path(sys.executable).parent / "charlm-train"
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    done = subprocess.run(
        [str(command), "hydra.run.dir=run", f"data.path={corpus}", *tiny_overrides("lstm")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()
    log = (tmp_path / "run" / "train.log").read_text()
    for needle in (
        "overrides: ",
        "parameters",
        "step 3: val/loss",
        "step 6: val/loss",
        "best checkpoint:",
        "last checkpoint:",
    ):
        assert needle in log, log
    failed = subprocess.run(
        [str(command), "hydra.run.dir=run", "trainer.max_steps=abc"], capture_output=True, text=True, cwd=tmp_path
    )
    assert failed.returncode == 2 and failed.stdout == ""
    assert "error: trainer.max_steps='abc'" in (tmp_path / "run" / "train.log").read_text()


@pytest.mark.parametrize("flag", ["--help", "--cfg job"])
def test_help_and_config_answer_without_importing_torch(flag: str) -> None:
    code = (
        "import sys\n"
        f"sys.argv = ['charlm-train', *{flag.split()!r}]\n"
        "from charlm.cli.app import train_cli\n"
        "try:\n    train_cli()\nexcept SystemExit:\n    pass\n"
        "print('heavy:', [m for m in ('torch', 'lightning', 'tensorboard') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"


def test_every_package_and_config_is_in_the_distribution() -> None:
    """A plain `pip install .` ships what the explicit package list and data patterns name: keep them whole."""
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT / "src").parts) for p in (ROOT / "src").rglob("__init__.py")}
    assert on_disk | {"charlm.conf"} == set(setuptools["packages"])
    patterns = setuptools["package-data"]["charlm.conf"]
    configs = {p.relative_to(ROOT / "conf") for p in (ROOT / "conf").rglob("*.yaml")}
    assert all(
        any(c.match(pattern) and len(c.parts) == pattern.count("/") + 1 for pattern in patterns) for c in configs
    )
