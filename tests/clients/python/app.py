"""An app pod in Python, configured by the binding alone: psycopg_pool,
SQLAlchemy, asyncpg or Django (``--client``) on DATABASE_URL_POOLED sized by
DATABASE_POOL_SIZE, a redis-py producer on REDIS_URL, written as docs/api.md
("The binding", generic) shows. Run by tests/conformance/test_clients.py as its own process;
prints one ``REPORT {json}`` line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable

import redis
from pod import Pod

CLIENTS = ("psycopg", "sqlalchemy", "asyncpg", "django")


def prepare_threshold() -> int | None:
    # PgBouncer keeps named prepared statements across transactions only from 1.21 on.
    return 5 if os.environ["DATABASE_PREPARED_STATEMENTS"] == "true" else None


def psycopg_work(size: int, pod: str) -> tuple[Callable[[], None], Callable[[], None]]:
    from psycopg_pool import ConnectionPool

    pool = ConnectionPool(
        os.environ["DATABASE_URL_POOLED"],
        min_size=size,
        max_size=size,
        kwargs={"prepare_threshold": prepare_threshold()},
        open=True,
    )

    def work() -> None:
        with pool.connection() as conn, conn.transaction():
            (order_id,) = conn.execute(
                "INSERT INTO orders (pod, amount) VALUES (%s, 1) RETURNING id", (pod,)
            ).fetchone() or (0,)
            conn.execute("SELECT pg_sleep(0.02)")
            conn.execute("SELECT id FROM orders WHERE id = %s", (order_id,)).fetchone()

    return work, pool.close


def sqlalchemy_work(size: int, pod: str) -> tuple[Callable[[], None], Callable[[], None]]:
    import sqlalchemy as sa

    url = sa.make_url(os.environ["DATABASE_URL_POOLED"]).set(drivername="postgresql+psycopg")
    engine = sa.create_engine(
        url,
        pool_size=size,
        max_overflow=0,
        connect_args={"prepare_threshold": prepare_threshold()},
    )

    def work() -> None:
        with engine.begin() as conn:
            order_id = conn.execute(
                sa.text("INSERT INTO orders (pod, amount) VALUES (:pod, 1) RETURNING id"),
                {"pod": pod},
            ).scalar_one()
            conn.execute(sa.text("SELECT pg_sleep(0.02)"))
            conn.execute(sa.text("SELECT id FROM orders WHERE id = :id"), {"id": order_id})

    return work, engine.dispose


def django_work(size: int, pod: str) -> tuple[Callable[[], None], Callable[[], None]]:
    import dj_database_url
    import django
    from django.conf import settings

    url = dj_database_url.parse(os.environ["DATABASE_URL_POOLED"])
    default = {
        **url,
        # Django's own pool (5.1+) of DATABASE_POOL_SIZE; it wants CONN_MAX_AGE 0
        "CONN_MAX_AGE": 0,
        # server-side cursors do not survive transaction pooling
        "DISABLE_SERVER_SIDE_CURSORS": True,
        "OPTIONS": {
            **url.get("OPTIONS", {}),
            "pool": {"min_size": size, "max_size": size},
            "prepare_threshold": prepare_threshold(),
        },
    }
    settings.configure(DATABASES={"default": default})
    django.setup()
    from django.db import connection, transaction

    def work() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                insert = "INSERT INTO orders (pod, amount) VALUES (%s, 1) RETURNING id"
                cursor.execute(insert, [pod])
                (order_id,) = cursor.fetchone()
                cursor.execute("SELECT pg_sleep(0.02)")
                cursor.execute("SELECT id FROM orders WHERE id = %s", [order_id])
        finally:
            connection.close()  # back to the pool, as at the end of a request

    return work, connection.close_pool


async def asyncpg_pod(size: int, pod: Pod) -> None:
    import asyncpg

    # asyncpg prepares every statement by name; through a pooler that cannot keep
    # them, statement_cache_size=0 makes them unnamed
    keep = os.environ["DATABASE_PREPARED_STATEMENTS"] == "true"
    pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL_POOLED"],
        min_size=size,
        max_size=size,
        statement_cache_size=100 if keep else 0,
    )

    async def step() -> None:
        async with pool.acquire() as conn, conn.transaction():
            order_id = await conn.fetchval(
                "INSERT INTO orders (pod, amount) VALUES ($1, 1) RETURNING id", pod.report["pod"]
            )
            await conn.execute("SELECT pg_sleep(0.02)")
            await conn.fetchval("SELECT id FROM orders WHERE id = $1", order_id)
        pod.count("queries")

    await pod.at_ceiling_async(size, step)
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=CLIENTS, required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    opts = parser.parse_args()
    size = int(os.environ["DATABASE_POOL_SIZE"])
    queue = redis.Redis.from_url(os.environ["REDIS_URL"])
    for i in range(opts.jobs):
        queue.lpush("jobs", f"{opts.pod}-{i}")
    pod = Pod(opts.pod, jobs=opts.jobs)
    if opts.client == "asyncpg":
        asyncio.run(asyncpg_pod(size, pod))
        pod.done()
        return
    make = {"psycopg": psycopg_work, "sqlalchemy": sqlalchemy_work, "django": django_work}
    work, close = make[opts.client](size, opts.pod)

    def step() -> None:
        work()
        pod.count("queries")

    pod.at_ceiling(size, step)
    close()
    pod.done()


if __name__ == "__main__":
    main()
