"""An open-loop load on 127.0.0.1 that measures which requests waited for a server
connection: the check of a pool sized by queueing theory (planning.queueing).

Requests arrive as a Poisson process at a declared rate, each holds a database
connection for an exponential time (``pg_sleep``), as the M/M/s model Erlang C
describes; they go through a real PgBouncer on real client connections (psycopg,
enough of them that the client side never queues). The time a request waited is
measured on one clock: the client's wall clock just before it sends the query, and
Postgres' ``clock_timestamp()`` when the statement starts, on the same machine;
what lies between is PgBouncer's queue, plus the two hops (a fraction of a
millisecond, milliseconds now and then on a busy machine: a wait counts above
``threshold_seconds``, and the M/M/s chance to compare with is that of a wait
longer than it, queueing.wait_longer_than). The server connections PgBouncer opened
(it opens one only when none is idle, and keeps them idle afterwards) give the
most the load needed at once.

Used by tests/conformance/test_load_sizing.py, test_recommendations.py and
bench/load_bench.py.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

import psycopg
import servers

from headroom.planning import planner


@dataclass(frozen=True)
class Measured:
    requests: int
    waited: int  # requests that waited longer than Offered.threshold_seconds
    mean_wait_seconds: float
    errors: int
    client_short: int  # arrivals that found no free client connection (must be 0)
    late_seconds: float  # how far the generator fell behind its schedule at most
    waits: tuple[float, ...] = ()  # every measured wait, sorted

    def quantile(self, q: float) -> float:
        return self.waits[min(len(self.waits) - 1, int(q * len(self.waits)))] if self.waits else 0.0

    @property
    def wait_share(self) -> float:
        return self.waited / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Offered:
    requests_per_second: float
    seconds_per_request: float
    warmup_seconds: float
    measured_requests: int
    clients: int  # client connections opened to PgBouncer
    # a wait up to this long is not counted: on a busy shared machine the two hops
    # alone take milliseconds now and then (compare queueing.wait_longer_than)
    threshold_seconds: float
    seed: int = 25


async def _run(conninfo: str, offered: Offered) -> Measured:
    free: asyncio.Queue[psycopg.AsyncConnection[tuple[float]]] = asyncio.Queue()
    opened = []
    for _ in range(offered.clients):
        # no named prepared statements: transaction pooling on any release
        conn = await psycopg.AsyncConnection.connect(
            conninfo, autocommit=True, prepare_threshold=None
        )
        opened.append(conn)
        free.put_nowait(conn)
    chance = random.Random(offered.seed)
    waits: list[float] = []
    errors = 0
    client_short = 0
    late = 0.0
    tasks: set[asyncio.Task[None]] = set()

    async def one(service: float, measured: bool) -> None:
        nonlocal errors
        conn = await free.get()
        try:
            sent = time.time()
            cursor = await conn.execute(
                "SELECT extract(epoch FROM clock_timestamp())::float8, pg_sleep(%s)",
                (service,),
            )
            row = await cursor.fetchone()
            if measured and row is not None:
                waits.append(max(0.0, row[0] - sent))
        except psycopg.Error:
            errors += 1
        finally:
            free.put_nowait(conn)

    warmup = round(offered.warmup_seconds * offered.requests_per_second)
    start = time.monotonic()
    due = 0.0
    try:
        for index in range(warmup + offered.measured_requests):
            due += chance.expovariate(offered.requests_per_second)
            delay = start + due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            if free.empty():
                client_short += 1
            service = chance.expovariate(1 / offered.seconds_per_request)
            task = asyncio.create_task(one(service, index >= warmup))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    finally:
        for conn in opened:
            await conn.close()
    waited = sum(1 for w in waits if w > offered.threshold_seconds)
    return Measured(
        requests=len(waits),
        waited=waited,
        mean_wait_seconds=sum(waits) / len(waits) if waits else 0.0,
        errors=errors,
        client_short=client_short,
        late_seconds=late,
        waits=tuple(sorted(waits)),
    )


def run(conninfo: str, offered: Offered) -> Measured:
    """Offer the load through ``conninfo`` (PgBouncer) and measure the waits."""
    (measured,) = run_together([(conninfo, offered)])
    return measured


def run_together(loads: Sequence[tuple[str, Offered]]) -> list[Measured]:
    """Each (conninfo, offered) load at once, on one event loop: each its own
    arrivals, client connections and measurements, as if run alone, provided the
    server connections the pools behind them open fit the server together."""

    async def every() -> list[Measured]:
        return list(await asyncio.gather(*(_run(c, offered) for c, offered in loads)))

    return asyncio.run(every())


def conninfo(bouncer: servers.PgBouncer, database: servers.AppDatabase) -> str:
    """The app's connection string through ``bouncer``."""
    return (
        f"host={servers.HOST} port={bouncer.port} dbname={database.name} "
        f"user={database.user} password={database.password}"
    )


def opened(
    bouncer: servers.PgBouncer, database: servers.AppDatabase, *, stats_password: str
) -> int:
    """The server connections ``bouncer`` holds for the app's database (SHOW POOLS)."""
    pools = bouncer.show("POOLS", user=planner.STATS_USER, password=stats_password)
    return sum(
        int(row[column])
        for row in pools
        if row["database"] == database.name
        for column in ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
    )
