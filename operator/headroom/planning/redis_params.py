"""The redis.conf settings a profile may override.

Used by the planner to validate ``spec.cache.instances[].config``. Settings
that decide memory, eviction, persistence, auth, networking or files are
Headroom's and never come from a profile.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headroom.planning import values


@dataclass(frozen=True)
class Setting:
    kind: str  # int | yesno | enum | flags
    low: int = 0
    high: int = 2_147_483_647
    choices: tuple[str, ...] = ()


ALLOWED: dict[str, Setting] = {
    "timeout": Setting("int", 0, 86_400),
    "tcp-keepalive": Setting("int", 0, 32_767),
    "hz": Setting("int", 1, 500),
    "maxclients": Setting("int", 1, 100_000),
    "maxmemory-samples": Setting("int", 1, 64),
    "appendfsync": Setting("enum", choices=("always", "everysec", "no")),
    "slowlog-log-slower-than": Setting("int", -1, 100_000_000),
    "slowlog-max-len": Setting("int", 0, 100_000),
    "latency-monitor-threshold": Setting("int", 0, 100_000),
    "lazyfree-lazy-eviction": Setting("yesno"),
    "lazyfree-lazy-expire": Setting("yesno"),
    "lazyfree-lazy-user-del": Setting("yesno"),
    "activedefrag": Setting("yesno"),
    "notify-keyspace-events": Setting("flags"),
}
_FLAGS = re.compile(r"^[KEg$lshzxetmdnA]*$")


def check(key: str, value: str) -> str | None:
    """A problem (without field prefix) or None when ``key value`` is valid."""
    setting = ALLOWED.get(key)
    if setting is None:
        return (
            "is not an allowed redis.conf setting (allowed: "
            + ", ".join(sorted(ALLOWED))
            + "); memory, eviction, persistence, auth and network are managed by Headroom"
        )
    problem = values.multi_line(value)
    if problem:
        return problem
    if setting.kind == "int":
        return values.integer(value, low=setting.low, high=setting.high)
    if setting.kind == "yesno":
        return values.choice(value, ("yes", "no"))
    if setting.kind == "enum":
        return values.choice(value, setting.choices)
    if not _FLAGS.fullmatch(value):
        return f"must be keyspace event flags (KEg$lshzxetmdnA), got {value!r}"
    return None
