"""Prometheus' grammar for what a profile hands to Prometheus: durations (a rule's
``for:``) and label names, as Prometheus parses them.

Durations are ``model.ParseDuration`` of prometheus/common (every version
since v0.39, the one Debian's Prometheus 2.42 is built with): ``0``, or units
``y w d h m s ms`` from the largest to the smallest, each at most once, with
whole numbers, and a total of at most 2^63 - 1 nanoseconds ("duration out of
range" beyond). Headroom takes that language with two bounds of its own, so
the API server can check the same thing with CEL integer arithmetic: at most
:data:`DURATION_DIGITS` digits per unit and :data:`DURATION_MAX_LENGTH`
characters. :func:`duration_problem` is the model's check;
:data:`DURATION_PATTERN` and :func:`duration_cel` are the CRD's, from the same
table of units.

Label names are the classic ``[a-zA-Z_][a-zA-Z0-9_]*`` (what every Prometheus
version accepts; rule files refuse ``__name__``), and Headroom refuses the
whole ``__`` prefix Prometheus reserves for its internal labels.

Used by :mod:`headroom.api.v1alpha1.alerts`.
"""

from __future__ import annotations

import re

# unit -> milliseconds, from the largest
UNITS: tuple[tuple[str, int], ...] = (
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
)
# 2^63 - 1 nanoseconds, in whole milliseconds (time.Duration's range)
MAX_MILLISECONDS = (2**63 - 1) // 1_000_000
# 8 digits keep every term of the CEL sum below 2^63 (99999999y in ms is ~3.2e18)
DURATION_DIGITS = 8
# room for every unit at its most digits (99999999y...99999999ms)
DURATION_MAX_LENGTH = 64
DURATION_PATTERN = (
    "^(0|" + "".join(f"([0-9]{{1,{DURATION_DIGITS}}}{unit})?" for unit, _ in UNITS) + ")$"
)
DURATION_EXAMPLES = "e.g. 90s, 5m, 1h30m, 1d"
_UNIT_ORDER = " ".join(unit for unit, _ in UNITS)
_PART = re.compile(r"([0-9]+)([a-z]+)")


def duration_problem(text: str) -> str | None:
    """Why Prometheus (or Headroom's bounds) would refuse ``text`` as a duration."""
    if text == "0":
        return None
    if not text:
        return f"must be a Prometheus duration ({DURATION_EXAMPLES}), not empty"
    if len(text) > DURATION_MAX_LENGTH:
        return f"must be at most {DURATION_MAX_LENGTH} characters"
    position = 0
    last = -1
    total = 0
    order = [unit for unit, _ in UNITS]
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        digits, unit = match.groups()
        if unit not in order or order.index(unit) <= last:
            return (
                f"{text!r} is not a Prometheus duration: units {_UNIT_ORDER} from the "
                f"largest to the smallest, each at most once ({DURATION_EXAMPLES})"
            )
        if len(digits) > DURATION_DIGITS:
            return f"{text!r}: at most {DURATION_DIGITS} digits per unit"
        last = order.index(unit)
        total += int(digits) * UNITS[last][1]
        position = match.end()
    if position != len(text):
        return f"{text!r} is not a Prometheus duration ({DURATION_EXAMPLES})"
    if total > MAX_MILLISECONDS:
        return (
            f"{text!r} is out of Prometheus' range (at most 106751d23h47m16s854ms, about 292 years)"
        )
    return None


def _unit_value(unit: str) -> str:
    """CEL: the number before ``unit`` in ``self`` (0 without it); ``self`` matches
    the pattern, so each unit is there at most once, in order."""
    # minutes: "5m" but not the "5m" of "5ms"
    found = "[0-9]+m([0-9]|$)" if unit == "m" else f"[0-9]+{unit}"
    return f"(self.matches('{found}') ? int(self.find('{found}').find('[0-9]+')) : 0)"


def duration_cel() -> str:
    """CEL: the total of a duration that matches :data:`DURATION_PATTERN` is in range."""
    terms = " + ".join(f"{_unit_value(unit)} * {ms}" for unit, ms in UNITS)
    return f"!self.matches('{DURATION_PATTERN}') || {terms} <= {MAX_MILLISECONDS}"


DURATION_RANGE_MESSAGE = "must be at most 106751d23h47m16s854ms (Prometheus' range, ~292 years)"

LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
RESERVED_PREFIX = "__"


def label_name_problem(name: str) -> str | None:
    if not re.fullmatch(LABEL_NAME, name):
        return f"{name!r} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"
    if name.startswith(RESERVED_PREFIX):
        return f"{name!r}: label names starting with __ are reserved for Prometheus' own use"
    return None
