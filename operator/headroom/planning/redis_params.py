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


# The redis.conf settings Headroom renders that Redis takes online, by
# ``CONFIG SET``, each with Redis's own default (what a setting removed from
# the file goes back to, online). tests/conformance/test_redis_online.py holds
# both to the real redis-server: each is accepted by CONFIG SET, and a server
# started without them reports these defaults. Every other directive of the
# file is taken only at start: ``dir`` (a protected config: CONFIG SET refuses
# it), ``include`` (a directive, not a setting), and anything not listed here,
# so an unknown one rolls the pods rather than being half-applied.
# ``activedefrag yes`` is refused by a build without Redis's own jemalloc (the
# official image has it; Debian's package does not): the agent logs the
# refusal and tries again, the file keeps the value for the next start.
ONLINE_DEFAULTS: dict[str, str] = {
    "bind": "* -::*",
    "port": "6379",
    "protected-mode": "yes",
    "maxmemory": "0",
    "maxmemory-policy": "noeviction",
    "appendonly": "no",
    "save": "3600 1 300 100 60 10000",
    "min-replicas-to-write": "0",
    "min-replicas-max-lag": "10",
    "timeout": "0",
    "tcp-keepalive": "300",
    "hz": "10",
    "maxclients": "10000",
    "maxmemory-samples": "5",
    "appendfsync": "everysec",
    "slowlog-log-slower-than": "10000",
    "slowlog-max-len": "128",
    "latency-monitor-threshold": "0",
    "lazyfree-lazy-eviction": "no",
    "lazyfree-lazy-expire": "no",
    "lazyfree-lazy-user-del": "no",
    "activedefrag": "no",
    "notify-keyspace-events": "",
}


def _value(text: str) -> str:
    """A directive's arguments as CONFIG SET takes them: one string, the
    quotes of a single quoted argument removed (``save ""`` is the empty one)."""
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def conf_settings(conf: str) -> dict[str, str]:
    """The directives of a rendered redis.conf, by name; the last of a
    repeated setting wins (as in Redis), repeated ``include``s are kept."""
    found: dict[str, str] = {}
    for raw in conf.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, rest = line.partition(" ")
        key, value = key.lower(), _value(rest.strip())
        if key == "include" and key in found:
            value = f"{found[key]}\n{value}"
        found[key] = value
    return found


def restart_settings(conf: str) -> dict[str, str]:
    """The directives of ``conf`` Redis takes only at start."""
    return {k: v for k, v in conf_settings(conf).items() if k not in ONLINE_DEFAULTS}


def restart_changes(before: str, after: str) -> list[str]:
    """The start-only directives whose value differs between two redis.conf texts."""
    old, new = restart_settings(before), restart_settings(after)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))


def online_changes(before: str, after: str) -> dict[str, str]:
    """What to ``CONFIG SET`` to go from ``before`` to ``after``: each online
    setting whose value differs, a removed one at Redis's default."""
    old, new = conf_settings(before), conf_settings(after)
    changed = {}
    for key, default in ONLINE_DEFAULTS.items():
        wanted = new.get(key, default)
        if wanted != old.get(key, default):
            changed[key] = wanted
    return changed
