"""The one error type for user mistakes.

Anything raised as `CharLMError` is the user's to fix (a bad path, value or checkpoint);
the command-line entry points print its message on one line and exit with status 2
instead of showing a traceback. Everything else is a bug and keeps its traceback.
Inside a Hydra multirun the error is raised instead: exiting would end every job of the
sweep, while a raised error fails only this job (charlm.tooling.sweep records it and goes on).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

EXIT_USER_ERROR = 2

F = TypeVar("F", bound=Callable[..., Any])


class CharLMError(Exception):
    """A problem with the user's input, reported as a single line."""

    exit_code = EXIT_USER_ERROR


class RunInterrupted(CharLMError):
    """Ctrl-C: the run stopped where the user asked, its checkpoint saved (exit status 130, as for SIGINT)."""

    exit_code = 130


def in_multirun() -> bool:
    """True inside a job of a Hydra multirun (`-m`), where one job must not end the others."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def log_to_files(message: str) -> None:
    """Write `message` to the run's log file (Hydra's file handlers) without printing it again."""
    record = logging.LogRecord("charlm", logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def exit_on_user_error(fn: F) -> F:
    """Turn a `CharLMError` escaping `fn` into `error: ...` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CharLMError as err:
            if in_multirun():
                raise
            print(f"error: {err}", file=sys.stderr, flush=True)
            log_to_files(f"error: {err}")
            sys.exit(err.exit_code)

    return wrapper  # type: ignore[return-value]
