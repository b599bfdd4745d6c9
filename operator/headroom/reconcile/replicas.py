"""The read replicas as the operator sees them: their lag (for
``status.readReplicas``, the ReadReplicasInPool condition and an Event per
membership change) and their own max_connections (a read plan the real
replicas cannot carry is not applied).

The read-pool agent in each read-pooler pod decides the data path every
``pollSeconds``; the operator measures the same way (postgres.replicas.observe,
planning.membership.decide) on a slower schedule, the way it reads the
primary's limits (:mod:`headroom.reconcile.primary`): the first pass of a
profile reads once, later passes use the last answer, and
:meth:`ReplicaProbe.refresh_due` reads again every TTL and reports the
profiles whose answer changed, so a converged profile's pass never waits on
Postgres. Called by the engine and the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from headroom.builders import common, readpool
from headroom.planning import membership
from headroom.planning import plan as plan_mod
from headroom.postgres import limits, replicas

_CONCURRENT_READS = 4
# A lag in seconds is reported to the second: finer changes at every read
# would rewrite the status for nothing.
_LAG_RESOLUTION_SECONDS = 1.0


@dataclass(frozen=True)
class ReplicaReading:
    name: str
    observed: membership.Observed
    limits: plan_mod.PrimaryLimits | None  # None: not read (unreachable)


Reading = tuple[ReplicaReading, ...]


@dataclass(frozen=True)
class _Targets:
    config: membership.ReadPoolConfig
    user: str
    password: str
    server_ca_pem: str | None

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return f"_Targets({[r.host for r in self.config.replicas]})"


def _rounded(observed: membership.Observed) -> membership.Observed:
    seconds = observed.lag_seconds
    if seconds is None or seconds == float("inf"):
        return observed
    step = _LAG_RESOLUTION_SECONDS
    return membership.Observed(
        error=observed.error,
        in_recovery=observed.in_recovery,
        lag_bytes=observed.lag_bytes,
        lag_seconds=round(seconds / step) * step,
    )


def read(targets: _Targets) -> Reading:
    """One round: every replica's lag against the primary, and its limits."""
    found = replicas.observe(
        targets.config,
        user=targets.user,
        password=targets.password,
        server_ca_pem=targets.server_ca_pem,
    )
    readings = []
    for replica in targets.config.replicas:
        observed = found[replica.name]
        live: plan_mod.PrimaryLimits | str | None = None
        if observed.error is None:
            live = limits.read(
                limits.Target(
                    host=replica.host,
                    port=targets.config.port,
                    database=targets.config.dbname,
                    username=targets.user,
                    password=targets.password,
                    ssl_mode=targets.config.sslmode,
                    server_ca_pem=targets.server_ca_pem,
                )
            )
        readings.append(
            ReplicaReading(
                name=replica.name,
                observed=_rounded(observed),
                limits=live if isinstance(live, plan_mod.PrimaryLimits) else None,
            )
        )
    return tuple(readings)


@dataclass
class _Entry:
    targets: _Targets
    result: Reading
    expires: float
    version: int = 1


class ReplicaProbe:
    """The last reading of each profile's replicas, refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 30.0,
        on_change: Callable[[set[str]], None] | None = None,
        reader: Callable[[_Targets], Reading] = read,
    ) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[str, _Entry] = {}  # by profile key
        self._gate = asyncio.Semaphore(_CONCURRENT_READS)
        self._reader = reader
        self.on_change = on_change

    def version(self, user: str) -> int:
        entry = self._entries.get(user)
        return entry.version if entry is not None else 0

    async def _read(self, targets: _Targets) -> Reading:
        async with self._gate:
            return await asyncio.to_thread(self._reader, targets)

    async def check(
        self, planned: plan_mod.Plan, creds: common.Credentials, *, user: str
    ) -> Reading:
        """The last reading of ``planned``'s replicas (read now the first time,
        and when the replicas or the credentials changed)."""
        targets = _Targets(
            config=readpool.agent_config(planned),
            user=creds.username,
            password=creds.password,
            server_ca_pem=creds.server_ca_pem,
        )
        entry = self._entries.get(user)
        if entry is None or entry.targets != targets:
            result = await self._read(targets)
            version = entry.version + 1 if entry is not None else 1
            entry = _Entry(targets, result, time.monotonic() + self._ttl, version)
            self._entries[user] = entry
        return entry.result

    def release(self, user: str) -> None:
        """The profile is gone, or has no replicas to measure any more."""
        self._entries.pop(user, None)

    async def refresh_due(self) -> None:
        now = time.monotonic()
        due = [(user, e) for user, e in self._entries.items() if e.expires <= now]
        results = await asyncio.gather(*(self._read(e.targets) for _, e in due))
        changed: set[str] = set()
        for (user, entry), result in zip(due, results, strict=True):
            entry.expires = time.monotonic() + self._ttl
            if result != entry.result:
                entry.result = result
                entry.version += 1
                changed.add(user)
        if changed and self.on_change is not None:
            self.on_change(changed)
