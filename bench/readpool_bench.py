#!/usr/bin/env python3
"""Read-pool benchmark: the read pool of tests/conformance/test_read_pool.py
(a Postgres 15 primary, two hot standbys cloned by Headroom's clone script,
PgBouncer with the agent's include file, the agent process) on this machine.

  (a)  pgbench -S, --clients clients, straight to one standby (its socket)
  (b)  the same through the read pool, which spreads over both standbys
  (c)  eviction: replay paused on a standby while the primary takes writes
       (the writes start first, so its last replayed transaction is fresh);
       the seconds from the pause to the first moment after which no read
       through the pool reaches it (readers: 6 transactions at once, every
       50 ms), --rounds times, resuming and waiting for it to come back between

Writes a Markdown report to --out and prints it.

    .venv/bin/python bench/readpool_bench.py [--out bench/results/readpool.md] [--duration 10]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO / "operator", REPO / "tests" / "conformance"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import servers  # noqa: E402
import test_read_pool as rp  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "readpool.md"


def _pgbench(
    pool: rp.ReadPool, *, host: str, port: int, clients: int, duration: int
) -> servers.PgbenchResult:
    return servers.run_pgbench(
        pool.primary.tools, host=host, port=port, user=rp.USER, password=rp.PASSWORD,
        dbname=rp.DBNAME, clients=clients, jobs=2, duration=duration,
    )  # fmt: skip


def _eviction(pool: rp.ReadPool, *, bound: float) -> float:
    """Seconds from pausing replay on standby 0 to the last read it served."""
    paused = pool.standbys[0]
    started = last_seen = time.monotonic()
    try:
        with rp.Writer(pool.primary):
            time.sleep(0.5)  # the standby replays fresh transactions up to the pause
            paused.admin().rows("SELECT pg_wal_replay_pause()")
            started = time.monotonic()
            last_seen = started
            # a read after the bound + 5 s would mean it never left
            while time.monotonic() - started < bound + 5:
                if paused.host in pool.hosts_reading(6):
                    last_seen = time.monotonic()
                elif time.monotonic() - last_seen > 2:
                    break
                time.sleep(0.05)
    finally:
        paused.admin().rows("SELECT pg_wal_replay_resume()")
    both = {node.host for node in pool.standbys}
    servers.wait_until(
        lambda: pool.hosts_reading(6) == both, timeout=30, what="the standby to come back"
    )
    return last_seen - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-lag-seconds", type=int, default=3)
    parser.add_argument("--poll-seconds", type=int, default=1)
    args = parser.parse_args(argv)
    tools = servers.find_tools()
    with rp.launch(
        tools, max_lag_seconds=args.max_lag_seconds, poll_seconds=args.poll_seconds, scale=5
    ) as pool:
        direct = _pgbench(
            pool, host=pool.standbys[0].host, port=rp.STANDBY_PORT,
            clients=args.clients, duration=args.duration,
        )  # fmt: skip
        pooled = _pgbench(
            pool, host=servers.HOST, port=pool.read_pooler.port,
            clients=args.clients, duration=args.duration,
        )  # fmt: skip
        evictions = [_eviction(pool, bound=args.max_lag_seconds) for _ in range(args.rounds)]
        versions = tools.versions()
    for run in (direct, pooled):
        if run.returncode != 0 or run.tps is None:
            print(run.output, file=sys.stderr)
            return 1
    assert direct.tps is not None and pooled.tps is not None
    text = "\n".join(
        [
            "# Read pool benchmark",
            "",
            f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}"
            f" ({os.cpu_count()} CPUs, {platform.platform()}): {versions['postgres']},"
            f" {versions['pgbouncer']}. `make bench` (bench/readpool_bench.py).",
            "",
            f"A primary and two hot standbys (cloned by builders/standby.CLONE_SCRIPT, pgbench"
            f" scale 5), PgBouncer in transaction mode over both standbys"
            f" (`host=/dir0,/dir1`, one port), the read-pool agent polling every"
            f" {args.poll_seconds:g} s with maxLagSeconds {args.max_lag_seconds:g}.",
            "",
            f"| pgbench -S, {args.clients} clients, {args.duration} s | tps | latency ms |",
            "| --- | ---: | ---: |",
            f"| one standby, direct | {direct.tps:.0f} | {direct.latency_avg_ms} |",
            f"| read pool, two standbys | {pooled.tps:.0f} | {pooled.latency_avg_ms} |",
            "",
            f"Ratio pool / direct: {pooled.tps / direct.tps:.2f}. Every process shares the"
            " same cores here, so two standbys add no CPU: the figure shows the pool's"
            " cost on one machine, not the gain of a second replica host.",
            "",
            "Eviction: replay paused on one standby while the primary takes writes; seconds"
            " from the pause to the last read it served through the pool:",
            "",
            "| round | seconds |",
            "| ---: | ---: |",
            *(f"| {i + 1} | {value:.2f} |" for i, value in enumerate(evictions)),
            "",
            f"Median {statistics.median(evictions):.2f} s; the bound is maxLagSeconds"
            f" {args.max_lag_seconds:g} + one poll {args.poll_seconds:g} s ="
            f" {args.max_lag_seconds + args.poll_seconds:g} s.",
            "",
        ]
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
