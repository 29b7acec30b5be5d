"""Argument checks shared by the models, data modules, callbacks and config: one line naming the bad value."""

from __future__ import annotations

from collections.abc import Collection

from charlm.errors import CharLMError


def require_positive(**values: int | float) -> None:
    """Refuse sizes and rates that are zero or negative, naming the offending argument."""
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise CharLMError(f"{name} must be a positive number, got {value!r}")


def require_dropout(dropout: float) -> None:
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise CharLMError(f"dropout must be in [0, 1), got {dropout!r}")


def require_fraction(name: str, value: object) -> None:
    """Refuse anything but a number in [0, 1) (a decay, a share of a budget), naming the config key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise CharLMError(f"{name}={value!r} is not valid: expected a number in [0, 1)")


def require_choice(name: str, value: object, options: Collection[str]) -> None:
    """Refuse a value outside a fixed set of choices, naming it and listing what is valid."""
    if value not in options:
        raise CharLMError(f"{name}={value!r} is not valid; choose one of {', '.join(options)}")
