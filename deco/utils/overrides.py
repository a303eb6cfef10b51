"""Free text on the command line: `text="Yes, it is red."` as typed.

The shell strips the double quotes, so Hydra would see `text=Yes, it is red.` and read the comma as a
sweep (or a syntax error). For keys whose values are prose, `quote_free_text` wraps the value in Hydra's
single quotes (escaping quotes and the backslashes before them) before Hydra parses the command line.
A value the user already quoted for Hydra (`text='"Yes, it is red."'`), or a sweep function
(`text='choice("a, b","c")'` with -m), is left alone.
"""

from __future__ import annotations

import re

SWEEP_FUNCTIONS = ("choice(", "range(", "interval(", "glob(", "shuffle(", "sort(", "tag(")


def hydra_quote(value: str) -> str:
    """`value` as a Hydra single-quoted string: `it's` -> `'it\\'s'`; backslashes before a quote doubled."""
    escaped = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value)
    escaped = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, escaped)  # a trailing backslash would eat the quote
    return f"'{escaped}'"


def _already_quoted(value: str) -> bool:
    return len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""


def quote_free_text(argv: list[str], keys: tuple[str, ...]) -> list[str]:
    """argv with every `key=value` (also `+key=` / `++key=`) of `keys` quoted for Hydra's grammar."""
    out = []
    for arg in argv:
        match = re.fullmatch(r"(\+{0,2})([A-Za-z_][\w.]*)=(.*)", arg, flags=re.S)
        if match and match.group(2) in keys:
            value = match.group(3)
            if value and not _already_quoted(value) and not value.startswith(SWEEP_FUNCTIONS) and value != "null":
                arg = f"{match.group(1)}{match.group(2)}={hydra_quote(value)}"
        out.append(arg)
    return out
