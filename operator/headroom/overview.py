"""The cluster-wide view behind ``headroom status``: every ScalingProfile,
grouped by the Postgres server its pooler connects to, with what each one
plans on it, what its clients could ask for at their ceiling, the shared
total against what the server has, and which profiles are refused or stalled.

Pure: it reads the profiles' ``status`` as the API server returns them (the
CLI lists them) and never plans anything itself, so it shows exactly what the
operator decided. Status written by an older operator lacks some fields; they
show as unknown, never as an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from headroom.api import conditions

# A profile that has no server in its status yet (never planned) is grouped
# under its spec's host and this port.
DEFAULT_PORT = 5432


@dataclass(frozen=True)
class ProfileRow:
    """One profile on one server."""

    namespace: str
    name: str
    ready: str  # the Ready condition's status, "" before the first status
    reason: str  # Ready's reason
    stalled: bool
    reconciling: bool
    planned: int | None  # server connections its poolers may open (rollout peak included)
    ceiling: int | None  # connections its clients could open at their replica ceilings
    # part of the server's shared total: its budget was accepted, or it is
    # refused and its poolers still hold what its last applied plan opens
    counted: bool
    refusal: str  # why it is refused or stalled, "" when it is not
    planned_since: str
    # status.recommendations: what its poolers' own figures (write and read) say to change
    recommendations: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "ready": self.ready,
            "reason": self.reason,
            "stalled": self.stalled,
            "reconciling": self.reconciling,
            "plannedConnections": self.planned,
            "ceilingConnections": self.ceiling,
            "counted": self.counted,
            "refusal": self.refusal,
            "recommendations": list(self.recommendations),
        }


@dataclass
class ServerGroup:
    """Every profile whose pooler connects to one server (host:port)."""

    server: str
    max_connections: set[int] = field(default_factory=set)
    available: set[int] = field(default_factory=set)
    profiles: list[ProfileRow] = field(default_factory=list)

    @property
    def planned(self) -> int:
        """The shared total: what the accepted profiles plan on the server."""
        return sum(p.planned or 0 for p in self.profiles if p.counted)

    @property
    def free(self) -> int | None:
        """What the smallest declared ``available`` leaves; None when unknown."""
        return min(self.available) - self.planned if self.available else None

    @property
    def refused(self) -> list[ProfileRow]:
        return [p for p in self.profiles if p.refusal]

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "maxConnections": sorted(self.max_connections),
            "available": min(self.available) if self.available else None,
            "plannedConnections": self.planned,
            "freeConnections": self.free,
            "profiles": [p.to_json() for p in self.profiles],
        }


def _condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _primary_connections(budget: dict[str, Any]) -> int | None:
    """The write pool's server connections and what the read pool keeps on the
    primary for when every replica is out: all this profile may open there."""
    write = _int(budget.get("serverConnections"))
    return None if write is None else write + (_int(budget.get("readFallback")) or 0)


def _server_of(profile: dict[str, Any], budget: dict[str, Any]) -> str:
    if budget.get("server"):
        return str(budget["server"])
    database = (profile.get("spec") or {}).get("database") or {}
    host = database.get("host") or "?"
    return f"{host}:{database.get('port') or DEFAULT_PORT}"


def row(profile: dict[str, Any]) -> tuple[str, ProfileRow, dict[str, Any]]:
    """(server, the profile's row, its budget status) of one profile object."""
    meta = profile.get("metadata") or {}
    status = profile.get("status") or {}
    budget = status.get("budget") or {}
    ready = _condition(status, conditions.READY)
    stalled = _condition(status, conditions.STALLED)
    reconciling = _condition(status, conditions.RECONCILING)
    within = _condition(status, conditions.CONNECTION_BUDGET)
    is_stalled = stalled.get("status") == "True"
    # waiting for others to shrink is a rebalance on its way, not a refusal;
    # either way what its poolers run is what it holds
    waiting = within.get("reason") == conditions.WAITING_FOR_ROOM
    refused_budget = within.get("status") == "False" and not waiting
    held_only = within.get("status") == "False"
    server = _server_of(profile, budget)
    held = sum(
        _int(h.get("connections")) or 0
        for h in budget.get("held") or []
        if isinstance(h, dict) and h.get("server") == server
    )
    refusal = ""
    if refused_budget:
        refusal = f"{within.get('reason', '')}: {within.get('message', '')}"
    elif is_stalled:
        refusal = f"{stalled.get('reason', '')}: {stalled.get('message', '')}"
    entry = ProfileRow(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        ready=str(ready.get("status", "")),
        reason=str(ready.get("reason", "")),
        stalled=is_stalled,
        reconciling=reconciling.get("status") == "True",
        planned=held if held_only and held else _primary_connections(budget),
        ceiling=_int(budget.get("clientDemand")),
        counted=within.get("status") == "True" or bool(held_only and held),
        refusal=refusal,
        planned_since=str(budget.get("plannedSince") or meta.get("creationTimestamp") or ""),
        recommendations=tuple(
            r for r in status.get("recommendations") or [] if isinstance(r, dict)
        ),
    )
    return server, entry, budget


def build(profiles: list[dict[str, Any]]) -> list[ServerGroup]:
    """Servers sorted by name, each with its profiles in the order they were
    first planned (the order the shared budget is given out in)."""
    groups: dict[str, ServerGroup] = {}
    for profile in profiles:
        server, entry, budget = row(profile)
        group = groups.setdefault(server, ServerGroup(server=server))
        group.profiles.append(entry)
        if _int(budget.get("maxConnections")) is not None:
            group.max_connections.add(budget["maxConnections"])
        # what the server has before any profile: a profile's own `available`
        # is what the older ones (and its own read fallback) leave it
        held = sum(_int(s.get("serverConnections")) or 0 for s in budget.get("sharedWith") or [])
        held += _int(budget.get("readFallback")) or 0
        if _int(budget.get("available")) is not None:
            group.available.add(budget["available"] + held)
    for group in groups.values():
        group.profiles.sort(key=lambda p: (p.planned_since, p.namespace, p.name))
    return [groups[name] for name in sorted(groups)]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _num(value: int | None) -> str:
    return "?" if value is None else str(value)


def recommended(entry: dict[str, Any]) -> str:
    """One status.recommendations entry in a line: the field, from what to what,
    its kind and confidence, and why."""
    kind = f"{entry['kind']}, " if entry.get("kind") else ""
    return (
        f"recommend {entry.get('field', '?')} {entry.get('current', '?')} -> "
        f"{entry.get('recommended', '?')} ({kind}{entry.get('confidence', '?')} confidence): "
        f"{entry.get('why', '')}"
    )


def format_table(groups: list[ServerGroup]) -> str:
    """The human view: one block per server, then a summary line."""
    if not groups:
        return "no ScalingProfiles found\n"
    lines: list[str] = []
    width = max(len(f"{p.namespace}/{p.name}") for g in groups for p in g.profiles)
    width = max(width, len("PROFILE"))
    for group in groups:
        maxc = "/".join(str(m) for m in sorted(group.max_connections)) or "?"
        available = min(group.available) if group.available else None
        lines.append(
            f"SERVER {group.server}  max_connections {maxc}  available {_num(available)}  "
            f"planned {group.planned}  free {_num(group.free)}"
        )
        if len(group.max_connections) > 1:
            lines.append("  ! the profiles on this server declare different max_connections")
        lines.append(
            f"  {'PROFILE':<{width}}  {'READY':<7}  {'STATE':<11}  {'PLANNED':>7}  "
            f"{'CEILING':>7}  REFUSED"
        )
        for p in group.profiles:
            state = "Stalled" if p.stalled else "Reconciling" if p.reconciling else "-"
            planned = _num(p.planned) if p.counted else f"({_num(p.planned)})"
            lines.append(
                f"  {p.namespace + '/' + p.name:<{width}}  {p.ready or '-':<7}  {state:<11}  "
                f"{planned:>7}  {_num(p.ceiling):>7}  {p.refusal or '-'}"
            )
        for p in group.profiles:
            lines.extend(f"  {p.namespace}/{p.name}: {recommended(r)}" for r in p.recommendations)
        lines.append("")
    every = [p for g in groups for p in g.profiles]
    lines.append(
        f"{_count(len(every), 'profile')} on {_count(len(groups), 'server')}: "
        f"{sum(p.ready == 'True' for p in every)} ready, "
        f"{sum(p.stalled for p in every)} stalled, "
        f"{sum(bool(p.refusal) for p in every)} refused or stalled"
    )
    lines.append(
        "PLANNED: server connections a profile's poolers may open (refused: what its running "
        "poolers hold; in parentheses: refused with nothing running, not counted); CEILING: "
        "connections its clients could open at their replica ceilings"
    )
    return "\n".join(lines) + "\n"


def to_json(groups: list[ServerGroup]) -> dict[str, Any]:
    every = [p for g in groups for p in g.profiles]
    return {
        "servers": [g.to_json() for g in groups],
        "profiles": len(every),
        "ready": sum(p.ready == "True" for p in every),
        "stalled": sum(p.stalled for p in every),
        "refused": [
            {"namespace": p.namespace, "name": p.name, "server": g.server, "refusal": p.refusal}
            for g in groups
            for p in g.refused
        ],
    }
