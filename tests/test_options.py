"""Every command's options are checked one way (charlm.options): unknown keys, types and each field's rule,
each refusal one line in one format."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from charlm import CharLMError
from charlm.options import EvaluateOptions, GenerateOptions, InspectOptions, check_options

CONF = Path(__file__).resolve().parents[1] / "conf"
SCHEMAS = {"generate": GenerateOptions, "evaluate": EvaluateOptions, "inspect": InspectOptions}


def options_of(command: str) -> dict:
    values = yaml.safe_load((CONF / f"{command}.yaml").read_text(encoding="utf-8"))
    return {k: v for k, v in values.items() if k not in ("defaults", "hydra")}


def runnable(command: str, **change) -> dict:
    """The command's config file with a checkpoint (and, for inspect, a text) named: what a valid call gives."""
    text = {"text": "x"} if command == "inspect" else {}
    return {**options_of(command), "ckpt_path": "run", **text, **change}


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_each_commands_schema_names_exactly_the_keys_of_its_config_file(command):
    assert {f.name for f in dataclasses.fields(SCHEMAS[command])} == set(options_of(command))


@pytest.mark.parametrize("command", sorted(SCHEMAS))
def test_the_config_files_defaults_pass_their_schema_once_a_checkpoint_is_named(command):
    check_options(runnable(command), SCHEMAS[command], command)


@pytest.mark.parametrize(
    ("command", "change", "message"),
    [
        ("generate", {"max_new_tokens": -1}, "max_new_tokens=-1 is not valid: expected an integer >= 0"),
        ("generate", {"num_samples": 1.5}, "num_samples=1.5 is not valid: expected an integer"),
        ("generate", {"which": "newest"}, "which='newest' is not valid: expected one of best, last"),
        ("generate", {"beam_size": 0}, "beam_size=0 is not valid: expected an integer >= 1, or null"),
        ("generate", {"ckpt_path": None}, "ckpt_path is required: a .ckpt file or a run directory"),
        ("evaluate", {"dynamic_rule": "adam"}, "dynamic_rule='adam' is not valid: expected one of sgd, rms"),
        ("inspect", {"top_units": 0}, "top_units=0 is not valid: expected an integer >= 1"),
        ("inspect", {"max_chars": "lots"}, "max_chars='lots' is not valid: expected an integer"),
        ("inspect", {"nope": 1}, "unknown key 'nope'"),
    ],
)
def test_a_bad_option_of_any_command_is_one_line_in_one_format(command, change, message):
    values = runnable(command, **change)
    with pytest.raises(CharLMError) as caught:
        check_options(values, SCHEMAS[command], command)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_a_peers_name_in_generate_points_to_charlms():
    values = runnable("generate", primetext="KING")
    with pytest.raises(CharLMError, match="char-rnn"):
        check_options(values, GenerateOptions, "generate")
