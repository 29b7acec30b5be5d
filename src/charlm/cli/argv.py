"""The command line as a person types it: free text taken verbatim, and one error line for every mistake.

Hydra reads every `key=value` with its override grammar, in which commas, quotes, brackets,
`=`, `$`, spaces at either end and non-ASCII letters all mean something or are refused. A
prompt is text, not grammar: `verbatim` rewrites the text-valued arguments (`prompt=...`) into
quoted overrides that Hydra and OmegaConf read back as exactly the characters the shell gave.

`run_app` runs a `@hydra.main` app so that Hydra's own errors (an unparsable override, an
unknown group, option or key) end like every other user mistake: one `error:` line on stderr
and exit status 2, with the closest valid name suggested. `HYDRA_FULL_ERROR=1` set by the user
still shows the full traceback.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from charlm.cli.rundir import forget_run_dir, remember_run_dir, tidy_refused_run
from charlm.dialects import CLOSE_ENOUGH, pointer
from charlm.errors import EXIT_USER_ERROR, CharLMError
from charlm.hydra_run import in_multirun

F = TypeVar("F", bound=Callable[..., Any])


def flags_first(argv: list[str]) -> list[str]:
    """argv with Hydra's flags (`--cfg job`, `-m`, ...) before the overrides: its parser refuses overrides
    on both sides of a flag, so `resume=DIR --cfg job model=gru` works only once reordered; `--info` with
    no value goes last, so `--info model=gru` does not read `model=gru` as its value."""
    from hydra._internal.utils import get_args_parser

    actions = {flag: action for action in get_args_parser()._actions for flag in action.option_strings}
    flags: list[str] = []
    overrides: list[str] = []
    bare: list[str] = []  # `--info` without its optional value: last, or it would take an override as one
    tokens = list(argv[1:])
    while tokens:
        token = tokens.pop(0)
        action = actions.get(token)
        if action is None:
            (flags if token.startswith("-") else overrides).append(token)
            continue
        takes_value = action.nargs is None or (action.nargs == "?" and bool(tokens) and tokens[0] in action.choices)
        if action.nargs == "?" and not takes_value:
            bare.append(token)
            continue
        flags.append(token)
        if takes_value and tokens:
            flags.append(tokens.pop(0))
    return [argv[0], *flags, *overrides, *bare]


HELP_FLAGS = ("-h", "--help", "--hydra-help")


def check_flags(argv: list[str], command: str) -> None:
    """Refuse, in one line, a flag that is not Hydra's: `-primetext x` (char-rnn's single dash, which
    argparse would read as `-p rimetext`), `--compile=False` (nanoGPT's), `--nope` (argparse's 8-line usage)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()
    known = {flag for action in parser._actions for flag in action.option_strings}
    for token in argv[1:]:
        if not token.startswith("-") or token.split("=", 1)[0] in known or is_number(token):
            continue
        name = token.lstrip("-").split("=", 1)[0]
        peer = pointer(command, name)
        hint = f": {peer}" if peer else "; charlm takes key=value settings (e.g. model=gru); --help lists them"
        raise CharLMError(f"{token!r} is not a flag of this command{hint}")

    def refuse(message: str) -> NoReturn:
        raise CharLMError(f"{message} (see {os.path.basename(argv[0])} --help)")

    parser.error = refuse  # type: ignore[method-assign]
    parser.parse_args([t for t in argv[1:] if t not in HELP_FLAGS])


def is_number(token: str) -> bool:
    """`-1` after a flag is its value, not a flag of its own."""
    try:
        float(token)
        return True
    except ValueError:
        return False


@dataclass(frozen=True)
class ConfigSource:
    """Where an app's configs are (`pkg://module` or a directory): error messages compose them
    again to suggest valid names."""

    config_path: str
    config_name: str

    def initialize(self) -> Any:
        from hydra import initialize_config_dir, initialize_config_module

        if self.config_path.startswith("pkg://"):
            return initialize_config_module(self.config_path.removeprefix("pkg://"), version_base="1.3")
        return initialize_config_dir(config_dir=self.config_path, version_base="1.3")


def run_app(
    app: Callable[[], Any],
    configs: ConfigSource,
    rewrite: Callable[[list[str]], list[str]] | None = None,
    hydra_flags: bool = True,
) -> None:
    """Run a command (a `@hydra.main` function, or one that composes configs itself); a user mistake
    anywhere ends in one `error:` line and exit 2. `rewrite` turns the command line into what it reads;
    `hydra_flags=False` for a command with flags of its own (the benchmark), which checks them itself."""
    user_setting = os.environ.get("HYDRA_FULL_ERROR")
    show_traceback = user_setting == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra then raises its errors instead of printing them its way
    try:
        if rewrite is not None:
            sys.argv = rewrite(sys.argv)
        if hydra_flags:
            check_flags(sys.argv, configs.config_name)
        app()
    except CharLMError as err:
        tidy_refused_run()
        fail(str(err), err.exit_code)
    except Exception as err:
        message = None if show_traceback else user_error(err, configs)
        if message is None:
            raise
        tidy_refused_run()  # a Trainer or config refusal from inside the job (see exit_on_user_error)
        fail(message)
    finally:
        if user_setting is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_setting


def fail(message: str, exit_code: int = EXIT_USER_ERROR) -> None:
    print(f"error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.exit(exit_code)


def user_error(err: BaseException, configs: ConfigSource) -> str | None:
    """The one-line message for an error that is the user's to fix, or None for a bug."""
    from hydra.errors import HydraException, InstantiationException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(err, InstantiationException) and isinstance(err.__cause__, CharLMError):
        return str(err.__cause__)
    if isinstance(err, OverrideParseException):
        return (
            f"could not parse the override {err.override!r} ({first_lines(err.message, 1)}); a value with "
            "spaces or any of , = [ ] { } ( ) ' \" : needs quotes, e.g. key='a, b'"
        )
    if isinstance(err, MissingConfigException):
        return missing_option(err, configs)
    if isinstance(err, ValueError) and str(err).startswith("Only one of --run"):  # Hydra's flag clash
        return first_lines(str(err), 1)
    if type(err).__name__ == "MisconfigurationException":  # Lightning's word for a Trainer setting it refuses
        return first_lines(str(err), 1)
    if isinstance(err, HydraException | OmegaConfBaseException):
        text = str(err)
        if "Could not override" in text or "is not in struct" in text:
            return unknown_key(text, configs)
        return first_lines(text)
    if {"-m", "--multirun"} & set(sys.argv):  # a sweeper that gave up (Optuna: no trial completed)
        from charlm.tooling.sweep import failed_sweep_message

        return failed_sweep_message()
    return None


def first_lines(text: str, limit: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return "; ".join(lines[:limit])


def missing_option(err: BaseException, configs: ConfigSource) -> str:
    """`model=lstmm`: name the group's options and the closest one."""
    text = str(err)
    found = re.search(r"Could not find '([^']+)'", text)
    if not found or "/" not in found.group(1):
        return first_lines(text)
    group, _, option = found.group(1).rpartition("/")
    peer = pointer(configs.config_name, group)
    if peer is not None and configs.config_name != "train":  # `model=` to generate: char-rnn's checkpoint flag
        return f"unknown key {group!r}: {peer}"
    options = group_options(group, configs) or re.findall(r"^\t(\S+)$", text, re.M)
    if not options:
        return f"{group}={option} is not a config option: there is no config group {group!r}"
    return f"{group}={option} is not an option of {group!r}; choose one of {', '.join(options)}" + did_you_mean(
        option, options
    )


def unknown_key(text: str, configs: ConfigSource) -> str:
    """`modle=lstm`, `optimizer.lrr=1`: name the key and the closest existing one."""
    found = re.search(r"Could not override '([^']+)'", text) or re.search(r"full_key: (\S+)", text)
    if found is None:
        return first_lines(text)
    key = found.group(1)
    peer = pointer(configs.config_name, key)
    if peer is not None:
        return f"unknown key {key!r}: {peer}"
    return f"unknown key {key!r}" + closest_key(key, composed_without(key, configs))


def closest_key(key: str, cfg: Any) -> str:
    """` (did you mean a.b?)` for the first part of `key` that `cfg` lacks, or '' with no close name."""
    from omegaconf import DictConfig

    parts, node = key.split("."), cfg
    for depth, part in enumerate(parts):
        if not isinstance(node, DictConfig):
            return ""
        if part not in node:
            close = difflib.get_close_matches(part, [str(k) for k in node.keys()], n=1, cutoff=CLOSE_ENOUGH)
            return f" (did you mean {'.'.join([*parts[:depth], close[0], *parts[depth + 1 :]])}?)" if close else ""
        node = node[part]
    return ""


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=CLOSE_ENOUGH)
    return f" (did you mean {close[0]}?)" if close else ""


def group_options(group: str, configs: ConfigSource) -> list[str]:
    from hydra.core.global_hydra import GlobalHydra

    try:
        with configs.initialize():
            return sorted(GlobalHydra.instance().config_loader().get_group_options(group))
    except Exception:
        return []


def composed_without(bad_key: str, configs: ConfigSource) -> Any:
    """The config composed from the command line's other overrides (or none), or None if even that fails."""
    from hydra import compose
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_known_args(sys.argv[1:])[0]
    others = [o for o in args.overrides if o.split("=", 1)[0].lstrip("+~") != bad_key]
    for attempt in (others, []):
        try:
            with configs.initialize():
                return compose(args.config_name or configs.config_name, overrides=attempt)
        except Exception:
            continue
    return None


# ---- inside a job


def log_to_files(message: str) -> None:
    """Write `message` to the run's log file (Hydra's file handlers) without printing it again."""
    record = logging.LogRecord("charlm", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def exit_on_user_error(fn: F) -> F:
    """Inside a job: a `CharLMError` ends the run as one `error:` line (also in train.log) and its exit
    status. Inside a multirun it is raised instead: exiting would end every job of the sweep, while a
    raised error fails only this job (charlm.tooling.sweep records it and goes on).

    A single run refused before it trained leaves no trace (charlm.cli.rundir.tidy_refused_run): the directory
    it made is removed when it holds nothing but what Hydra wrote, one that was there is left as it was;
    here for a `CharLMError`, in `run_app` for the Hydra and Lightning refusals that leave the job as
    exceptions. Sweep jobs keep theirs (the summary lists them)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not in_multirun():
            remember_run_dir(args[0] if args else kwargs.get("cfg"))
        try:
            result = fn(*args, **kwargs)
        except CharLMError as err:
            if in_multirun():
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            log_to_files(f"error: {err}")
            tidy_refused_run()
            sys.exit(err.exit_code)
        forget_run_dir()
        return result

    return wrapper  # type: ignore[return-value]
