"""Value checks shared by the config allowlists (pgbouncer.ini, redis.conf).

Each returns a problem sentence (without the field prefix) or None.
"""

from __future__ import annotations

import re

_INT = re.compile(r"-?[0-9]{1,10}")


def multi_line(value: str) -> str | None:
    if "\n" in value or "\r" in value or "\x00" in value:
        return "must be a single line"
    return None


def integer(value: str, *, low: int, high: int) -> str | None:
    if not _INT.fullmatch(value.strip()):
        return f"must be an integer, got {value!r}"
    number = int(value)
    if not low <= number <= high:
        return f"must be between {low} and {high}, got {number}"
    return None


def choice(value: str, choices: tuple[str, ...]) -> str | None:
    if value not in choices:
        return f"must be one of {', '.join(choices)}, got {value!r}"
    return None
