"""Habits from nanoGPT, char-rnn, lightning-hydra-template and older Lightning get one line naming charlm's
setting; flags that are not Hydra's get one line too, never argparse's usage or a wrong suggestion."""

import pytest

from charlm.dialects import EVALUATE_NAMES, GENERATE_NAMES, TRAIN

from conftest import run_command


def run(command: str, *args: str) -> tuple[int, str, str]:
    done = run_command(f"{command}.py", *args)
    return done.returncode, done.stdout, done.stderr


CASES = [("train", k, v) for k, v in TRAIN.items()]
CASES += [("generate", k, v) for k, v in GENERATE_NAMES.items()]
CASES += [("evaluate", k, v) for k, v in EVALUATE_NAMES.items()]


@pytest.mark.parametrize(("command", "key", "peer"), CASES, ids=[f"{c}-{k}" for c, k, _ in CASES])
def test_a_peer_tools_name_points_to_charlms_setting(command, key, peer):
    code, out, err = run(command, f"{key}=v1")
    tool, ours = peer
    assert code == 2 and out == ""
    assert err == f"error: unknown key '{key}': that is {tool}'s name; in charlm use {ours}\n"


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["-primetext", "ROMEO"], ["'-primetext'", "charlm-generate prompt=TEXT"]),
        (["-gpuid", "-1"], ["'-gpuid'", "trainer.accelerator=cpu"]),
        (["--compile=False"], ["'--compile=False'", "model.compile=true"]),
        (["--max_iters=100"], ["'--max_iters=100'", "trainer.max_steps=N"]),
        (["--nope"], ["'--nope'", "key=value"]),
        (["-m", "--info"], ["Only one of"]),
    ],
)
def test_a_flag_that_is_not_hydras_is_one_line(args, names):
    code, out, err = run("train", *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: ")
    for name in names:
        assert name in err


def test_a_char_rnn_flag_to_generate_points_to_its_option(monkeypatch, capsys):
    code, _, err = run("generate", "-length", "2000")
    assert code == 2 and "max_new_tokens=N" in err


def test_a_misspelling_is_suggested_only_when_close():
    from charlm.cli.argv import did_you_mean

    assert did_you_mean("lrr", ["lr", "betas"]) == " (did you mean lr?)"
    assert did_you_mean("sample", ["num_samples", "seed"]) == ""


@pytest.mark.parametrize(
    "args", [["model=gru", "--info"], ["--info", "model=gru"], ["--info", "defaults", "model=gru"]]
)
def test_info_works_anywhere_on_the_line(args):
    code, out, err = run("train", *args)
    assert code == 0, err
    assert ("Defaults List" in out or "Hydra 1.3" in out) and "error:" not in err
