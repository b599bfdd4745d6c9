"""The operator reads the primary's real connection limits from a real Postgres
(max_connections 100, superuser_reserved_connections 3) on 127.0.0.1, with the
app's own credentials, non-blocking and at the address its resolver gives, and
fails soft (a reason, no password) when it cannot."""

from __future__ import annotations

import asyncio

import servers
from tests import profiles

from headroom.api import v1alpha1
from headroom.planning import live_limits, planner
from headroom.postgres import server_limits
from headroom.reconcile import primary_limits, resolver


def _target(
    database: servers.AppDatabase, *, password: str | None = None, port: int | None = None
) -> server_limits.Target:
    return server_limits.Target(
        host=servers.HOST,
        port=port or database.port,
        database=database.name,
        username=database.user,
        password=password or database.password,
        ssl_mode="disable",
    )


def _read(target: server_limits.Target, *, timeout_seconds: int = 3) -> primary_limits.Result:
    """What the operator's probe reads (the lookup is the system's)."""

    async def read(found: server_limits.Target) -> primary_limits.Result:
        return await server_limits.read_async(found, timeout_seconds=timeout_seconds)

    return asyncio.run(primary_limits.at_address(resolver.Resolver(), read)(target))


def test_reads_the_limits_postgres_runs_with(database: servers.AppDatabase) -> None:
    # Postgres 15 has no reserved_connections (16+); max_slot_wal_keep_size -1 is its default
    assert _read(_target(database)) == planner.PrimaryLimits(
        max_connections=100,
        superuser_reserved_connections=3,
        reserved_connections=0,
        max_slot_wal_keep_size_mb=-1,
        # this database has no pg_stat_statements (StatementStats says so)
        statements_missing='UndefinedTable: relation "pg_stat_statements" does not exist',
    )


def test_a_declared_limit_above_the_real_one_is_refused(database: servers.AppDatabase) -> None:
    live = _read(_target(database))
    assert isinstance(live, planner.PrimaryLimits)
    body = profiles.base(**{"database.maxConnections": 200, "pooler.instances": 1})
    profile = v1alpha1.parse_profile(body)
    planned = planner.plan(profile)
    assert planned.ok  # admission trusts the declared 200
    problems = live_limits.primary_problems(planned, live)
    assert [p.field for p in problems] == ["spec.database.maxConnections"]
    assert (
        "reports max_connections 100 - superuser_reserved_connections 3 - 5 reserved - 3 for "
        "postgres_exporter = 89 available"
    ) in str(problems[0])


def test_a_wrong_password_is_a_reason_without_the_password(
    database: servers.AppDatabase,
) -> None:
    wrong = "not-the-password-7f3a"
    reason = _read(_target(database, password=wrong))
    assert isinstance(reason, str)
    assert "password authentication failed" in reason
    assert wrong not in reason


def test_nothing_listening_is_a_reason(database: servers.AppDatabase) -> None:
    target = _target(database, port=servers.free_port())
    reason = _read(target, timeout_seconds=2)
    assert isinstance(reason, str) and "OperationalError" in reason
    assert database.password not in reason and database.password not in repr(target)
