"""The read replicas as the operator sees them: their lag (for
``status.readReplicas``, the ReadReplicasInPool condition and an Event per
membership change) and their own max_connections (a read plan the real
replicas cannot carry is not applied). An instance of the periodic probe
(:mod:`headroom.reconcile.probe`), one reading per profile.

The read-pool agent in each read-pooler pod decides the data path every
``pollSeconds``; the operator measures the same way (postgres.replicas.observe,
planning.membership.decide) on a slower schedule. Called by the reconcile pass
and refreshed by the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from headroom.planning import credentials, membership, planner
from headroom.postgres import replicas, server_limits
from headroom.reconcile import probe

_CONCURRENT_READS = 4
# every replica is read one after the other, each connect limited to 3 s
TIME_LIMIT_SECONDS = 60.0
# A lag in seconds is reported to the second: finer changes at every read
# would rewrite the status for nothing.
_LAG_RESOLUTION_SECONDS = 1.0


@dataclass(frozen=True)
class ReplicaReading:
    name: str
    observed: membership.Observed
    limits: planner.PrimaryLimits | None  # None: not read (unreachable)


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
    """One round: every replica's lag against the primary, and its server_limits."""
    found = replicas.observe(
        targets.config,
        user=targets.user,
        password=targets.password,
        server_ca_pem=targets.server_ca_pem,
    )
    readings = []
    for replica in targets.config.replicas:
        observed = found[replica.name]
        live: planner.PrimaryLimits | str | None = None
        if observed.error is None:
            live = server_limits.read(
                server_limits.Target(
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
                limits=live if isinstance(live, planner.PrimaryLimits) else None,
            )
        )
    return tuple(readings)


def _not_answered(targets: _Targets) -> Reading:
    why = f"no answer within {TIME_LIMIT_SECONDS:g} s"
    return tuple(
        ReplicaReading(name=r.name, observed=membership.Observed.unreachable(why), limits=None)
        for r in targets.config.replicas
    )


class ReplicaProbe(probe.PeriodicProbe[_Targets, Reading]):
    """The last reading of each profile's replicas, refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 30.0,
        on_change: Callable[[set[str]], None] | None = None,
        reader: Callable[[_Targets], Reading] = read,
    ) -> None:
        super().__init__(
            read=probe.in_thread(reader, asyncio.Semaphore(_CONCURRENT_READS)),
            ttl_seconds=ttl_seconds,
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=_not_answered,
            on_change=on_change,
        )

    async def check(
        self, planned: planner.Plan, creds: credentials.Credentials, *, user: str
    ) -> Reading:
        """The last reading of ``planned``'s replicas (read now the first time,
        and when the replicas or the credentials changed)."""
        targets = _Targets(
            config=membership.read_pool_config(planned),
            user=creds.username,
            password=creds.password,
            server_ca_pem=creds.server_ca_pem,
        )
        return await self.reading(user, targets, user=user)
