"""What a plan says about its declared load (spec.load), as labelled lines: the peak,
each pool against it (its chance of waiting and mean wait, the fewest that would do, the
square-root staffing cross-check) and how far the load may grow before each limit breaks.

Pure: ``headroom plan`` prints the lines (cli), the reconcile pass writes them into
``status.budget.load`` (reconcile.outcome).
"""

from __future__ import annotations

from headroom.planning import load_sizing, planner, queueing

# the labels of rows(), as status.budget.load names them
LABELS = {
    "load": "offered",
    "wait target": "target",
    "app pool": "appPool",
    "server pool": "poolerPool",
    "first bottleneck": "firstBottleneck",
}


def rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """spec.load: the peak, each pool against it, and how far it may grow."""
    load, b = plan.load, plan.budget
    if load is None:
        return []
    target = load.target_wait_probability
    rows = [
        ("load", load.describe()),
        ("wait target", f"{load.target_text} chance a request waits for a connection"),
    ]
    limits: list[tuple[str, int, int]] = []
    app = plan.app_load_pool
    if app is not None:
        rows.append(("app pool", _pool_text(app, size=plan.app.pool_size_per_pod, load=load)))
        limits.append(
            (
                f"app pool (spec.app.poolSizePerPod {plan.app.pool_size_per_pod} on "
                f"{app.pods} pods)",
                plan.app.pool_size_per_pod,
                app.pods,
            )
        )
    server = b.load_pool
    if server is not None:
        size = b.default_pool_size - b.undeclared_per_pod
        text = _pool_text(server, size=size, load=load)
        if b.undeclared_per_pod:
            text += f"; + {b.undeclared_per_pod} for the workers' pools"
        rows.append(("server pool", text))
        room = b.available // b.pooler_pods_at_peak - b.undeclared_per_pod
        limits.append(
            (
                f"database (max_connections {b.max_connections}: {room} per pooler pod)",
                room,
                server.pods,
            )
        )
    elif plan.pooler.pool_mode == "session":
        rows.append(("server pool", "session mode: the app's pools are the server connections"))
    found = load_sizing.headroom(load=load, limits=limits)
    if found:
        rows.append(
            (
                "first bottleneck",
                "; then ".join(
                    f"{limit.what}: up to {limit.requests_per_second:.0f} requests/s "
                    f"({limit.factor(load):.2f}x the peak) at {load_sizing.percent(target)}"
                    for limit in found
                ),
            )
        )
    return rows


def _pool_text(pool: load_sizing.PoolCheck, *, size: int, load: load_sizing.Load) -> str:
    busy = f"{pool.busy_per_pod:.3g} busy on each of {pool.pods} {pool.what}s"
    if size <= pool.busy_per_pod:
        return f"{size} per {pool.what}, {busy}: the queue grows without bound"
    waiting = queueing.erlang_c(servers=size, offered_load=pool.busy_per_pod)
    wait = queueing.mean_wait_seconds(
        servers=size, offered_load=pool.busy_per_pod, seconds_per_request=load.seconds_per_request
    )
    text = (
        f"{size} per {pool.what}, {busy}: {load_sizing.percent(waiting)} chance of waiting, "
        f"mean wait {wait * 1000:.2g} ms"
    )
    if pool.staffing is not None:
        text += (
            f" (fewest for {load.target_text}: {pool.staffing.needed}; square-root staffing: "
            f"{pool.staffing.square_root_estimate})"
        )
    return text
