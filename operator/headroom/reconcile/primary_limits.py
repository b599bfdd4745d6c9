"""The primary's own connection limits, read with the app's credentials: an
instance of the periodic probe (:mod:`headroom.reconcile.probe`).

The profiles on one primary share its reading (the key is the primary's
address and the credentials' revision); a failed read is tried again after a
fifth of the TTL (the primary may just be starting). Called by the reconcile
pass (:meth:`PrimaryLimitsProbe.check`) and refreshed by the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from headroom.api import conditions, v1alpha1
from headroom.planning import credentials, names, planner
from headroom.postgres import server_limits
from headroom.reconcile import probe

_CONCURRENT_READS = 4
TIME_LIMIT_SECONDS = 30.0  # each connect is limited to 3 s (postgres.limits)

ProbeKey = tuple[Any, ...]
Result = planner.PrimaryLimits | str  # limits, or why they could not be read


class PrimaryLimitsProbe(probe.PeriodicProbe[server_limits.Target, Result]):
    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        on_change: Callable[[set[str]], None] | None = None,
        reader: Callable[[server_limits.Target], Result] | None = None,
    ) -> None:
        # (the reader is looked up when called, so a test may replace server_limits.read)
        def read(target: server_limits.Target) -> Result:
            return (reader or server_limits.read)(target)

        super().__init__(
            read=probe.in_thread(read, asyncio.Semaphore(_CONCURRENT_READS)),
            ttl_seconds=ttl_seconds,
            # a failure is retried sooner: the primary may just be starting
            ttl_for=lambda result: ttl_seconds if not isinstance(result, str) else ttl_seconds / 5,
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=lambda _: f"no answer within {TIME_LIMIT_SECONDS:g} s",
            on_change=on_change,
        )

    @staticmethod
    def key(planned: planner.Plan, creds: credentials.Credentials) -> ProbeKey:
        db = planned.database
        return (
            db.host,
            db.port,
            db.name,
            db.ssl_mode,
            creds.username,
            creds.revision,
            creds.server_ca_revision,
        )

    async def check(
        self, planned: planner.Plan, creds: credentials.Credentials, *, user: str
    ) -> tuple[planner.PrimaryLimits | None, conditions.Cond]:
        """The last answer for ``planned``'s primary (read now the first time)."""
        db = planned.database
        target = server_limits.Target(
            # the pooler resolves a short name in the profile's namespace; so must we
            host=names.resolved_host(db.host, planned.namespace),
            port=db.port,
            database=db.name,
            username=creds.username,
            password=creds.password,
            ssl_mode=db.ssl_mode,
            server_ca_pem=creds.server_ca_pem,
        )
        result = await self.reading(self.key(planned, creds), target, user=user)
        return _condition(db, result)


def _condition(
    db: v1alpha1.Database, result: Result
) -> tuple[planner.PrimaryLimits | None, conditions.Cond]:
    if isinstance(result, str):
        return None, conditions.Cond(
            conditions.PRIMARY_LIMITS,
            "False",
            "PrimaryUnreachable",
            f"could not read the limits of {db.host}:{db.port} ({result}); "
            "planning with the declared ones",
        )
    declared = (
        f"declared maxConnections {db.max_connections}, "
        f"superuserReservedConnections {db.superuser_reserved_connections}"
    )
    return result, conditions.Cond(
        conditions.PRIMARY_LIMITS,
        "True",
        "LimitsRead",
        f"{db.host}:{db.port} reports {result.describe()} = {result.available}; {declared}",
    )
