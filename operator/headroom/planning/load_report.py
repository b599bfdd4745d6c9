"""What a plan says about its declared load (spec.load), as labelled lines: the peak,
each pool against it (its chance of waiting and mean wait, the fewest that would do, the
square-root staffing cross-check) and how far the load may grow before each limit breaks.

Pure: ``headroom plan`` prints the lines (cli), the reconcile pass writes them into
``status.budget.load`` (reconcile.outcome).
"""

from __future__ import annotations

from headroom.planning import load_sizing, planner, queue_memory, queueing

# the labels of rows(), as status.budget.load names them
LABELS = {
    "load": "offered",
    "wait target": "target",
    "app pool": "appPool",
    "server pool": "poolerPool",
    "read pool": "readPool",
    "workers": "workers",
    "first bottleneck": "firstBottleneck",
    "redis memory": "redisMemory",
}


def rows(plan: planner.Plan) -> list[tuple[str, str]]:
    """spec.load: the peak, each pool against it, the workers against their jobs, the
    queues' Redis memory against what their jobs hold, and how far each may grow."""
    load, b = plan.load, plan.budget
    if load is None and not plan.worker_loads:
        return []
    rows: list[tuple[str, str]] = []
    found: list[load_sizing.Limit] = []
    if load is not None:
        reads = plan.read_load
        rows += [
            ("load", load.describe() + (f"; reads: {reads.describe()}" if reads else "")),
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
        found += load_sizing.headroom(load=load, limits=limits)
        server = b.load_pool
        if server is not None:
            # the requests and the jobs that declare their database time, on one pool
            both = load.with_jobs(planner.job_loads(plan.queues))
            size = b.default_pool_size - b.undeclared_per_pod
            text = _pool_text(server, size=size, load=both)
            if both.jobs_offered_load:
                text += f"; the workers' jobs' {both.jobs_offered_load:.3g} busy included"
            if b.undeclared_per_pod:
                text += f"; + {b.undeclared_per_pod} for the workers' pools"
            rows.append(("server pool", text))
            room = b.available // b.pooler_pods_at_peak - b.undeclared_per_pod
            found += load_sizing.headroom(
                load=both,
                limits=[
                    (
                        f"database (max_connections {b.max_connections}: {room} per pooler pod)",
                        room,
                        server.pods,
                    )
                ],
            )
        elif plan.pooler.pool_mode == "session":
            rows.append(("server pool", "session mode: the app's pools are the server connections"))
        read_rows, read_limits = _read_pool(plan)
        rows += read_rows
        found += read_limits
    if plan.worker_loads:
        rows.append(("workers", "; ".join(w.text() for w in plan.worker_loads)))
        found += [w.limit() for w in plan.worker_loads]
    found += [_memory_limit(check) for check in plan.queue_memory]
    undeclared = [q.name for q in plan.queues if q.load is None]
    if found:
        target = (
            load.target_wait_probability
            if load
            else plan.worker_loads[0].load.target_wait_probability
        )
        rows.append(
            (
                "first bottleneck",
                "; then ".join(
                    f"{limit.what}: up to {limit.rate:.0f} {limit.unit} "
                    f"({limit.factor:.2f}x the peak) at {load_sizing.percent(target)}"
                    for limit in sorted(found, key=lambda limit: limit.factor)
                )
                + (
                    f"; workers {', '.join(undeclared)}: no spec.queues[].load declared"
                    if undeclared
                    else ""
                ),
            )
        )
    if plan.redis:
        rows.append(("redis memory", _redis_text(plan)))
    return rows


def _read_pool(plan: planner.Plan) -> tuple[list[tuple[str, str]], list[load_sizing.Limit]]:
    """The reads (spec.load.readSecondsPerRequest): the app pod's read pool and each
    read-pooler pod's against them, and how far they may grow (the smallest replica
    carries the whole read pool when the others are out)."""
    reads, read, app = plan.read_load, plan.read, plan.app_read_pool
    if reads is None or read is None or app is None:
        return [], []
    size = read.pool_size_per_pod
    texts = [f"app {_pool_text(app, size=size, load=reads)}"]
    limits = [
        (
            f"app read pool ({planner.READ_POOL_FIELD} {size} on {app.pods} pods)",
            size,
            app.pods,
        )
    ]
    b = read.budget
    pooler = b.load_pool
    if pooler is not None:
        each = b.default_pool_size - b.undeclared_per_pod
        texts.append(f"read pooler {_pool_text(pooler, size=each, load=reads)}")
        room = b.available // b.pooler_pods_at_peak - b.undeclared_per_pod
        limits.append(
            (
                f"replica {read.smallest.name} (max_connections {b.max_connections}: {room} "
                "per read-pooler pod)",
                room,
                pooler.pods,
            )
        )
    return [("read pool", "; ".join(texts))], load_sizing.headroom(load=reads, limits=limits)


def _memory_limit(check: queue_memory.InstanceCheck) -> load_sizing.Limit:
    """How far the jobs on a queue instance may grow before its maxmemory is full."""
    factor = check.limit_factor()
    return load_sizing.Limit(
        what=f"Redis {check.name} memory (spec.cache.instances[{check.index}].memory "
        f"{check.memory}: maxmemory {queue_memory.size_text(check.maxmemory_bytes)})",
        rate=factor * check.jobs_per_second,
        factor=factor,
        unit="jobs/s",
    )


def _redis_text(plan: planner.Plan) -> str:
    """Each queue instance whose queues declare their jobs' bytes: what they hold at
    peak against its maxmemory. The others: not estimated, since nothing declares what
    the app keeps there, with the maxmemory each has and its policy when full (a cache
    evicts, a queue's and counters' noeviction refuses writes)."""
    checked = {check.name: check.text() for check in plan.queue_memory}
    others = [
        f"{r.name} ({r.use}: maxmemory {r.maxmemory_text}, {r.eviction_policy} when full)"
        for r in plan.redis
        if r.name not in checked
    ]
    parts = list(checked.values())
    if others:
        parts.append("not declared (no spec.queues[].load.redis on it): " + ", ".join(others))
    return "; ".join(parts)


def _pool_text(pool: load_sizing.PoolCheck, *, size: int, load: load_sizing.Load) -> str:
    busy = f"{pool.busy_per_pod:.3g} busy on each of {pool.pods} {pool.what}s"
    if size <= pool.busy_per_pod:
        return f"{size} per {pool.what}, {busy}: the queue grows without bound"
    waiting = queueing.erlang_c(servers=size, offered_load=pool.busy_per_pod)
    wait = queueing.mean_wait_seconds(
        servers=size, offered_load=pool.busy_per_pod, seconds_per_request=load.mean_seconds
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
