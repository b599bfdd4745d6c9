"""A queue worker pod in Python, configured by its own binding: redis-py on
REDIS_QUEUE_URL moving each job from QUEUE_LIST to a processing list (so a
crash loses none), psycopg_pool sized by DATABASE_POOL_SIZE. Run by
tests/conformance/test_clients.py; prints one ``REPORT {json}`` line.
"""

from __future__ import annotations

import argparse
import os

import redis
from pod import Pod
from psycopg_pool import ConnectionPool


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pod", required=True)
    opts = parser.parse_args()
    size = int(os.environ["DATABASE_POOL_SIZE"])
    keep = os.environ["DATABASE_PREPARED_STATEMENTS"] == "true"
    pool = ConnectionPool(
        os.environ["DATABASE_URL_POOLED"],
        min_size=size,
        max_size=size,
        kwargs={"prepare_threshold": 5 if keep else None},
        open=True,
    )
    queue = redis.Redis.from_url(os.environ["REDIS_QUEUE_URL"])
    source = os.environ["QUEUE_LIST"]
    processing = f"{source}:processing:{opts.pod}"
    pod = Pod(opts.pod, processed=0)

    def step() -> None:
        job = queue.blmove(source, processing, 0.5, "RIGHT", "LEFT")
        if job is None:
            return
        with pool.connection() as conn, conn.transaction():
            conn.execute("SELECT pg_sleep(0.02)")
            conn.execute(
                "INSERT INTO jobs_done (job_id, worker) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                (job.decode(), opts.pod),
            )
        queue.lrem(processing, 1, job)
        pod.count("processed")

    pod.at_ceiling(size, step, busy=lambda: queue.llen(source) > 0)
    pool.close()
    pod.done()


if __name__ == "__main__":
    main()
