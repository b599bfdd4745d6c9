"""The primary's own connection limits, read with the app's credentials: an
instance of the periodic probe (:mod:`headroom.reconcile.probe`).

The profiles on one primary that log in alike share its reading (the key is
the primary's address, database, TLS mode and a digest of the login and CA);
a failed read is tried again after a fifth of the TTL (the primary may just
be starting), backing off while it keeps failing. Called by the reconcile pass
(:meth:`PrimaryLimitsProbe.check`, which never waits) and refreshed by the
runtime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

from headroom.api import conditions, v1alpha1
from headroom.planning import credentials, names, planner
from headroom.postgres import server_limits
from headroom.reconcile import probe, resolver

CONNECT_TIMEOUT_SECONDS = 3
TIME_LIMIT_SECONDS = 10.0  # the name's lookup, the connect and the query

ProbeKey = tuple[Any, ...]
Result = planner.PrimaryLimits | str  # limits, or why they could not be read
Reader = Callable[[server_limits.Target], Awaitable[Result]]


def digest(*secrets: str | None) -> str:
    """What tells two logins (or CAs) apart in a probe key, without the secret."""
    hashed = hashlib.sha256()
    for value in secrets:
        hashed.update((value or "").encode() + b"\0")
    return hashed.hexdigest()[:32]


def at_address(resolve: resolver.Resolver, read: Reader) -> Reader:
    """``read`` at the address ``resolve`` gives for the target's host (one
    lookup per host per refresh, shared); a name that does not resolve is the
    answer."""

    async def run(target: server_limits.Target) -> Result:
        found = await resolver.pinned(resolve, target)
        return found if isinstance(found, str) else await read(found)

    return run


def _read_limits(target: server_limits.Target) -> Awaitable[Result]:
    return server_limits.read_async(target, timeout_seconds=CONNECT_TIMEOUT_SECONDS)


class PrimaryLimitsProbe(probe.PeriodicProbe[server_limits.Target, Result]):
    def __init__(
        self,
        *,
        ttl_seconds: float = 300.0,
        resolve: resolver.Resolver | None = None,
        slots: probe.Slots | None = None,
        on_change: Callable[[set[str]], None] | None = None,
        reader: Reader | None = None,  # None: Postgres itself
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(
            read=at_address(resolve or resolver.Resolver(), reader or _read_limits),
            ttl_seconds=ttl_seconds,
            # a failure is retried sooner: the primary may just be starting
            failed=lambda result: isinstance(result, str),
            failure_ttl_seconds=ttl_seconds / 5,
            max_backoff_seconds=ttl_seconds,
            time_limit_seconds=TIME_LIMIT_SECONDS,
            on_timeout=lambda _: f"no answer within {TIME_LIMIT_SECONDS:g} s",
            slots=slots,
            on_change=on_change,
            clock=clock,
        )

    @staticmethod
    def key(planned: planner.Plan, creds: credentials.Credentials) -> ProbeKey:
        db = planned.database
        return (
            names.resolved_host(db.host, planned.namespace),
            db.port,
            db.name,
            db.ssl_mode,
            creds.username,
            digest(creds.password, creds.server_ca_pem),
        )

    def check(
        self, planned: planner.Plan, creds: credentials.Credentials, *, user: str
    ) -> probe.Answer[Result]:
        """The last answer for ``planned``'s primary (result None: not read yet;
        the read has started)."""
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
        key = self.key(planned, creds)
        return self.answers(user, {key: target})[key]


def condition(
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
