"""The pgbouncer.ini settings a profile may override, with their types and the
PgBouncer version that introduced them.

Used by the planner to validate ``spec.pooler.parameters`` (so a bad value is an
admission error naming the key) and to compute the final [pgbouncer] section.
Nothing outside this allowlist reaches the file: keys that would change where
PgBouncer listens, how it authenticates or which files it reads are Headroom's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from headroom.planning import values

# Values are rendered unquoted after "key = ", so only characters that cannot
# end the line or start a new directive are allowed in free-text values.
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9_ ,.:;()=*'-]{0,200}$")
_IDENT_LIST = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(,\s*[A-Za-z_][A-Za-z0-9_]*)*$")

# Sizing keys are not free overrides: they pin the planner (see planning.budget).
SIZING_KEYS = ("default_pool_size", "reserve_pool_size", "max_db_connections", "max_client_conn")


# The settings PgBouncer does not take on RELOAD: those its ``SHOW CONFIG``
# marks ``changeable = no`` (1.26.1, the default image's release;
# tests/conformance/test_pgbouncer_settings.py compares this with the running
# program). Every other setting, and the [databases] section, is taken by
# RELOAD: the write pooler's agent (headroom.agent.pooler) reloads them, and only a change of one of
# these rolls the pooler's pods.
RESTART_SETTINGS = frozenset(
    {
        "disable_pqexec",
        "job_name",
        "listen_addr",
        "listen_backlog",
        "listen_port",
        "pidfile",
        "pkt_buf",
        "resolv_conf",
        "so_reuseport",
        "track_extra_parameters",
        "unix_socket_dir",
        "unix_socket_group",
        "unix_socket_mode",
        "user",
    }
)


@dataclass(frozen=True)
class Param:
    kind: str  # "int", "bool", "enum", "text", "idents"
    min_version: tuple[int, int] = (1, 18)
    low: int = 0
    high: int = 2_147_483_647
    choices: tuple[str, ...] = ()


ALLOWED: dict[str, Param] = {
    # sizing (pinned values, checked against the budget)
    "default_pool_size": Param("int", low=1, high=100_000),
    "reserve_pool_size": Param("int", low=0, high=100_000),
    "max_db_connections": Param("int", low=1, high=100_000),
    "max_client_conn": Param("int", low=1, high=1_000_000),
    # pool behaviour
    "min_pool_size": Param("int", low=0, high=100_000),
    "reserve_pool_timeout": Param("int", low=0, high=3600),
    "server_round_robin": Param("bool"),
    "max_prepared_statements": Param("int", min_version=(1, 21), low=0, high=100_000),
    # timeouts (seconds)
    "server_lifetime": Param("int", low=0, high=86_400 * 7),
    "server_idle_timeout": Param("int", low=0, high=86_400 * 7),
    "server_connect_timeout": Param("int", low=1, high=3600),
    "server_login_retry": Param("int", low=0, high=3600),
    "query_timeout": Param("int", low=0, high=86_400),
    "query_wait_timeout": Param("int", low=0, high=86_400),
    "client_idle_timeout": Param("int", low=0, high=86_400 * 7),
    "client_login_timeout": Param("int", low=0, high=3600),
    "idle_transaction_timeout": Param("int", low=0, high=86_400),
    "cancel_wait_timeout": Param("int", min_version=(1, 19), low=0, high=3600),
    # health checks and resets
    "server_check_delay": Param("int", low=0, high=3600),
    "server_check_query": Param("text"),
    "server_reset_query": Param("text"),
    "server_reset_query_always": Param("bool"),
    "ignore_startup_parameters": Param("idents"),
    "application_name_add_host": Param("bool"),
    # logging and stats
    "log_connections": Param("bool"),
    "log_disconnections": Param("bool"),
    "log_pooler_errors": Param("bool"),
    "log_stats": Param("bool"),
    "stats_period": Param("int", low=1, high=86_400),
    "verbose": Param("int", low=0, high=3),
    # network
    "tcp_keepalive": Param("bool"),
    "tcp_keepidle": Param("int", low=0, high=32_767),
    "tcp_keepintvl": Param("int", low=0, high=32_767),
    "tcp_keepcnt": Param("int", low=0, high=127),
    "pkt_buf": Param("int", low=512, high=1_048_576),
    "sbuf_loopcnt": Param("int", low=0, high=1_000_000),
    "server_tls_sslmode": Param(
        "enum", choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
    ),
}


def parse_version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


# The tag of an image reference (after the last ':' that follows the last '/'),
# when it starts with a PgBouncer version: 1.24.1, v1.23.0-p1, 1.22.
_TAG_VERSION = re.compile(r"^v?(1)\.(\d+)(?:[.\-_].*)?$")


def image_version(image: str) -> tuple[int, int] | None:
    """The PgBouncer major.minor an image's tag names, or None (digest, latest, ...)."""
    reference = image.split("@", 1)[0]
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return None
    match = _TAG_VERSION.match(tag)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check(key: str, value: str, *, version: tuple[int, int]) -> str | None:
    """Return a problem (without the field prefix) or None when key=value is valid."""
    param = ALLOWED.get(key)
    if param is None:
        return (
            "is not an allowed PgBouncer setting (allowed: "
            + ", ".join(sorted(ALLOWED))
            + "); listen, auth and file settings are managed by Headroom"
        )
    if version < param.min_version:
        need = ".".join(str(part) for part in param.min_version)
        have = ".".join(str(part) for part in version)
        return f"needs PgBouncer >= {need} (spec.pooler.version is {have})"
    problem = values.multi_line(value)
    if problem:
        return problem
    if param.kind == "int":
        return values.integer(value, low=param.low, high=param.high)
    if param.kind == "bool":
        return values.choice(value, ("0", "1"))
    if param.kind == "enum":
        return values.choice(value, param.choices)
    if param.kind == "idents":
        if not _IDENT_LIST.fullmatch(value):
            return f"must be a comma-separated list of parameter names, got {value!r}"
    elif not _SAFE_TEXT.fullmatch(value):
        return "may only contain letters, digits, spaces and _ , . : ; ( ) = * ' -"
    return None


def ini_settings(ini: str) -> dict[str, str]:
    """The ``[pgbouncer]`` section's settings of a rendered pgbouncer.ini."""
    found: dict[str, str] = {}
    section = ""
    for raw in ini.splitlines():
        line = raw.strip()
        if not line or line.startswith((";", "#", "%")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        key, sep, value = line.partition("=")
        if sep and section == "pgbouncer":
            found[key.strip()] = value.strip()
    return found


def restart_settings(ini: str) -> dict[str, str]:
    """The settings of ``ini`` that PgBouncer takes only at start (RESTART_SETTINGS)."""
    return {k: v for k, v in ini_settings(ini).items() if k in RESTART_SETTINGS}


def restart_changes(before: str, after: str) -> list[str]:
    """The restart settings whose value differs between two pgbouncer.ini texts."""
    old, new = restart_settings(before), restart_settings(after)
    return sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
