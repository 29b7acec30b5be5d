"""Every command's options, checked one way before anything is built, loaded or printed.

A schema is a dataclass (the training config's `charlm.config.TrainConfig`, and `GenerateOptions`,
`EvaluateOptions` and `InspectOptions` below) or, for a node with a `_target_`, the parameters of the
target's constructor plus Hydra's own `_target_`-style keys (a constructor that takes **kwargs, a target
that does not import and a node without a target have none). `check_node` refuses a key the schema lacks,
with peers' names pointed home and the closest valid key suggested, and a number, boolean or null of the
wrong type; `check_rules` then refuses a value outside what a field's `valid(...)` rule allows. Every
refusal is one line in one format: `key=value is not valid: expected ...`.

The schemas hold types and rules only: the values and their defaults are the YAML files' in conf/.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from charlm.dialects import CLOSE_ENOUGH, pointer
from charlm.errors import CharLMError
from charlm.prepared import UNKNOWN_MODES

HYDRA_KEYS = {"_target_": str, "_partial_": bool, "_recursive_": bool, "_convert_": str, "_args_": list}
# Keys of a `_target_` node that the code takes out before calling the constructor.
CONSUMED = {"model": {"compile": bool}}  # the LightningModule compiles the net (module.build_net)
NOT_CHECKED = {"hydra"}  # Hydra checks its own config

Check = Callable[[Any], bool]


def valid(check: Check, what: str, **kwargs: Any) -> Any:
    """A dataclass field whose value must pass `check`; `what` says what would be valid."""
    return field(metadata={"valid": (check, what)}, **kwargs)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def at_least(least: int | float, null: bool = False, integer: bool = True) -> Any:
    kind = "an integer" if integer else "a number"
    return valid(
        lambda v: (null and v is None) or ((is_int(v) if integer else is_number(v)) and v >= least),
        f"{kind} >= {least}" + (", or null" if null else ""),
    )


def one_of(*choices: str) -> Any:
    return valid(lambda v: v in choices, f"one of {', '.join(choices)}")


def required(what: str) -> Any:
    """A value the command cannot do without (null or empty in the YAML): refused as `key is required`."""
    return field(metadata={"required": what})


def dataclass_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def target_schema(target: str) -> dict[str, Any] | None:
    """The keys a `_target_` node may have and their types; None when any key may do."""
    try:
        cls = get_class(target)
        params = inspect.signature(cls).parameters.values()
    except Exception:  # noqa: BLE001 - an unimportable target is instantiate's error to report, with its cause
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that do not evaluate: keys only
        hints = {}
    schema = {p.name: hints.get(p.name, Any) for p in params if p.kind is not p.VAR_POSITIONAL}
    return {**HYDRA_KEYS, **schema}


def schema_of(path: str, node: dict, annotation: Any) -> dict[str, Any] | None:
    if dataclasses.is_dataclass(annotation):
        return dataclass_schema(annotation)
    target = node.get("_target_")
    if not isinstance(target, str):
        return None
    schema = target_schema(target)
    if schema is None:
        return None
    if path == "optimizer":
        schema.pop("params", None)  # bound by the LightningModule
    return {**schema, **CONSUMED.get(path, {})}


def scalar_types(annotation: Any) -> set[type] | None:
    """The types a value may have when `annotation` admits only numbers, booleans and null; None otherwise.

    Classes a config value can never be (Tensor, Path, timedelta) are left out of a union first.
    """
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    members = typing.get_args(annotation) if union else (annotation,)
    members = {m for m in members if not (isinstance(m, type) and m.__module__ != "builtins")}
    return members if members and members <= {int, float, bool, type(None)} else None


def describe(kinds: set[type]) -> str:
    words = ["a number" if float in kinds else "an integer" if int in kinds else ""]
    words += ["true or false" if bool in kinds else "", "null" if type(None) in kinds else ""]
    return " or ".join(w for w in words if w)


def has_type(value: Any, kinds: set[type]) -> bool:
    if isinstance(value, bool) or value is None:
        return type(value) in kinds
    if isinstance(value, int):
        return bool(kinds & {int, float})
    return type(value) in kinds


def check_node(path: str, node: dict, annotation: Any, command: str) -> None:
    """Refuse an unknown key or a wrongly typed value in `node`, then check the nodes inside it."""
    schema = schema_of(path, node, annotation)
    for key, value in node.items():
        name = f"{path}.{key}" if path else str(key)
        if schema is not None and key not in schema:
            peer = pointer(command, name)
            if peer is not None:
                raise CharLMError(f"unknown key {name!r}: {peer}")
            close = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=CLOSE_ENOUGH)
            hint = f" (did you mean {name[: -len(str(key))]}{close[0]}?)" if close else ""
            raise CharLMError(f"unknown key {name!r}{hint}")
        expected = schema.get(key, Any) if schema is not None else Any
        kinds = scalar_types(expected)
        interpolated = isinstance(value, str) and ("${" in value or value == "???")  # checked where it points
        if kinds is not None and not interpolated and not has_type(value, kinds):
            raise CharLMError(f"{name}={value!r} is not valid: expected {describe(kinds)}")
        if isinstance(value, dict) and name not in NOT_CHECKED:
            check_node(name, value, expected, command)


def check_rules(values: Mapping[str, Any], schema: type, path: str = "") -> None:
    """Refuse a value its field's rule does not allow (types are `check_node`'s)."""
    for f in dataclasses.fields(schema):
        name = f"{path}{f.name}"
        value = values.get(f.name)
        if "required" in f.metadata and value in (None, ""):
            raise CharLMError(f"{name} is required: {f.metadata['required']}")
        if "valid" in f.metadata and f.name in values:
            check, what = f.metadata["valid"]
            if not check(value):
                raise CharLMError(f"{name}={value!r} is not valid: expected {what}")


def check_options(cfg: DictConfig | Mapping[str, Any], schema: type, command: str) -> None:
    """A command's composed options against its schema: keys and types, then each field's rule."""
    node = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    node.pop("hydra", None)
    check_node("", node, schema, command)
    check_rules(node, schema)


# ---- the commands' schemas (their values and defaults: conf/generate.yaml, evaluate.yaml, inspect.yaml)

CKPT = "a .ckpt file or a run directory (ckpt_path=outputs/runs/...)"
WHICH = ("best", "last")
CONTEXTS = ("windows", "stream")


@dataclass(kw_only=True)
class SamplingRules:
    """How each next character is picked; shared by `charlm-generate` and `charlm.sampling.SamplingOptions`."""

    temperature: float = valid(lambda v: is_number(v) and v > 0, "a number > 0 (greedy=true for argmax decoding)")
    top_k: int | None = at_least(1, null=True)
    top_p: float | None = valid(lambda v: v is None or is_number(v) and 0 < v <= 1, "a number in (0, 1], or null")
    greedy: bool


@dataclass(kw_only=True)
class CheckpointOptions:
    """What every command that reads a trained model takes: which checkpoint, and where to run it."""

    ckpt_path: str | None = required(CKPT)
    which: str = one_of(*WHICH)
    device: str | None


@dataclass(kw_only=True)
class ReadingOptions(CheckpointOptions):
    """How a text is read for scoring (evaluate, inspect): its unknown characters and its context."""

    text_file: str | None
    unknown: str = one_of(*UNKNOWN_MODES)
    context: str = one_of(*CONTEXTS)
    stride: int | None = at_least(1, null=True)


@dataclass(kw_only=True)
class GenerateOptions(SamplingRules, CheckpointOptions):
    prompt: str
    prompt_file: str | None
    input: str | None
    input_file: str | None
    beam_size: int | None = at_least(1, null=True)
    attention_png: str | None
    max_new_tokens: int = at_least(0)
    num_samples: int = at_least(1)
    seed: int
    use_cache: bool


@dataclass(kw_only=True)
class EvaluateOptions(ReadingOptions):
    split: str = one_of("val", "test", "train")
    batch_size: int = at_least(1)
    dynamic_eval: bool
    dynamic_lr: float = at_least(0, integer=False)
    dynamic_decay: float = at_least(0, integer=False)
    dynamic_rule: str = one_of("sgd", "rms")
    cache_dir: str


@dataclass(kw_only=True)
class InspectOptions(ReadingOptions):
    text: str | None
    max_chars: int = at_least(2)
    block_size: int | None = at_least(1, null=True)
    unit: str | None
    top_units: int = at_least(1)
    attention_start: int = at_least(0)
    attention_length: int = at_least(1)
    output: str | None
