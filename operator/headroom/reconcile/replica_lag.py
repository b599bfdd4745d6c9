"""The read replicas as the operator sees them: their lag (for
``status.readReplicas``, the ReadReplicasInPool condition and an Event per
membership change) and their own max_connections (a read plan the real
replicas cannot carry is not applied). An instance of the periodic probe
(:mod:`headroom.reconcile.probe`).

A reading is of one replica against its primary: both are read at once (the
replica's position and its limits in one connection), so the lag compares
positions taken a moment apart, and the reading is shared by every profile
that lists that replica with that primary and login. The read-pool agent in
each read-pooler pod decides the data path every ``pollSeconds``; the
operator judges the same way (postgres.replicas.judge,
planning.membership.decide) on a slower schedule. Called by the reconcile
pass (:meth:`ReplicaProbe.check`, which never waits) and refreshed by the
runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass

from headroom.planning import credentials, membership, names, planner
from headroom.postgres import lag, replicas, server_limits
from headroom.reconcile import primary_limits, probe, resolver

CONNECT_TIMEOUT_SECONDS = 3
TIME_LIMIT_SECONDS = 10.0  # the names' lookups, the connects and the queries, at once
# A lag in seconds is reported to the second: finer changes at every read
# would rewrite the status for nothing.
_LAG_RESOLUTION_SECONDS = 1.0


@dataclass(frozen=True)
class Pair:
    """One replica and the primary its lag is measured against."""

    primary: server_limits.Target
    replica: server_limits.Target


@dataclass(frozen=True)
class ReplicaReading:
    observed: membership.Observed
    limits: planner.PrimaryLimits | None  # None: not read (unreachable)


Reader = Callable[[Pair], Awaitable[ReplicaReading]]


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


def reader(resolve: resolver.Resolver) -> Reader:
    """Read a pair: the primary's position and the replica's position and
    limits, at once, each at the address its host resolves to."""

    async def position(target: server_limits.Target) -> lag.Position | str:
        found = await resolver.pinned(resolve, target)
        if isinstance(found, str):
            return found
        rows = await server_limits.session_async(
            found, (lag.POSITION_QUERY,), timeout_seconds=CONNECT_TIMEOUT_SECONDS
        )
        return rows if isinstance(rows, str) else lag.position_from(rows[0])

    async def replica(
        target: server_limits.Target,
    ) -> tuple[lag.Position | str, planner.PrimaryLimits | None]:
        found = await resolver.pinned(resolve, target)
        if isinstance(found, str):
            return found, None
        rows = await server_limits.session_async(
            found,
            (lag.POSITION_QUERY, server_limits.LIMITS_QUERY),
            timeout_seconds=CONNECT_TIMEOUT_SECONDS,
        )
        if isinstance(rows, str):
            return rows, None
        return lag.position_from(rows[0]), server_limits.limits_from(rows[1])

    async def read(pair: Pair) -> ReplicaReading:
        primary, (seen, limits) = await asyncio.gather(
            position(pair.primary), replica(pair.replica)
        )
        return ReplicaReading(observed=_rounded(replicas.judge(primary, seen)), limits=limits)

    return read


def _not_answered(_: Pair) -> ReplicaReading:
    why = f"no answer within {TIME_LIMIT_SECONDS:g} s"
    return ReplicaReading(observed=membership.Observed.unreachable(why), limits=None)


class ReplicaProbe(probe.PeriodicProbe[Pair, ReplicaReading]):
    """The last reading of each replica (against its primary), refreshed every TTL."""

    def __init__(
        self,
        *,
        ttl_seconds: float = 30.0,
        resolve: resolver.Resolver | None = None,
        slots: probe.Slots | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        read: Reader | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            read=read or reader(resolve or resolver.Resolver()),
            ttl_seconds=ttl_seconds,
            # a replica that does not answer is asked again less and less often
            failed=lambda reading: reading.observed.error is not None,
            max_backoff_seconds=max(300.0, ttl_seconds),
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=_not_answered,
            slots=slots,
            on_change=on_change,
            clock=clock,
        )

    def check(
        self, planned: planner.Plan, creds: credentials.Credentials, *, user: str
    ) -> dict[str, probe.Answer[ReplicaReading]]:
        """The last reading of each of ``planned``'s replicas, by name (result
        None: not read yet; the read has started)."""
        config = membership.read_pool_config(planned)

        def target(host: str, port: int) -> server_limits.Target:
            return server_limits.Target(
                host=names.resolved_host(host, planned.namespace),
                port=port,
                database=config.dbname,
                username=creds.username,
                password=creds.password,
                ssl_mode=config.sslmode,
                server_ca_pem=creds.server_ca_pem,
            )

        login = primary_limits.digest(creds.password, creds.server_ca_pem)
        primary = target(config.primary.host, config.primary.port)
        pairs = {r.name: Pair(primary, target(r.host, config.port)) for r in config.replicas}
        keys: dict[str, Hashable] = {
            name: (primary.host, primary.port, pair.replica.host, pair.replica.port,
                   config.dbname, config.sslmode, creds.username, login)
            for name, pair in pairs.items()
        }  # fmt: skip
        found = self.answers(user, {keys[name]: pair for name, pair in pairs.items()})
        return {name: found[key] for name, key in keys.items()}
