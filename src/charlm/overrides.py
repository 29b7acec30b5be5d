"""Free text as Hydra overrides: any characters a user types reach the config unchanged.

Hydra reads every `key=value` with its override grammar, in which commas, quotes, brackets,
`=`, `$`, spaces at either end and non-ASCII letters all mean something or are refused. A
prompt or a path is text, not grammar: these functions quote it so that Hydra and OmegaConf
read back exactly the characters the shell gave.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# A run of backslashes right before `${` is read by OmegaConf as escapes; `\${` is a literal `${`.
_INTERPOLATION = re.compile(r"(\\*)\$\{")


def quote_override(key: str, text: str) -> str:
    """`key='text'` such that Hydra and OmegaConf give back exactly `text` (any characters at all)."""
    from hydra.core.override_parser.types import Quote, QuotedString

    literal = _INTERPOLATION.sub(lambda m: m.group(1) * 2 + "\\${", text)
    return f"{key}={QuotedString(text=literal, quote=Quote.single).with_quotes()}"


def verbatim(argv: list[str], keys: Iterable[str]) -> list[str]:
    """argv with each `key=text` of `keys` quoted, so its text reaches the config unchanged."""
    keys = tuple(keys)
    out = []
    for arg in argv:
        key, sep, text = arg.partition("=")
        out.append(quote_override(key, text) if sep and key in keys else arg)
    return out
