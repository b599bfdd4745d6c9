"""The primary's own connection limits, read with the app's credentials and
cached (passes run often; the primary is asked at most once per TTL).

psycopg is blocking: each read runs in a thread, a few at a time, with a
connect timeout, so a slow primary never stalls the event loop or the passes
of other profiles. Called by the engine.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from headroom.builders import common
from headroom.planning import plan as plan_mod
from headroom.postgres import limits as postgres_limits
from headroom.reconcile import conditions as cond
from headroom.reconcile import observe

_CONCURRENT_READS = 4

ProbeKey = tuple[Any, ...]


class PrimaryProbe:
    def __init__(self, *, ttl_seconds: float = 300.0) -> None:
        self._ttl = ttl_seconds
        self._cache: dict[ProbeKey, tuple[float, plan_mod.PrimaryLimits | str]] = {}
        self._gate = asyncio.Semaphore(_CONCURRENT_READS)

    @staticmethod
    def key(planned: plan_mod.Plan, creds: common.Credentials) -> ProbeKey:
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

    def expired(self, key: ProbeKey) -> bool:
        cached = self._cache.get(key)
        return cached is None or cached[0] < time.monotonic()

    async def check(
        self, planned: plan_mod.Plan, creds: common.Credentials
    ) -> tuple[plan_mod.PrimaryLimits | None, cond.Cond]:
        db = planned.database
        key = self.key(planned, creds)
        if self.expired(key):
            target = postgres_limits.Target(
                # the pooler resolves a short name in the profile's namespace; so must we
                host=db.host if "." in db.host else f"{db.host}.{planned.namespace}.svc",
                port=db.port,
                database=db.name,
                username=creds.username,
                password=creds.password,
                ssl_mode=db.ssl_mode,
                server_ca_pem=creds.server_ca_pem,
            )
            async with self._gate:
                result = await asyncio.to_thread(postgres_limits.read, target)
            # a failure is retried sooner: the primary may just be starting
            ttl = self._ttl if not isinstance(result, str) else self._ttl / 5
            now = time.monotonic()
            for stale in [k for k, v in self._cache.items() if v[0] < now]:
                del self._cache[stale]
            self._cache[key] = (now + ttl, result)
        result = self._cache[key][1]
        if isinstance(result, str):
            return None, cond.Cond(
                observe.PRIMARY_LIMITS,
                "False",
                "PrimaryUnreachable",
                f"could not read the limits of {db.host}:{db.port} ({result}); "
                "planning with the declared ones",
            )
        declared = (
            f"declared maxConnections {db.max_connections}, "
            f"superuserReservedConnections {db.superuser_reserved_connections}"
        )
        return result, cond.Cond(
            observe.PRIMARY_LIMITS,
            "True",
            "LimitsRead",
            f"{db.host}:{db.port} reports {result.describe()} = {result.available}; {declared}",
        )
