"""The primary's own connection limits, read with the app's credentials.

A fact observed on its own schedule, like a watch: the first pass of a profile
reads it (once), later passes use the last answer, and the runtime calls
:meth:`PrimaryProbe.refresh_due` every few seconds, which reads again every
TTL and reports the profiles whose answer *changed* (they are queued). So a
converged profile's pass never waits on Postgres, and an unreachable primary
costs one connection attempt per TTL, not a pass per resync.

psycopg is blocking: each read runs in a thread, a few at a time, with a
connect timeout. Called by the engine and the runtime.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from headroom.api import conditions, v1alpha1
from headroom.builders import common
from headroom.planning import names
from headroom.planning import plan as plan_mod
from headroom.postgres import limits as postgres_limits

_CONCURRENT_READS = 4

ProbeKey = tuple[Any, ...]
Result = plan_mod.PrimaryLimits | str  # limits, or why they could not be read


@dataclass
class _Entry:
    target: postgres_limits.Target
    result: Result
    expires: float
    version: int = 1
    users: set[str] = field(default_factory=set)


class PrimaryProbe:
    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        on_change: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._ttl = ttl_seconds
        self._entries: dict[ProbeKey, _Entry] = {}
        self._gate = asyncio.Semaphore(_CONCURRENT_READS)
        self.on_change = on_change

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

    def version(self, key: ProbeKey | None) -> int:
        entry = self._entries.get(key) if key is not None else None
        return entry.version if entry is not None else 0

    def _ttl_for(self, result: Result) -> float:
        # a failure is retried sooner: the primary may just be starting
        return self._ttl if not isinstance(result, str) else self._ttl / 5

    async def _read(self, target: postgres_limits.Target) -> Result:
        async with self._gate:
            return await asyncio.to_thread(postgres_limits.read, target)

    async def check(
        self, planned: plan_mod.Plan, creds: common.Credentials, *, user: str
    ) -> tuple[plan_mod.PrimaryLimits | None, conditions.Cond]:
        """The last answer for ``planned``'s primary (read now the first time)."""
        db = planned.database
        key = self.key(planned, creds)
        target = postgres_limits.Target(
            # the pooler resolves a short name in the profile's namespace; so must we
            host=names.resolved_host(db.host, planned.namespace),
            port=db.port,
            database=db.name,
            username=creds.username,
            password=creds.password,
            ssl_mode=db.ssl_mode,
            server_ca_pem=creds.server_ca_pem,
        )
        entry = self._entries.get(key)
        if entry is None:
            result = await self._read(target)
            entry = self._entries.setdefault(
                key, _Entry(target, result, time.monotonic() + self._ttl_for(result))
            )
        entry.target = target
        for other in self._entries.values():  # a profile uses one primary at a time
            if other is not entry:
                other.users.discard(user)
        entry.users.add(user)
        return _condition(db, entry.result)

    def release(self, user: str) -> None:
        """The profile is gone: stop reading for it."""
        for key in [k for k, e in self._entries.items() if user in e.users]:
            entry = self._entries[key]
            entry.users.discard(user)
            if not entry.users:
                del self._entries[key]

    async def refresh_due(self) -> None:
        """Read again every primary whose answer is older than its TTL; report
        the users of those whose answer changed."""
        now = time.monotonic()
        due = [e for e in self._entries.values() if e.expires <= now and e.users]
        results = await asyncio.gather(*(self._read(e.target) for e in due))
        changed: set[str] = set()
        for entry, result in zip(due, results, strict=True):
            entry.expires = time.monotonic() + self._ttl_for(result)
            if result != entry.result:
                entry.result = result
                entry.version += 1
                changed |= entry.users
        for key in [k for k, e in self._entries.items() if not e.users]:
            del self._entries[key]
        if changed and self.on_change is not None:
            self.on_change(changed)


def _condition(
    db: v1alpha1.Database, result: Result
) -> tuple[plan_mod.PrimaryLimits | None, conditions.Cond]:
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
