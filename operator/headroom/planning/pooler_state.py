"""What each write-pooler pod reports of the config it runs, in the pooler's
state ConfigMap (``names.ChildNames.pooler_state``): one key per pod (its
name), whose value is a compact JSON object

``{"config": "<hash>", "maxDbConnections": <int>, "serverConnections": <int>, "at": "<RFC3339>"}``

- ``config``: :func:`headroom.planning.agentfile.content_hash` of the
  pgbouncer.ini text PgBouncer has loaded (what the builders hash too);
- ``maxDbConnections``: the loaded ``max_db_connections`` (0: no limit);
- ``serverConnections``: the server connections the pod holds (SHOW POOLS);
- ``observed`` (when PgBouncer has stats for its database): its load figures,
  :meth:`headroom.planning.recommendations.PoolFigures.report`.

A pod is *confirmed* at a config when its entry names that config and its
server connections are within its limit. The agent (headroom.agent.pooler)
writes entries; the operator reads them, and removes the entries of pods that
are gone (:func:`crowded` says when to look, :func:`gone` which). Pure.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# The agents' field manager on the state ConfigMap (the operator's never owns its data).
FIELD_MANAGER = "headroom-agent"
# SHOW POOLS columns that count server connections a pool holds
SERVER_COLUMNS = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
ADMIN_DATABASE = "pgbouncer"  # the console's own pseudo-database


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class Entry:
    config: str
    max_db_connections: int
    server_connections: int
    at: str
    observed: Mapping[str, Any] | None = field(default=None, compare=False)

    @property
    def within_limit(self) -> bool:
        return self.max_db_connections == 0 or self.server_connections <= self.max_db_connections

    def confirmed_at(self, config: str) -> bool:
        """Whether this pod runs ``config`` with its server connections within
        the limit that config sets (Headroom always sets one)."""
        return self.config == config and self.server_connections <= self.max_db_connections

    def text(self) -> str:
        found: dict[str, Any] = {
            "config": self.config,
            "maxDbConnections": self.max_db_connections,
            "serverConnections": self.server_connections,
            "at": self.at,
        }
        if self.observed is not None:
            found["observed"] = dict(self.observed)
        return json.dumps(found, separators=(",", ":"))

    @classmethod
    def parse(cls, text: str) -> Entry | None:
        """The entry in ``text``; None for anything not of its form."""
        try:
            found = json.loads(text)
        except ValueError:
            return None
        if not isinstance(found, dict):
            return None
        config, limit, held, at = (
            found.get("config"),
            found.get("maxDbConnections"),
            found.get("serverConnections"),
            found.get("at"),
        )
        if not isinstance(config, str) or not isinstance(at, str):
            return None
        if not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in (limit, held)
        ):
            return None
        assert isinstance(limit, int) and isinstance(held, int)
        observed = found.get("observed")
        return cls(
            config=config,
            max_db_connections=limit,
            server_connections=held,
            at=at,
            observed=observed if isinstance(observed, dict) else None,
        )


def entries(data: Mapping[str, str] | None) -> dict[str, Entry]:
    """The readable entries of a state ConfigMap's ``data``, by pod name."""
    found = {}
    for pod, text in (data or {}).items():
        entry = Entry.parse(text)
        if entry is not None:
            found[pod] = entry
    return found


def pods_of(deployment: Mapping[str, Any]) -> int:
    """The pods a pooler Deployment runs now, a rollout's old ones too: the
    larger of what it asks for and what its status counts."""
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    return max(int(spec.get("replicas") or 0), int(status.get("replicas") or 0))


def crowded(data: Mapping[str, str] | None, *, pods: int) -> bool:
    """Whether the state ConfigMap has more keys than its Deployment has pods
    (:func:`pods_of`): then some are of pods that are gone. Only then are the
    pods listed, so a steady pooler costs no request."""
    return len(data or {}) > pods


def gone(data: Mapping[str, str] | None, *, pods: Iterable[str]) -> list[str]:
    """The keys of ``data`` that name none of ``pods`` (the names of the
    pooler's pods that exist): entries of pods that are gone, to remove."""
    there = set(pods)
    return sorted(k for k in (data or {}) if k not in there)


def server_connections(pools: Iterable[Mapping[str, str]]) -> int:
    """The server connections of SHOW POOLS' rows (the console's own pool aside)."""
    total = 0
    for row in pools:
        if row.get("database") == ADMIN_DATABASE:
            continue
        for column in SERVER_COLUMNS:
            value = row.get(column, "0") or "0"
            total += int(value) if value.isdigit() else 0
    return total


def database_of(rows: Iterable[Mapping[str, str]]) -> str | None:
    """The pooler's database in SHOW STATS or SHOW POOLS rows (the console's aside)."""
    return next(
        (r["database"] for r in rows if r.get("database") not in (None, "", ADMIN_DATABASE)),
        None,
    )


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
