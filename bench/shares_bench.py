#!/usr/bin/env python3
"""Shares benchmark: one Postgres server (max_connections 100) shared by 20
ScalingProfiles on the local control plane, their pooler pods run for real
(tests/e2e/pooler_pods.py: PgBouncer 1.26.1 and whatever else the pod spec
lists), pgbench through every pooler; then a 21st profile is applied.

Measures:

- the time from the 21st profile's apply to all 21 at their new shares: every
  profile Ready at the share `headroom plan` prints for the 21, every pooler
  Deployment rolled out, and every running PgBouncer reporting (SHOW CONFIG)
  its ConfigMap's max_db_connections; polled every 0.5 s;
- the peak of Postgres' client backends of the apps' role, sampled every
  100 ms from pg_stat_activity, against what the server has for the pools
  (max_connections - superuser_reserved_connections - what the profiles keep);
- the pgbench client errors, and pooler pods replaced and containers restarted
  while the shares changed.

Needs the local control plane (make cluster; KUBECONFIG names it) and root
(pooler_pods' namespaces). Writes Markdown to --out and prints it.

    KUBECONFIG=... .venv/bin/python bench/shares_bench.py [--out bench/results/shares.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "operator", REPO / "tests" / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import kube  # noqa: E402
import operator_process  # noqa: E402
import shared_server  # noqa: E402
from apps import CREDENTIALS, credentials, named_app  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "shares.md"
PROFILES = 20
CLIENTS_PER_PROFILE = 4


def _profile(namespace: str, index: int, port: int) -> dict[str, Any]:
    """A transaction-mode app of up to 10 pods x 5 connections (more than its
    share: every pool is held to its share), one pooler pod, weight 1 or 2."""
    name = f"app{index:02d}"
    return {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "app": {"deployment": name, "replicas": {"min": 1, "max": 10}, "poolSizePerPod": 5},
            "database": {
                "host": shared_server.HOST,
                "port": port,
                "name": name,
                "credentialsSecret": {"name": CREDENTIALS},
                "readLimits": False,
                "reservedConnections": 0,
                "metrics": {"enabled": False},
                "share": {"weight": 1 + index % 2},
            },
            "pooler": {"instances": 1},
        },
    }


def _kubectl(kubeconfig: str, workdir: Path) -> kube.Kubectl:
    built = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh")], capture_output=True, text=True, check=True
    )
    bin_dir = built.stdout.strip().splitlines()[-1]
    return kube.kubectl_runner(
        [
            str(Path(bin_dir) / "kubectl"),
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={workdir / 'kubectl-cache'}",
        ]
    )


def _filled(budget: shared_server.Budget, shares: dict[str, int]) -> None:
    """Until every pool is full: as many server connections as the running
    pooler pods may hold (a share counts the rollout's extra pod)."""
    full = sum(share // 2 for share in shares.values())
    kube.wait_for(
        lambda: budget.samples and budget.samples[-1][1] >= full,
        timeout=120,
        interval=0.1,
        what=f"{full} server connections (every pool full)",
    )


def _uids(state: dict[str, str]) -> set[str]:
    return set(state.values())


def run(kubeconfig: str, workdir: Path) -> dict[str, Any]:
    kubectl = _kubectl(kubeconfig, workdir)
    found: dict[str, Any] = {"load_before": os.getloadavg()}
    names = [f"app{i:02d}" for i in range(1, PROFILES + 2)]
    with (
        operator_process.running(kubectl, kubeconfig=kubeconfig, workdir=workdir / "op"),
        kube.fresh_namespace(kubectl) as namespace,
        shared_server.server(names) as pg,
    ):
        tools = pg.tools
        documents = [_profile(namespace, i, pg.port) for i in range(1, PROFILES + 2)]
        first, last = documents[:PROFILES], documents[PROFILES]
        kube.apply(kubectl, credentials(namespace), *(named_app(namespace, n) for n in names))
        with (
            shared_server.pooler_pods_of(kubectl, namespace, pg) as pods,
            shared_server.Budget(pg) as budget,
        ):
            traffic = shared_server.Traffic(
                pods,
                tools=tools,
                clients=dict.fromkeys(names, CLIENTS_PER_PROFILE),
                workdir=pods.node.workdir,
            )
            budget.allow(shared_server.MAX_CONNECTIONS - shared_server.SUPERUSER_RESERVED, "server")
            try:
                kube.apply(kubectl, *first, namespace=namespace)
                planned_first = shared_server.planned_as_stored(kubectl, namespace)
                # the 21st is the newest: a time after the others' stands for its own
                planned_all = shared_server.planned_as_stored(
                    kubectl, namespace, unstored=(last,), created="9999-12-31T00:00:00Z"
                )
                before = shared_server.converged(kubectl, namespace, pods, tools, planned_first)
                room = shared_server.room(kubectl, namespace, names[:PROFILES])
                budget.allow(room, f"{PROFILES} profiles")
                traffic.start(*names[:PROFILES])
                _filled(budget, planned_first)  # before the change
                errors_before = traffic.failed()
                restarts_before = pods.restarts()
                started = time.monotonic()
                sampled_from = len(budget.samples)
                kube.apply(kubectl, last, namespace=namespace)
                after = shared_server.converged(
                    kubectl, namespace, pods, tools, planned_all, timeout=600
                )
                found["seconds"] = time.monotonic() - started
                during = [count for _, count in budget.samples[sampled_from:]]
                found["room_after"] = shared_server.room(kubectl, namespace, names)
                budget.allow(found["room_after"], f"{PROFILES + 1} profiles")
                traffic.start(last["metadata"]["name"])
                _filled(budget, planned_all)
            finally:
                traffic.stop()
            found |= {
                "room_before": room,
                "peak_during": max(during, default=0),
                "peak": budget.peak,
                "samples": len(budget.samples),
                "over": budget.over(),
                "errors_before": errors_before,
                "errors": {
                    k: v[len(errors_before.get(k, [])) :]
                    for k, v in traffic.failed().items()
                    if len(v) > len(errors_before.get(k, []))
                },
                "replaced": len(_uids(before) - _uids(after)),
                "pods_before": len(before),
                "restarts": pods.restarts() - restarts_before,
                "planned_first": planned_first,
                "planned_all": planned_all,
                "harness_errors": list(pods.errors),
            }
    found["load_after"] = os.getloadavg()
    return found


def report(found: dict[str, Any]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.2f}" for x in found["load_before"])
    load_after = ", ".join(f"{x:.2f}" for x in found["load_after"])
    first, all_ = found["planned_first"], found["planned_all"]
    changed = sorted(n for n in first if first[n] != all_[n])
    errors = sum(len(v) for v in found["errors"].values())
    lines = [
        "# Shares benchmark",
        "",
        f"Generated by `bench/shares_bench.py` (`make bench`) on {now}.",
        "",
        f"- Machine: {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        f"load average {load} before and {load_after} after (1, 5, 15 min): other work "
        "shared the machine, read the time as an upper bound.",
        f"- One Postgres 15 (`max_connections` {shared_server.MAX_CONNECTIONS}, "
        f"`superuser_reserved_connections` {shared_server.SUPERUSER_RESERVED}) shared by "
        f"{PROFILES} transaction-mode profiles (weights 1 and 2 alternating, one pooler pod "
        "each, demand 10 pods x 5 connections, no reserved direct connections, "
        "postgres_exporter off); the pooler pods run for real (tests/e2e/pooler_pods.py: "
        "PgBouncer 1.26.1 and every container of the pod spec whose program is here); "
        f"pgbench ({CLIENTS_PER_PROFILE} clients, `SELECT pg_sleep(0.05)`) through every "
        "pooler's Service the whole time.",
        f"- The {PROFILES + 1}st profile applied: {len(changed)} of the {PROFILES} shares "
        f"changed (e.g. {changed[0] if changed else '-'}: "
        f"{first.get(changed[0], 0) if changed else 0} -> "
        f"{all_.get(changed[0], 0) if changed else 0}).",
        "",
        "| Figure | Value |",
        "|---|---:|",
        f"| apply of the {PROFILES + 1}st -> all {PROFILES + 1} at their new shares "
        f"(as the running PgBouncers report them) | {found['seconds']:.1f} s |",
        f"| peak server connections of the pools while the shares changed | "
        f"{found['peak_during']} |",
        f"| peak over the whole run | {found['peak']} ({found['samples']} samples, 100 ms) |",
        f"| room for the pools: {PROFILES} profiles / {PROFILES + 1} profiles | "
        f"{found['room_before']} / {found['room_after']} |",
        f"| samples above the room in force | {len(found['over'])} |",
        f"| pgbench client errors while the shares changed | {errors} |",
        f"| pooler pods replaced while the shares changed | {found['replaced']} of "
        f"{found['pods_before']} |",
        f"| pooler containers restarted | {found['restarts']} |",
        "",
        "Notes:",
        "",
        "- Room for the pools: max_connections - superuser_reserved_connections - what each "
        "profile keeps (status.budget.reserved beyond the superuser's); the connections "
        "counted are the client backends of the apps' role in pg_stat_activity.",
        "- A pooler pod replaced is a roll: its pgbench clients lose their connections "
        "(counted as client errors) unless the new share is taken without one.",
    ]
    if found["over"]:
        lines.append(f"- Above the room: {found['over'][:10]}")
    if found["errors"]:
        sample = next(iter(found["errors"].values()))[:2]
        lines.append(f"- Client errors, e.g.: `{sample}`")
    if found["harness_errors"]:
        lines.append(f"- Harness errors: {found['harness_errors'][:5]}")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("set KUBECONFIG (make bench does: the local control plane)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="headroom-shares-bench-") as tmp:
        text = report(run(kubeconfig, Path(tmp)))
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
