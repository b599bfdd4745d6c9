"""Replica lag as postgres.lag reads it, on a real streaming standby.

A Postgres 15 primary and a hot standby cloned from it with
``pg_basebackup -R -C -S <slot>`` (what the streaming mode of read replicas
will run), both on 127.0.0.1. Replay is paused on the standby while the
primary keeps writing: the lag grows in bytes and seconds; resumed, it goes
back to none. Read with the app's own role, by the read-pool agent's blocking
reads and by the operator's probe (both servers at once, non-blocking).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import servers

from headroom.planning import membership
from headroom.postgres import lag, server_limits
from headroom.reconcile import replica_lag, resolver

pytestmark = pytest.mark.conformance

USER, PASSWORD, DBNAME = "lag_app", "lag-app-secret-4", "lagdb"
SLOT = "headroom_standby_0"


@pytest.fixture(scope="module")
def pair(tools: servers.Tools) -> Iterator[tuple[servers.Postgres, servers.Standby]]:
    primary = servers.Postgres(tools)
    standby: servers.Standby | None = None
    try:
        primary.start()
        primary.create_app(USER, PASSWORD, DBNAME, scale=1)
        primary.admin(DBNAME).rows(
            "CREATE TABLE ticks (at timestamptz DEFAULT now()); "
            f"GRANT INSERT ON ticks TO {servers.quote_ident(USER)}"
        )
        standby = servers.Standby(primary, slot=SLOT).start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


def _target(server: servers.Postgres) -> server_limits.Target:
    return server_limits.Target(
        host=servers.HOST,
        port=server.port,
        database=DBNAME,
        username=USER,
        password=PASSWORD,
        ssl_mode="disable",
    )


def _position(server: servers.Postgres) -> lag.Position:
    found = lag.position(_target(server))
    assert isinstance(found, lag.Position), found
    return found


def _lag(primary: servers.Postgres, standby: servers.Postgres) -> lag.Lag:
    return lag.lag(_position(primary), _position(standby))


def _write(primary: servers.Postgres, seconds: float) -> None:
    app = servers.Psql(primary.tools, primary.port, USER, PASSWORD, DBNAME)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.rows("INSERT INTO ticks DEFAULT VALUES")
        time.sleep(0.05)


def _probe(primary: servers.Postgres, standby: servers.Postgres) -> replica_lag.ReplicaReading:
    """The operator's reading of ``standby`` against ``primary``."""
    read = replica_lag.reader(resolver.Resolver())
    return asyncio.run(read(replica_lag.Pair(_target(primary), _target(standby))))


def _caught_up(primary: servers.Postgres, standby: servers.Postgres) -> bool:
    return _lag(primary, standby).bytes == 0


def test_the_standby_streams_through_its_slot_and_catches_up(
    pair: tuple[servers.Postgres, servers.Standby],
) -> None:
    primary, standby = pair
    assert not _position(primary).in_recovery
    assert _position(standby).in_recovery
    slots = primary.admin().rows("SELECT slot_name, slot_type, active FROM pg_replication_slots")
    assert slots == [[SLOT, "physical", "t"]]
    _write(primary, 0.5)
    servers.wait_until(lambda: _caught_up(primary, standby), timeout=30, what="the standby")
    assert _lag(primary, standby).seconds == 0.0
    reading = _probe(primary, standby)
    assert reading.observed == membership.Observed(in_recovery=True, lag_bytes=0, lag_seconds=0.0)
    assert reading.limits is not None and reading.limits.max_connections == _max_connections(
        standby
    )


def test_paused_replay_shows_as_lag_in_bytes_and_seconds_until_resumed(
    pair: tuple[servers.Postgres, servers.Standby],
) -> None:
    primary, standby = pair
    servers.wait_until(lambda: _caught_up(primary, standby), timeout=30, what="the standby")
    standby.admin().rows("SELECT pg_wal_replay_pause()")
    servers.wait_until(lambda: _position(standby).replay_paused, timeout=10, what="replay to pause")
    try:
        _write(primary, 2.5)
        behind = _lag(primary, standby)
        assert behind.bytes > 0
        # the last replayed transaction is from before the pause, ~2.5 s ago
        assert 1.5 <= behind.seconds < 60, behind
        assert not behind.within(1) and behind.within(60)
        probed = _probe(primary, standby).observed
        assert probed.error is None and (probed.lag_bytes or 0) >= behind.bytes
        assert probed.lag_seconds is not None and 1.0 <= probed.lag_seconds < 60
    finally:
        standby.admin().rows("SELECT pg_wal_replay_resume()")
    servers.wait_until(lambda: _caught_up(primary, standby), timeout=30, what="the standby")
    assert _lag(primary, standby) == lag.Lag(bytes=0, seconds=0.0)


def test_an_unreachable_replica_is_a_reason_not_a_position(
    pair: tuple[servers.Postgres, servers.Standby],
) -> None:
    primary, _ = pair
    wrong = server_limits.Target(
        host=servers.HOST,
        port=servers.free_port(),
        database=DBNAME,
        username=USER,
        password=PASSWORD,
        ssl_mode="disable",
    )
    found = lag.position(wrong, timeout_seconds=2)
    assert isinstance(found, str) and "OperationalError" in found
    assert PASSWORD not in found
    assert isinstance(lag.position(_target(primary)), lag.Position)
    probed = asyncio.run(
        replica_lag.reader(resolver.Resolver())(replica_lag.Pair(_target(primary), wrong))
    )
    assert probed.observed.error is not None and "OperationalError" in probed.observed.error
    assert PASSWORD not in probed.observed.error and probed.limits is None


def _max_connections(server: servers.Postgres) -> int:
    return int(server.admin().rows("SHOW max_connections")[0][0])
