"""The one error type for user mistakes.

Anything raised as `CharLMError` is the user's to fix (a bad path, value or checkpoint);
the command-line entry points (`charlm.cli.argv`) print its message on one line and exit with
status 2 instead of showing a traceback. Everything else is a bug and keeps its traceback.
This module imports only the standard library, so the models and data modules that raise it stay free of Hydra.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

EXIT_USER_ERROR = 2


class CharLMError(Exception):
    """A problem with the user's input, reported as a single line."""

    exit_code = EXIT_USER_ERROR


class RunInterrupted(CharLMError):
    """Ctrl-C: the run stopped where the user asked, its checkpoint saved (exit status 130, as for SIGINT)."""

    exit_code = 130


def one_line(err: BaseException) -> str:
    """A user error is its message; anything else also names the exception type."""
    text = str(err) if isinstance(err, CharLMError) else f"{type(err).__name__}: {err}"
    return " ".join(text.split())


class OneLineParser(argparse.ArgumentParser):
    """argparse whose mistakes are `CharLMError`s: one line, exit 2, like every other mistake."""

    def error(self, message: str) -> NoReturn:
        raise CharLMError(f"{message} (see {self.prog} --help)")
