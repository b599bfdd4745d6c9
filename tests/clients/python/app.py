"""An app pod in Python, configured by the binding alone: psycopg_pool or
SQLAlchemy (``--client``) on DATABASE_URL_POOLED sized by DATABASE_POOL_SIZE,
a redis-py producer on REDIS_URL, written as docs/api.md ("The binding",
generic) shows. Run by tests/conformance/test_clients.py as its own process;
prints one ``REPORT {json}`` line.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import redis
from pod import Pod


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--client", choices=("psycopg", "sqlalchemy"), required=True)
    parser.add_argument("--pod", required=True)
    parser.add_argument("--jobs", type=int, default=0)
    opts = parser.parse_args()
    size = int(os.environ["DATABASE_POOL_SIZE"])
    queue = redis.Redis.from_url(os.environ["REDIS_URL"])
    for i in range(opts.jobs):
        queue.lpush("jobs", f"{opts.pod}-{i}")
    make = psycopg_work if opts.client == "psycopg" else sqlalchemy_work
    work, close = make(size, opts.pod)
    pod = Pod(opts.pod, jobs=opts.jobs)

    def step() -> None:
        work()
        pod.count("queries")

    pod.at_ceiling(size, step)
    close()
    pod.done()


if __name__ == "__main__":
    main()
