#!/usr/bin/env python3
"""Pooler benchmark: pgbench select-only against a Postgres 15 with
max_connections=100, directly and through the PgBouncer config Headroom renders.

Runs, each for --duration seconds (pgbench -S, scale 1):

  (a)  50 clients straight to Postgres
  (b)  50 clients through PgBouncer
  (c)  2,000 clients through PgBouncer (profile: replicas.max 200 x
       poolSizePerPod 10, so max_client_conn covers 2,000)
  (d)  2,000 clients straight to Postgres: impossible. pgbench stops at the
       first refused connection, so a SCRAM login probe also opens 2,000
       connections at once and counts how many Postgres refuses.

Writes a Markdown table (TPS, average latency, failed connections, peak server
connections) and the machine it ran on to --out, and prints it. Servers listen
on 127.0.0.1 only, on free ports, and are removed afterwards; as root they run
as the ``postgres`` user. Uses the same server helpers, plan and pgbouncer.ini
rendering as the conformance tests (tests/conformance/servers.py).

    .venv/bin/python bench/pooler_bench.py [--out bench/results/pooler.md] [--duration 15]
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO / "operator", REPO / "tests" / "conformance"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import servers  # noqa: E402

from headroom.planning import planner  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "pooler.md"
MAX_CONNECTIONS = 100
SUPERUSER_RESERVED = 3
MAX_REPLICAS = 200
POOL_PER_POD = 10
SMALL, LARGE = 50, 2000
NOFILE = 10_000


@dataclass
class Row:
    scenario: str
    clients: int
    path: str
    result: servers.PgbenchResult
    peak_server: int
    failed_connections: int
    note: str = ""


def make_plan(port: int) -> planner.Plan:
    plan = servers.pooler_plan(
        name="bench",
        uid="bench",
        port=port,
        dbname="app",
        max_replicas=MAX_REPLICAS,
        pool_per_pod=POOL_PER_POD,
        max_connections=MAX_CONNECTIONS,
        superuser_reserved_connections=SUPERUSER_RESERVED,
        version="1.18",
    )
    if not plan.ok:
        raise SystemExit(f"profile does not plan: {plan.problem_text()}")
    if plan.budget.max_client_conn < LARGE:
        raise SystemExit(f"max_client_conn {plan.budget.max_client_conn} < {LARGE}")
    return plan


def machine(tools: servers.Tools) -> dict[str, str]:
    versions = tools.versions()
    try:
        mem_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        )
        memory = f"{mem_kb / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration, ValueError):
        memory = "?"
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "memory": memory,
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "load": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        **versions,
    }


def fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def run(
    app: servers.AppDatabase,
    *,
    port: int,
    clients: int,
    jobs: int,
    duration: int,
    settle: bool = True,
) -> tuple[servers.PgbenchResult, int]:
    """One pgbench -S run; the peak number of app backends seen while it ran.

    With ``settle`` it first waits for the previous run's backends to exit (not
    when a running PgBouncer keeps its idle server connections).
    """
    if settle:
        app.wait_for_no_app_backends()
    # pgbench's -T clock includes the initial connections (a SCRAM login each,
    # seconds for thousands of clients): when they ate the run, run again with
    # -T stretched by the measured connection time.
    stretch = 0
    with servers.Sampler(app.backends, interval=0.2) as seen:
        for _ in range(2):
            result = app.pgbench(
                port,
                clients=clients,
                jobs=min(jobs, clients),
                duration=duration + stretch,
                timeout=duration + stretch + 600,
            )
            connect_s = (
                result.initial_connection_ms / 1000
                if result.initial_connection_ms is not None
                else result.seconds
            )
            window = result.seconds - connect_s
            if result.returncode != 0 or stretch or window >= 0.8 * duration:
                break
            stretch = math.ceil(connect_s * 1.2) + 1
            print(
                f"  connecting {clients} clients took {connect_s:.1f}s of -T {duration}: "
                f"again with -T {duration + stretch}",
                file=sys.stderr,
            )
    label = f"{clients} clients -> port {port}"
    print(
        f"  {label}: exit {result.returncode}, tps {fmt(result.tps, 0)}, "
        f"latency {fmt(result.latency_avg_ms, 2)} ms, "
        f"connection errors {len(result.connection_errors)}, peak backends {seen.peak}",
        file=sys.stderr,
    )
    return result, seen.peak


def render(
    rows: list[Row], info: dict[str, str], plan: planner.Plan, args: argparse.Namespace
) -> str:
    budget = plan.budget
    lines = [
        "# Pooler benchmark",
        "",
        f"Generated by `bench/pooler_bench.py` on {info['date']}.",
        "",
        f"- Machine: {info['nproc']} CPUs (nproc), {info['memory']} RAM, {info['kernel']}; "
        "Postgres, PgBouncer and pgbench all on this machine, over 127.0.0.1; "
        f"load average before the runs: {info['load']} (1, 5, 15 min).",
        f"- {info['postgres']}: `max_connections={MAX_CONNECTIONS}`, "
        f"`superuser_reserved_connections={SUPERUSER_RESERVED}` "
        f"({budget.available} connections for the app), `fsync=off`, SCRAM-SHA-256 auth.",
        f"- {info['pgbouncer']}: pgbouncer.ini rendered by Headroom for a profile with "
        f"`replicas.max {MAX_REPLICAS}` x `poolSizePerPod {POOL_PER_POD}` "
        f"(client demand {budget.client_demand}), `poolMode transaction`, 1 instance: "
        f"`max_client_conn={budget.max_client_conn}`, "
        f"`default_pool_size={budget.default_pool_size}`, "
        f"`reserve_pool_size={budget.reserve_pool_size}`, "
        f"`max_db_connections={budget.max_db_connections}` (the {budget.available} "
        f"shared by {budget.pooler_pods_at_peak} pods: a rolling update runs one pooler "
        "pod more).",
        f"- {info['pgbench']}: select-only (`-S`), scale 1, `-T {args.duration}` per run "
        "(pgbench's clock includes connecting the clients; when that took most of it the "
        "run was repeated with -T stretched by the connection time, see the -T column), "
        f"`-j {args.jobs}` (fewer for fewer clients), one SCRAM login per client.",
        "",
        "| Run | Clients | Path | TPS | Latency avg (ms) | Failed connections "
        "| Failed transactions | Peak server connections | Initial connect (s) | pgbench -T (s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        result = row.result
        connect = (
            None if result.initial_connection_ms is None else result.initial_connection_ms / 1000
        )
        run_seconds = result.args[result.args.index("-T") + 1]
        lines.append(
            f"| {row.scenario} | {row.clients:,} | {row.path} | {fmt(result.tps, 0)} "
            f"| {fmt(result.latency_avg_ms, 2)} | {row.failed_connections:,} "
            f"| {'n/a' if result.failed_transactions is None else result.failed_transactions} "
            f"| {row.peak_server} | {fmt(connect, 1)} | {run_seconds} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- ({row.scenario}) {row.note}" for row in rows if row.note]
    lines += [
        "- TPS excludes the initial connection time (pgbench's figure); latency is "
        "pgbench's average over the run. Peak server connections: most `app` backends "
        "in `pg_stat_activity`, sampled every 0.2 s during the run.",
        "- With a 2-CPU machine pgbench, PgBouncer (single-threaded) and Postgres "
        "compete for the same cores: read the figures as relative, not as capacity.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Markdown file to write")
    parser.add_argument("--duration", type=int, default=15, help="seconds per pgbench run")
    parser.add_argument("--jobs", type=int, default=4, help="pgbench threads (-j)")
    args = parser.parse_args(argv)

    try:
        tools = servers.find_tools()
    except servers.ToolsMissingError as err:
        print(f"pooler_bench: {err}", file=sys.stderr)
        return 2
    servers.raise_nofile(NOFILE)
    user, password = "app", secrets.token_urlsafe(16)
    stats_password = secrets.token_urlsafe(16)
    info = machine(tools)
    rows: list[Row] = []
    db = servers.Postgres(
        tools, max_connections=MAX_CONNECTIONS, superuser_reserved_connections=SUPERUSER_RESERVED
    )
    try:
        print("starting Postgres and loading pgbench -i -s 1 ...", file=sys.stderr)
        db.start()
        db.create_app(user, password, "app", scale=1)
        app = servers.AppDatabase(db, user, password, "app")
        plan = make_plan(db.port)
        userlist = app.userlist(stats_password)
        common = {"jobs": args.jobs, "duration": args.duration}
        with servers.PgBouncer(tools, servers.ini_for(plan), userlist) as bouncer:
            print(f"(a) {SMALL} clients direct", file=sys.stderr)
            result, peak = run(app, port=db.port, clients=SMALL, **common)
            rows.append(Row("a", SMALL, "direct", result, peak, len(result.connection_errors)))
            print(f"(b) {SMALL} clients through PgBouncer", file=sys.stderr)
            result, peak = run(app, port=bouncer.port, clients=SMALL, **common)
            rows.append(Row("b", SMALL, "PgBouncer", result, peak, len(result.connection_errors)))
            print(f"(c) {LARGE} clients through PgBouncer", file=sys.stderr)
            result, peak = run(app, port=bouncer.port, clients=LARGE, settle=False, **common)
            rows.append(
                Row(
                    "c",
                    LARGE,
                    "PgBouncer",
                    result,
                    peak,
                    len(result.connection_errors),
                    note=f"{LARGE:,} clients held open on PgBouncer, multiplexed over at "
                    f"most {plan.budget.max_db_connections} server connections.",
                )
            )
        print(f"(d) {LARGE} clients direct", file=sys.stderr)
        result, peak = run(app, port=db.port, clients=LARGE, **common)
        app.wait_for_no_app_backends()
        probe = app.probe(db.port, count=LARGE)
        first = next((e for e in result.stderr.splitlines() if "FATAL" in e), "no FATAL seen")
        refused = "; ".join(f"{count:,} `{message}`" for message, count in probe.refused.items())
        rows.append(
            Row(
                "d",
                LARGE,
                "direct",
                result,
                peak,
                probe.failed,
                note=f"impossible: pgbench exited {result.returncode} at its first refused "
                f"connection (`{first.split('FATAL:', 1)[-1].strip()}`) without running a "
                f"transaction. Opening {LARGE:,} SCRAM logins at once: {probe.accepted} got "
                f"in, {probe.failed:,} were refused ({refused}).",
            )
        )
    finally:
        db.stop()

    text = render(rows, info, plan, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
