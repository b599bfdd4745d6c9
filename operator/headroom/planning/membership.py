"""The read pool's membership: which read replicas take reads, from what was
observed of them (issue 10, the lag-aware part of read replicas).

Pure. Three parts, shared by the read-pool agent (``headroom.agent.readpool``,
in the read-pooler pod) and the operator (status, conditions, Events):

- :class:`ReadPoolConfig`, the model of ``readpool.json`` (version 1), which
  the read-pooler builder renders into its ConfigMap and the agent reads;
- :func:`decide`: observations of each replica (reachable? in recovery? lag
  against the primary) and the previous membership -> the new membership, with
  one reason per replica and one line per change;
- :func:`render_databases`: the ``[databases]`` include file PgBouncer reads
  (``%include`` at the end of the read pooler's pgbouncer.ini), every value
  checked against a charset so nothing can start a line or a directive.

The rule: a replica is out when unreachable, not in recovery (promoted: it
takes writes), or further behind than ``maxLagSeconds`` (or ``maxLagBytes``
when set). It comes back only when reachable, in recovery and no further
behind than half of each bound, so a replica hovering at the bound does not
flap in and out at every poll. When the lag cannot be measured (the primary is
unreadable) each replica keeps its place. When every replica is out, reads go
to ``fallback`` (the primary, capped at its share) or, without one, the
read entry is left out and PgBouncer answers "no such database".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field, model_validator

from headroom.api import v1alpha1
from headroom.planning import agentfile, planner

VERSION: Literal[1] = 1
CONFIG_FILE = "readpool.json"  # its key in the read pooler's ConfigMap, its file in the pod
DEFAULT_OUTPUT = "/run/headroom/readpool-databases.ini"
AGENT_USER = "headroom_agent"
ADMIN_PORT = 6432

# A DNS name or IP address, or a UNIX-socket directory (libpq and PgBouncer
# read a host that starts with "/" as one).
_HOST = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|/[A-Za-z0-9_./-]{1,200})$")
_DATABASE = re.compile(v1alpha1.PG_IDENTIFIER)  # a pgbouncer.ini key, too
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PATH = re.compile(r"^/[A-Za-z0-9_./-]{1,200}$")
_USER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# what render_databases writes: key = value, nothing else
_INI_KEY = _DATABASE
_INI_VALUE = re.compile(r"^[A-Za-z0-9_ ,.:=/$-]+$")

Port = Annotated[int, Field(ge=1, le=65535)]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


_checked = agentfile.checked
_charset = agentfile.charset
Host = Annotated[str, _charset(_HOST, "host")]
DatabaseName = Annotated[str, _charset(_DATABASE, "database name")]


class _Model(agentfile.AgentFile):
    """The base of every model in this file."""


class Endpoint(_Model):
    host: Host
    port: Port = 5432


class Fallback(Endpoint):
    """The primary, for when every replica is out; capped at the share the
    primary keeps for reads (planning.read_replicas), per read-pooler pod."""

    max_db_connections: int | None = Field(default=None, ge=1)


class Replica(_Model):
    # stable, for logs, status and Events (r0, r1, ...)
    name: Annotated[str, _charset(_NAME, "replica name")]
    host: Host


class Admin(_Model):
    host: Host = "127.0.0.1"
    port: Port = ADMIN_PORT
    user: Annotated[str, _charset(_USER, "admin user")] = AGENT_USER


class ReadPoolConfig(_Model):
    """``readpool.json``: what the agent of one read-pooler pod watches and writes."""

    version: Literal[1] = VERSION
    database: DatabaseName  # the entry clients connect to (spec.database.name)
    dbname: DatabaseName  # the database on the servers
    port: Port = 5432  # every replica's: PgBouncer's host list takes one port
    replicas: tuple[Replica, ...] = Field(min_length=1)
    primary: Endpoint  # lag is measured against it
    fallback: Fallback | None  # when every replica is out; None: refuse reads
    max_lag_seconds: float = Field(default=30, gt=0)
    max_lag_bytes: int | None = Field(default=None, gt=0)
    poll_seconds: float = Field(default=5, gt=0, le=3600)
    connect_timeout_seconds: int = Field(default=3, ge=1, le=60)
    sslmode: SslMode = "prefer"
    output: Annotated[str, _charset(_PATH, "output path")] = DEFAULT_OUTPUT
    admin: Admin = Admin()

    @model_validator(mode="after")
    def _unique(self) -> ReadPoolConfig:
        for what, values in (
            ("name", [r.name for r in self.replicas]),
            ("host", [r.host for r in self.replicas]),
        ):
            if len(set(values)) != len(values):
                raise ValueError(f"replica {what}s must be unique, got {values}")
        return self


@dataclass(frozen=True)
class Observed:
    """One probe of one replica. ``error``: why it could not be read (then the
    other fields mean nothing). ``lag_bytes``/``lag_seconds`` None: not measured
    (the primary could not be read)."""

    error: str | None = None
    in_recovery: bool = True
    lag_bytes: int | None = None
    lag_seconds: float | None = None

    @classmethod
    def unreachable(cls, reason: str) -> Observed:
        return cls(error=reason)


@dataclass(frozen=True)
class Verdict:
    name: str
    host: str
    member: bool
    reason: str  # why it is in or out now (status, Events)
    changed: bool  # joined or left at this decision


Target = Literal["replicas", "fallback", "none"]


@dataclass(frozen=True)
class Membership:
    verdicts: tuple[Verdict, ...]
    target: Target  # where the read entry points
    changes: tuple[str, ...]  # one line per change, for the log and Events

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.verdicts if v.member)

    def previous(self) -> dict[str, bool]:
        """What to pass as ``previous`` to the next :func:`decide`."""
        return {v.name: v.member for v in self.verdicts}


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value != float("inf") else "inf s (nothing replayed yet)"


def _judge(config: ReadPoolConfig, seen: Observed | None, was: bool | None) -> tuple[bool, str]:
    """(member, reason) for one replica; ``was`` None: first decision."""
    if seen is None:
        return False, "not probed"
    if seen.error is not None:
        return False, f"unreachable: {seen.error}"
    if not seen.in_recovery:
        return False, "not in recovery (promoted?): it takes writes, it is not a read replica"
    if seen.lag_seconds is None or seen.lag_bytes is None:
        keep = True if was is None else was
        return (
            keep,
            f"lag unknown (the primary could not be read): {'kept' if keep else 'kept out'}",
        )
    bound_s, bound_b = config.max_lag_seconds, config.max_lag_bytes
    lag = f"lag {_seconds(seen.lag_seconds)}, {seen.lag_bytes} bytes"
    if seen.lag_seconds > bound_s:
        return False, f"{lag}: over maxLagSeconds {bound_s:g}"
    if bound_b is not None and seen.lag_bytes > bound_b:
        return False, f"{lag}: over maxLagBytes {bound_b}"
    if was is False:
        half_b_ok = bound_b is None or seen.lag_bytes <= bound_b / 2
        if seen.lag_seconds > bound_s / 2 or not half_b_ok:
            bytes_rule = "" if bound_b is None else f" and {bound_b // 2} bytes"
            return False, f"{lag}: back only within {bound_s / 2:g} s{bytes_rule} (half the bound)"
        return True, f"{lag}: caught up (within half the bound)"
    return True, f"{lag}: within maxLagSeconds {bound_s:g}"


def decide(
    config: ReadPoolConfig,
    *,
    observed: Mapping[str, Observed],
    previous: Mapping[str, bool] | None = None,
) -> Membership:
    """The membership after one round of probes. ``observed``: by replica name
    (a missing one counts as not probed: out). ``previous``: who was in before
    (``Membership.previous()``), None or missing names at the first decision."""
    before = previous or {}
    verdicts = []
    changes = []
    for replica in config.replicas:
        was = before.get(replica.name)
        member, reason = _judge(config, observed.get(replica.name), was)
        changed = was is not None and was != member
        if changed:
            changes.append(f"replica {replica.name} {'joins' if member else 'leaves'}: {reason}")
        verdicts.append(
            Verdict(
                name=replica.name, host=replica.host, member=member, reason=reason, changed=changed
            )
        )
    target: Target = "replicas"
    if not any(v.member for v in verdicts):
        target = "none" if config.fallback is None else "fallback"
    was_target = _target_of(config, before)
    if before and target != was_target:
        changes.append(_target_change(config, target))
    return Membership(verdicts=tuple(verdicts), target=target, changes=tuple(changes))


def _target_of(config: ReadPoolConfig, before: Mapping[str, bool]) -> Target:
    if any(before.values()):
        return "replicas"
    return "none" if config.fallback is None else "fallback"


def _target_change(config: ReadPoolConfig, target: Target) -> str:
    if target == "replicas":
        return "reads go to the replicas again"
    if target == "fallback":
        assert config.fallback is not None
        return (
            "every replica is out: reads go to the primary "
            f"{config.fallback.host}:{config.fallback.port}"
        )
    return "every replica is out and there is no fallback: reads are refused"


def _line(key: str, value: str) -> str:
    if not _INI_KEY.match(key) or not _INI_VALUE.match(value):
        raise ValueError(f"refusing to render unsafe read-pool entry {key!r}")
    return f"{key} = {value}"


def render_databases(config: ReadPoolConfig, members: Iterable[str]) -> str:
    """The include file: the read entry over the replicas named in ``members``
    (in the config's order), else the fallback, else no entry at all."""
    wanted = set(members)
    hosts = [r.host for r in config.replicas if r.name in wanted]
    for host in hosts:
        _checked(host, _HOST, "replica host")  # a model built with model_construct, too
    lines = [
        ";; Rendered by the Headroom read-pool agent; rewritten at every membership change.",
        "[databases]",
    ]
    if hosts:
        target = f"host={','.join(hosts)} port={config.port} dbname={config.dbname}"
        lines.append(_line(config.database, target))
    elif config.fallback is not None:
        fallback = config.fallback
        _checked(fallback.host, _HOST, "fallback host")
        target = f"host={fallback.host} port={fallback.port} dbname={config.dbname}"
        if fallback.max_db_connections is not None:
            target += f" max_db_connections={fallback.max_db_connections}"
        lines.append(_line(config.database, target))
    else:
        lines.append(";; every replica is out and reads are refused: no read entry")
    return "\n".join(lines) + "\n"


def read_pool_config(plan: planner.Plan, *, output: str = DEFAULT_OUTPUT) -> ReadPoolConfig:
    """``readpool.json`` of ``plan``: what the agent measures and how it decides
    (the operator measures and decides the same way)."""
    read = plan.read
    assert read is not None
    db = plan.database
    return ReadPoolConfig(
        database=db.name,
        dbname=db.name,
        port=read.port,
        replicas=tuple(Replica(name=r.name, host=r.host) for r in read.replicas),
        primary=Endpoint(host=db.host, port=db.port),
        # whenAllLagging primary: the read entry points at the primary itself,
        # capped at the share the primary keeps for it (planning.read_replicas)
        fallback=Fallback(host=db.host, port=db.port, max_db_connections=read.fallback_per_pod)
        if read.fallback_per_pod
        else None,
        max_lag_seconds=read.max_lag_seconds,
        max_lag_bytes=read.max_lag_bytes,
        poll_seconds=read.poll_seconds,
        sslmode=db.ssl_mode,
        output=output,
        admin=Admin(port=planner.POOLER_PORT, user=planner.AGENT_USER),
    )
