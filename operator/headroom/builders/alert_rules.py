"""Prometheus alerting rules from the plan, and how they reach Prometheus.

Pure. :func:`rule_groups` is the rule file (``groups:``) promtool checks and
Debian's Prometheus loads in the conformance tests; :func:`build` delivers it:
with prometheus-operator a ``PrometheusRule`` plus a ``ServiceMonitor`` per
exporter Service and a ``PodMonitor`` for the app, labelled with what the
installed Prometheus selects; without it a ConfigMap holding the rule file.

Every expression is filtered to the profile's own pods (namespace and pod-name
patterns of the objects Headroom names), and every alert carries ``namespace``,
``profile`` and ``component`` labels, so the alerts of hundreds of profiles stay
apart. The thresholds are numbers from the plan, repeated in the annotations
with a runbook line saying what to change in the profile.

Metric names are those of the exporters the pods run: pgbouncer_exporter
(v0.10 to v0.12 share every name used here but the SHOW STATS counters, which v0.11
renamed to pgbouncer_stats_totals_*: the baseline rule matches both), redis_exporter v1.62,
postgres_exporter v0.17 (its names are unchanged through v0.20), CloudNativePG's
own exporter (its default queries: cnpg_backends_*, cnpg_pg_replication_lag,
cnpg_pg_stat_database_*, cnpg_collector_up), cAdvisor through the kubelet and
kube-state-metrics.
"""

from __future__ import annotations

from typing import Any

from headroom import yamlfmt
from headroom.api import v1alpha1
from headroom.builders import common, pgbouncer, postgres_metrics, redis
from headroom.planning import database_metrics, monitoring, planner

RATE_WINDOW = "5m"
# The profile's own baseline: long enough to span a day's traffic pattern, so a
# deviation is measured against what this app usually does, not a fixed number.
BASELINE_WINDOW = "1d"
SCRAPE_INTERVAL = "30s"
# pod names: a Deployment's <name>-<template hash>-<suffix>, a StatefulSet's <name>-<ordinal>
_DEPLOYMENT_POD = "-[a-z0-9]+-[a-z0-9]+"
_STATEFUL_POD = "-[0-9]+"
Rule = dict[str, Any]


def literal(text: str) -> str:
    """User text inside a label or an annotation, which Prometheus expands as a
    Go template: a ``{{`` in it is printed, never parsed."""
    return text.replace("{{", '{{ "{{" }}')


def _regex(name: str) -> str:
    return name.replace(".", "\\\\.")  # a Deployment name may carry dots


def _selector(**labels: str) -> str:
    """A PromQL label matcher list; values are validated names (no quotes)."""
    parts = []
    for key, value in labels.items():
        op = "=~" if key == "pod" else "="
        parts.append(f'{key}{op}"{value}"')
    return "{" + ", ".join(parts) + "}"


def _pool_pods(plan: planner.Plan, role: str) -> str:
    name = plan.names.pooler if role == "rw" else plan.names.read_pooler
    return _regex(name) + _DEPLOYMENT_POD


def _redis_pods(plan: planner.Plan, instance: str) -> str:
    return _regex(plan.names.redis(instance)) + _STATEFUL_POD


def app_pods(plan: planner.Plan) -> str:
    return _regex(plan.app.deployment) + _DEPLOYMENT_POD


def server_pods(plan: planner.Plan, server: str) -> str:
    """The pods whose metrics are the database server ``server``'s: its
    exporter's, or with CloudNativePG's metrics every pod of the Cluster."""
    limits = plan.alerts.database if plan.alerts else None
    if limits is not None and limits.source == database_metrics.CNPG:
        assert limits.cnpg_cluster is not None
        return _regex(limits.cnpg_cluster) + _STATEFUL_POD
    return _regex(plan.names.pg_metrics(server)) + _DEPLOYMENT_POD


def server_selector(plan: planner.Plan, server: str, **labels: str) -> str:
    """The series of one database server (see :func:`server_pods`)."""
    return _selector(namespace=plan.namespace, pod=server_pods(plan, server), **labels)


def every_server_selector(plan: planner.Plan, **labels: str) -> str:
    """The series of every database server of the profile."""
    assert plan.alerts is not None and plan.alerts.database is not None
    pods = "|".join(server_pods(plan, s.name) for s in plan.alerts.database.servers)
    return _selector(namespace=plan.namespace, pod=pods, **labels)


def pooler_selector(plan: planner.Plan, pool: monitoring.PoolLimits) -> str:
    """The series of one pooler Deployment's exporters for the app's database."""
    return _selector(
        namespace=plan.namespace, pod=_pool_pods(plan, pool.role), database=pool.database
    )


def redis_selector(plan: planner.Plan, instance: str, *, key: str | None = None) -> str:
    """The series of one Redis instance's exporters (the sentinels have none)."""
    labels = {"namespace": plan.namespace, "pod": _redis_pods(plan, instance)}
    if key is not None:
        labels["key"] = key
    return _selector(**labels)


def worker_hpa(plan: planner.Plan, queue: monitoring.QueueLimits) -> str:
    """The HPA that scales the workers: Headroom's, or the one KEDA makes for its ScaledObject."""
    base = plan.names.worker(queue.name)
    return f"keda-hpa-{base}" if queue.scaler == "keda" else base


def query_time_above_baseline(selector: str, pool: monitoring.PoolLimits) -> str:
    """Database time per query through one pooler (PgBouncer's SHOW STATS
    total_query_time / total_query_count, summed over its pods) over the rate
    window, above ``factor`` x the same ratio over the baseline window and above the
    floor. Without queries the ratio is NaN and compares false: no alert."""

    def counter(name: str) -> str:
        # v0.11 of the exporter renamed pgbouncer_stats_* to pgbouncer_stats_totals_*;
        # the images Headroom accepts span both
        return f'{{__name__=~"pgbouncer_stats_(totals_)?{name}", {selector[1:]}'

    def per_query(window: str) -> str:
        return (
            f"sum by (namespace) (rate({counter('queries_duration_seconds_total')}[{window}]))"
            f" / sum by (namespace) (rate({counter('queries_pooled_total')}[{window}]))"
        )

    recent = per_query(RATE_WINDOW)
    return (
        # repr: the model's exact numbers (a factor of 1.0000001 must not print as 1)
        f"({recent}) > {pool.query_time_baseline_factor!r} * ({per_query(BASELINE_WINDOW)})"
        f" and ({recent}) > {pool.query_time_floor_seconds!r}"
    )


class _Rules:
    """Collects the rules of one group with the labels every alert shares."""

    def __init__(self, plan: planner.Plan, component: str, severity: str, wait: str) -> None:
        self.plan = plan
        self.component = component
        self.severity = severity
        self.wait = wait
        self.rules: list[Rule] = []

    def add(
        self,
        alert: str,
        expr: str,
        *,
        summary: str,
        description: str,
        runbook: str,
        severity: str | None = None,
        wait: str | None = None,
        **labels: str,
    ) -> None:
        assert self.plan.alerts is not None
        rule: Rule = {"alert": alert, "expr": expr}
        duration = self.wait if wait is None else wait
        if duration:
            rule["for"] = duration
        rule["labels"] = {
            "severity": severity or self.severity,
            "namespace": self.plan.namespace,
            "profile": self.plan.name,
            "component": self.component,
            **labels,
            **{key: literal(value) for key, value in self.plan.alerts.settings.labels.items()},
        }
        rule["annotations"] = {
            "summary": summary,
            "description": description,
            "runbook": runbook,
        }
        self.rules.append(rule)


def _pooler_rules(plan: planner.Plan, alerts: monitoring.AlertsPlan) -> list[Rule]:
    group = alerts.settings.pooler
    out = _Rules(plan, "pooler", group.severity, group.for_)
    ns = plan.namespace
    for pool in alerts.pools:
        if not pool.enabled:
            continue
        pods = _pool_pods(plan, pool.role)
        where = "write" if pool.role == "rw" else "read"
        sel = pooler_selector(plan, pool)
        current = f"max by (namespace, pod) (pgbouncer_databases_current_connections{sel})"
        limit = pool.max_db_connections
        size = (
            "raise the primary's max_connections and spec.database.maxConnections "
            "(the plan then gives each pooler pod more)"
            if pool.role == "rw"
            else "add read replicas or raise their max_connections (the read "
            "budget is planned against the smallest)"
        ) + ", or shorten the transactions that hold server connections"
        out.add(
            "HeadroomPoolerConnectionsHigh",
            f"{current} >= {pool.warning}",
            summary=f"{where} pooler pod {{{{ $labels.pod }}}} uses "
            f"{pool.warning_percent}% of its server connections",
            description=f"{{{{ $value }}}} server connections of max_db_connections {limit} "
            f"on {{{{ $labels.pod }}}} (warning at {pool.warning}); at {limit} clients "
            "queue for a server connection.",
            runbook=f"Load is near the planned pool: {size}.",
            pool=pool.role,
        )
        out.add(
            "HeadroomPoolerConnectionsCritical",
            f"{current} >= {pool.critical}",
            summary=f"{where} pooler pod {{{{ $labels.pod }}}} is at "
            f"{pool.critical_percent}% of its server connections",
            description=f"{{{{ $value }}}} server connections of max_db_connections {limit} "
            f"on {{{{ $labels.pod }}}} (critical at {pool.critical}).",
            runbook=f"The pool is about to be exhausted: {size}.",
            severity="critical",
            pool=pool.role,
        )
        waiting = sel
        out.add(
            "HeadroomPoolerClientsWaiting",
            f"max by (namespace, pod) (pgbouncer_pools_client_waiting_connections{waiting}) > 0",
            summary=f"clients wait for a server connection on {where} pooler pod "
            "{{ $labels.pod }}",
            description=f"{{{{ $value }}}} clients waiting; every one of the pod's "
            f"max_db_connections {limit} server connections is busy.",
            runbook=f"Queries hold connections longer than the load allows: {size}; or "
            "find the slow queries (seed 004: over 1 s).",
            pool=pool.role,
        )
        max_wait = pool.max_wait_seconds
        out.add(
            "HeadroomPoolerMaxWaitHigh",
            f"max by (namespace, pod) (pgbouncer_pools_client_maxwait_seconds{waiting}) "
            f"> {max_wait:g}",
            summary=f"a client waited over {max_wait:g} s for a server "
            f"connection on {where} pooler pod {{{{ $labels.pod }}}}",
            description="The oldest waiting client has waited {{ $value }} s (threshold "
            f"{max_wait:g} s, spec.alerts.pooler.maxWaitSeconds); PgBouncer "
            "drops it after query_wait_timeout.",
            runbook=f"Clients time out soon: {size}.",
            severity="critical",
            pool=pool.role,
        )
        out.add(
            "HeadroomPoolerQueryTimeAboveBaseline",
            query_time_above_baseline(sel, pool),
            summary=f"queries through the {where} pooler take "
            f"{pool.query_time_baseline_factor:g}x their usual database time",
            description="{{ $value | humanizeDuration }} of database time per query over "
            f"{RATE_WINDOW}, above {pool.query_time_baseline_factor:g}x the average of "
            f"the last {BASELINE_WINDOW} (spec.alerts.pooler.queryTimeBaselineFactor) and "
            f"above {pool.query_time_floor_seconds:g} s (queryTimeFloorSeconds).",
            runbook="The database got slower for this app, before the pool runs out: look "
            "for a new slow query or missing index (pg_stat_statements), locks, or load "
            f"from elsewhere on the database; slower queries hold the pool's {limit} server "
            "connections longer, so clients start waiting next.",
            pool=pool.role,
        )
        pod_sel = _selector(namespace=ns, pod=pods)
        out.add(
            "HeadroomPoolerDown",
            f"max by (namespace, pod) (pgbouncer_up{pod_sel}) == 0 or "
            f"max by (namespace, pod) (up{pod_sel}) == 0",
            summary=f"{where} pooler pod {{{{ $labels.pod }}}} does not answer its exporter",
            description="pgbouncer_exporter cannot reach PgBouncer (pgbouncer_up 0), or "
            "Prometheus cannot scrape the exporter (up 0).",
            runbook="kubectl describe pod / logs of the pod (containers pgbouncer and "
            "exporter); the profile's PoolerReady condition says what Headroom sees.",
            severity="critical",
            pool=pool.role,
        )
    return out.rules


def _database_rules(plan: planner.Plan, alerts: monitoring.AlertsPlan) -> list[Rule]:
    group = alerts.settings.database
    out = _Rules(plan, "database", group.severity, group.for_)
    write = [p for p in alerts.pools if p.role == "rw"]
    if write:
        _pooled_primary_rules(out, plan, alerts, write[0])
    if alerts.database is not None:
        _server_rules(out, plan, alerts.database)
    replicas = alerts.read_replicas
    if replicas is not None:
        # The operator measures the replicas' lag too, and exports its verdict
        # with every condition (headroom_profile_condition).
        sel = _selector(
            namespace=plan.namespace, profile=plan.name, condition="ReadReplicasInPool"
        )[:-1]
        fallback = (
            "reads go to the primary (primaryFallbackConnections)"
            if replicas.when_all_lagging == "primary"
            else "the read endpoint refuses new connections"
        )
        out.add(
            "HeadroomReadReplicaLagging",
            f'max by (namespace, profile) (headroom_profile_condition{sel}, status="False"}}) == 1',
            summary="a read replica lags more than "
            f"maxLagSeconds {replicas.max_lag_seconds} s and is out of the read pool",
            description="The operator measured a replica further behind the primary than "
            f"spec.database.readReplicas.maxLagSeconds {replicas.max_lag_seconds}; the "
            f"read pool goes on with the others, and when every replica is out {fallback}. "
            "status.readReplicas[] has each one's lag.",
            runbook="Look at the replica's replay (disk, CPU, long queries on it); the "
            "ReadReplicasInPool condition names it. Raise maxLagSeconds only if the app "
            "can read that stale.",
        )
    return out.rules


def _pooled_primary_rules(
    out: _Rules, plan: planner.Plan, alerts: monitoring.AlertsPlan, write: monitoring.PoolLimits
) -> None:
    """What the write poolers hold against the primary's budget (``available``)."""
    group = alerts.settings.database
    primary = alerts.primary
    sel = pooler_selector(plan, write)
    held = f"sum by (namespace) (pgbouncer_databases_current_connections{sel})"
    limits = (
        f"max_connections {plan.budget.max_connections} - reserved {plan.budget.reserved}"
        + (" - other profiles' share" if plan.budget.shared else "")
        + f" = {primary.available}"
    )
    runbook = (
        "The poolers hold most of what the primary has for them: raise the primary's "
        "max_connections (and spec.database.maxConnections), or lower "
        "spec.app.replicas.max / poolSizePerPod; `kubectl get sp` shows the budget."
    )
    out.add(
        "HeadroomPrimaryConnectionsHigh",
        f"{held} >= {primary.warning}",
        summary="the poolers hold "
        f"{group.connections_warning_percent}% of the primary's connections",
        description=f"{{{{ $value }}}} server connections over all pooler pods; {limits} "
        f"(warning at {primary.warning}, planned at most {primary.planned}).",
        runbook=runbook,
    )
    out.add(
        "HeadroomPrimaryConnectionsCritical",
        f"{held} >= {primary.critical}",
        summary="the poolers hold "
        f"{group.connections_critical_percent}% of the primary's connections",
        description=f"{{{{ $value }}}} server connections over all pooler pods; {limits} "
        f"(critical at {primary.critical}).",
        runbook=runbook,
        severity="critical",
    )


# The series of the server's own metrics, by source: connections (every
# session, whatever its database), the longest running transaction of an active
# query of the app's database, replication lag, whether the exporter reads the
# server, transactions committed and rolled back.
_METRICS = {
    database_metrics.EXPORTER: {
        "connections": "pg_stat_database_numbackends",
        "active": "pg_stat_activity_max_tx_duration",
        "lag": "pg_replication_lag_seconds",
        "up": "pg_up",
        "commits": "pg_stat_database_xact_commit",
        "rollbacks": "pg_stat_database_xact_rollback",
        "by_state": "pg_stat_activity_count",
        "hits": "pg_stat_database_blks_hit",
        "reads": "pg_stat_database_blks_read",
    },
    database_metrics.CNPG: {
        "connections": "cnpg_backends_total",
        "active": "cnpg_backends_max_tx_duration_seconds",
        "lag": "cnpg_pg_replication_lag",
        "up": "cnpg_collector_up",
        "commits": "cnpg_pg_stat_database_xact_commit",
        "rollbacks": "cnpg_pg_stat_database_xact_rollback",
        "by_state": "cnpg_backends_total",
        "hits": "cnpg_pg_stat_database_blks_hit",
        "reads": "cnpg_pg_stat_database_blks_read",
    },
}


def server_metric(limits: monitoring.DatabaseLimits, what: str) -> str:
    return _METRICS[limits.source][what]


def _server_label(limits: monitoring.DatabaseLimits, server: monitoring.ServerLimits) -> str:
    """The ``server`` label: the primary, a replica's name, or the CNPG Cluster."""
    if limits.source == database_metrics.CNPG and limits.cnpg_cluster is not None:
        return limits.cnpg_cluster
    return server.name


def _server_rules(out: _Rules, plan: planner.Plan, limits: monitoring.DatabaseLimits) -> None:
    """The servers' own connections, slow queries and statements, replication
    lag, the exporter reaching each, and the query rate of the app's database."""
    group = plan.alerts.settings.database if plan.alerts else None
    assert group is not None
    cnpg = limits.source == database_metrics.CNPG
    source = "CloudNativePG's metrics" if cnpg else "postgres_exporter"
    for server in limits.servers:
        label = _server_label(limits, server)
        sel = server_selector(plan, server.name)
        where = (
            f"the pods of CloudNativePG Cluster {limits.cnpg_cluster}"
            if cnpg
            else "the primary"
            if server.primary
            else f"replica {server.name}"
        )
        held = f"sum by (namespace, pod) ({server_metric(limits, 'connections')}{sel})"
        usable = (
            f"max_connections {server.max_connections} - superuser_reserved_connections "
            f"{server.max_connections - server.usable} = {server.usable}"
        )
        by = {
            "warning": "connectionsWarningCount"
            if group.connections_warning_count
            else f"{group.connections_warning_percent}%",
            "critical": "connectionsCriticalCount"
            if group.connections_critical_count
            else f"{group.connections_critical_percent}%",
        }
        direct = (
            f" The poolers may hold {plan.primary_connections - plan.exporter_connections} of "
            "them; the rest are direct sessions (migrations, consoles, cron jobs, other apps)."
            if server.primary
            else ""
        )
        runbook = (
            "Find who holds them (pg_stat_activity by usename, application_name, state; the "
            "dashboard's connections panel): direct sessions belong behind the pooler "
            "(DATABASE_URL_POOLED); else raise max_connections and spec.database.maxConnections."
        )
        out.add(
            "HeadroomDatabaseConnectionsHigh",
            f"{held} >= {server.warning}",
            summary=f"{{{{ $value }}}} connections on {where}: warning at {server.warning}",
            description=f"The server's own count ({source}) of every session: {usable} for "
            f"non-superusers; warning at {server.warning} ({by['warning']}).{direct}",
            runbook=runbook,
            server=label,
        )
        out.add(
            "HeadroomDatabaseConnectionsCritical",
            f"{held} >= {server.critical}",
            summary=f"{{{{ $value }}}} connections on {where}: critical at {server.critical}",
            description=f"The server's own count ({source}); {usable}: at {server.usable} new "
            f"sessions get 'too many clients'. Critical at {server.critical} "
            f"({by['critical']}).{direct}",
            runbook=runbook,
            severity="critical",
            server=label,
        )
        active = {"datname": limits.database, "state": "active"}
        if not cnpg:
            active["backend_type"] = "client backend"
        slow = limits.slow_query_seconds
        out.add(
            "HeadroomQuerySlow",
            f"max by (namespace, pod) ({server_metric(limits, 'active')}"
            f"{server_selector(plan, server.name, **active)}) > {slow:g}",
            summary=f"a query on {where} has been running for more than {slow:g} s",
            description="The oldest transaction of an active query in database "
            f"{limits.database} is {{{{ $value | humanizeDuration }}}} old (threshold "
            f"{slow:g} s, spec.alerts.database.slowQuerySeconds; seed 004: slow query > 1 s).",
            runbook="SELECT pid, now() - xact_start, query FROM pg_stat_activity WHERE state = "
            "'active' ORDER BY 2 DESC; then EXPLAIN ANALYZE it: a missing index, an N+1 "
            "loop, an unbounded list.",
            wait="",  # the threshold is a duration already
            server=label,
        )
        if limits.statements:
            seconds = server_selector(plan, server.name, datname=limits.database)
            out.add(
                "HeadroomStatementsSlow",
                f"max by (namespace, pod, queryid, user) "
                f"(rate(pg_stat_statements_seconds_total{seconds}[{RATE_WINDOW}]) / "
                f"rate(pg_stat_statements_calls_total{seconds}[{RATE_WINDOW}])) > {slow:g}",
                summary=f"statement {{{{ $labels.queryid }}}} on {where} takes more than "
                f"{slow:g} s on average",
                description="Its mean execution time over the last 5 minutes is "
                "{{ $value | humanizeDuration }} (pg_stat_statements; threshold "
                f"{slow:g} s, spec.alerts.database.slowQuerySeconds).",
                runbook="SELECT query, calls, mean_exec_time FROM pg_stat_statements WHERE "
                "queryid = <queryid>; EXPLAIN ANALYZE it.",
                server=label,
            )
        lag = limits.replica_lag_seconds
        if lag is not None and (cnpg or not server.primary):
            out.add(
                "HeadroomReplicaLagHigh",
                f"max by (namespace, pod) ({server_metric(limits, 'lag')}{sel}) > {lag:g}",
                summary=f"{where} replays {{{{ $value | humanizeDuration }}}} behind the primary",
                description=f"The replica's own replay lag ({source}) is above {lag:g} s "
                "(spec.alerts.database.replicaLagSeconds, else readReplicas.maxLagSeconds).",
                runbook="Look at the replica's disk, CPU and long queries (they hold replay "
                "back); the read pool takes a replica out past maxLagSeconds.",
                server=label,
            )
        up = server_metric(limits, "up")
        out.add(
            "HeadroomDatabaseDown",
            f"max by (namespace, pod) ({up}{sel}) == 0 or max by (namespace, pod) (up{sel}) == 0",
            summary=f"{where} does not answer its exporter",
            description=f"{source} cannot reach the server ({up} 0), or Prometheus cannot "
            "scrape it (up 0).",
            runbook="Is the server up and reachable from the profile's namespace? kubectl "
            "logs of the exporter pod name the error (login, TLS, network).",
            severity="critical",
            server=label,
        )
    rate_limit = limits.query_rate_per_second
    if rate_limit is not None:
        sel = every_server_selector(plan, datname=limits.database)
        commits, rollbacks = server_metric(limits, "commits"), server_metric(limits, "rollbacks")
        out.add(
            "HeadroomDatabaseQueryRateHigh",
            f"sum by (namespace) (rate({commits}{sel}[{RATE_WINDOW}])) + "
            f"sum by (namespace) (rate({rollbacks}{sel}[{RATE_WINDOW}])) > {rate_limit:g}",
            summary=f"database {limits.database} runs more than {rate_limit:g} queries a second",
            description="{{ $value | humanize }} transactions a second over every server "
            "(each statement outside a transaction is one; threshold "
            f"{rate_limit:g}, spec.alerts.database.queryRatePerSecond; seed 000: < 100/s at "
            "1,000 users).",
            runbook="Look for N+1 loops and lookups a cache could answer (seed 000: 7 queries "
            "a page where 2 do); spec.cache holds what is read often.",
        )


# What evicting means on an instance that must never evict, by use.
_NEVER_EVICTS = {
    "queue": ("HeadroomQueueRedisEvicting", "jobs are lost"),
    "counters": ("HeadroomCountersRedisEvicting", "rate limits and quotas reset"),
}


def _cache_rules(plan: planner.Plan, alerts: monitoring.AlertsPlan) -> list[Rule]:
    group = alerts.settings.cache
    out = _Rules(plan, "cache", group.severity, group.for_)
    instances = [inst for inst in alerts.redis if inst.enabled]
    for inst in instances:
        where = f"spec.cache.instances {inst.name}"
        sel = redis_selector(plan, inst.name)
        full = {
            "queue": "a queue instance refuses writes when full (noeviction).",
            "counters": "a counters instance refuses increments when full (noeviction).",
        }
        out.add(
            "HeadroomRedisMemoryHigh",
            f"max by (namespace, pod) (redis_memory_used_bytes{sel}) >= "
            f"{inst.memory_warning_bytes}",
            summary=f"Redis {inst.name} uses {inst.memory_percent}% of maxmemory",
            description=f"{{{{ $value | humanize1024 }}}}B used of maxmemory "
            f"{inst.maxmemory_bytes} bytes on {{{{ $labels.pod }}}} (warning at "
            f"{inst.memory_warning_bytes}); " + full.get(inst.use, "then it evicts keys."),
            runbook=f"Raise {where} memory (maxmemory is 75% of it).",
            redis=inst.name,
        )
        evicted = f"sum by (namespace) (rate(redis_evicted_keys_total{sel}[{RATE_WINDOW}])) > 0"
        if inst.use in _NEVER_EVICTS:
            name, lost = _NEVER_EVICTS[inst.use]
            out.add(
                name,
                evicted,
                summary=f"Redis {inst.name} (use: {inst.use}) evicts keys: {lost}",
                description="{{ $value }} keys evicted per second on an instance that must "
                "never evict (its policy is noeviction unless changed outside Headroom).",
                runbook=f"Check maxmemory-policy on the pods; raise {where} memory.",
                severity="critical",
                wait="",
                redis=inst.name,
            )
            continue
        if inst.evictions:
            out.add(
                "HeadroomRedisEvicting",
                evicted,
                summary=f"Redis {inst.name} evicts keys",
                description=f"{{{{ $value }}}} keys evicted per second: the cache is full at "
                f"maxmemory {inst.maxmemory_bytes} bytes.",
                runbook=f"Raise {where} memory, or give keys shorter TTLs; a cache meant "
                f"to run full turns this off (spec.alerts.cache.instances.{inst.name}"
                ".evictions).",
                redis=inst.name,
            )
        hits = f"rate(redis_keyspace_hits_total{sel}[{RATE_WINDOW}])"
        misses = f"rate(redis_keyspace_misses_total{sel}[{RATE_WINDOW}])"
        out.add(
            "HeadroomRedisHitRateLow",
            f"sum by (namespace) ({hits}) / sum by (namespace) ({hits} + {misses}) "
            f"< {inst.hit_rate_min:g}",
            summary=f"Redis {inst.name} hit rate is below {inst.hit_rate_min:.0%}",
            description=f"{{{{ $value | humanizePercentage }}}} of lookups hit (target "
            f"> {inst.hit_rate_min:.0%}, seed 000).",
            runbook=f"Keys expire or are evicted before they are read again: raise {where} "
            "memory, lengthen TTLs, or cache what is read often.",
            redis=inst.name,
        )
    for inst in instances:
        sel = redis_selector(plan, inst.name)
        out.add(
            "HeadroomRedisDown",
            f"max by (namespace, pod) (redis_up{sel}) == 0 or "
            f"max by (namespace, pod) (up{sel}) == 0",
            summary=f"Redis {inst.name} pod {{{{ $labels.pod }}}} does not answer",
            description="redis_exporter cannot reach Redis (redis_up 0), or Prometheus "
            "cannot scrape the exporter (up 0).",
            runbook="kubectl describe pod / logs (containers redis and exporter); the "
            "profile's CacheReady condition says what Headroom sees.",
            severity="critical",
            redis=inst.name,
        )
    return out.rules


def _hpa_at_max(hpa: str, namespace: str) -> str:
    sel = _selector(namespace=namespace, horizontalpodautoscaler=hpa)
    return (
        f"max by (namespace, horizontalpodautoscaler) "
        f"(kube_horizontalpodautoscaler_status_current_replicas{sel}) >= "
        f"max by (namespace, horizontalpodautoscaler) "
        f"(kube_horizontalpodautoscaler_spec_max_replicas{sel})"
    )


def _queue_rules(plan: planner.Plan, alerts: monitoring.AlertsPlan) -> list[Rule]:
    group = alerts.settings.queues
    out = _Rules(plan, "queue", group.severity, group.for_)
    for index, queue in enumerate(alerts.queues):
        sel = redis_selector(plan, queue.redis, key=queue.list_name)
        out.add(
            "HeadroomQueueBacklogHigh",
            f"max by (namespace, key) (redis_key_size{sel}) > {queue.drain_ceiling}",
            summary=f"queue {queue.name} holds more than its workers' ceiling drains",
            description=f"{{{{ $value }}}} jobs in {literal(queue.list_name)}; replicas.max "
            f"{queue.max_replicas} x backlogPerWorker {queue.backlog_per_worker} = "
            f"{queue.drain_ceiling}.",
            runbook=f"Raise spec.queues[{index}].replicas.max (mind databasePoolSize in "
            "the budget), or make the jobs faster.",
            queue=queue.name,
        )
        out.add(
            "HeadroomWorkersAtMax",
            _hpa_at_max(worker_hpa(plan, queue), plan.namespace),
            summary=f"the workers of queue {queue.name} run at replicas.max {queue.max_replicas}",
            description=f"The autoscaler cannot add workers beyond {queue.max_replicas} "
            f"(scaled by {queue.scaler.upper()}).",
            runbook=f"If the backlog grows too, raise spec.queues[{index}].replicas.max.",
            queue=queue.name,
        )
    return out.rules


def _app_rules(plan: planner.Plan, alerts: monitoring.AlertsPlan) -> list[Rule]:
    group = alerts.settings.app
    out = _Rules(plan, "app", group.severity, group.for_)
    ns = plan.namespace
    pods = app_pods(plan)
    deployment = plan.app.deployment
    if alerts.app.autoscaled:
        out.add(
            "HeadroomAppAtMaxReplicas",
            _hpa_at_max(plan.names.app_autoscaler, ns),
            summary=f"{deployment} runs at its replica ceiling {alerts.app.max_replicas}",
            description=f"The HPA cannot add pods beyond {alerts.app.max_replicas}; the "
            "connection budget is sized for exactly that many.",
            runbook="Raise spec.app.replicas.max (or capacity.targetConcurrentUsers); the "
            "plan must still fit the primary's connections.",
        )
    metrics = group.served_metrics
    if metrics is not None:
        sel = _selector(namespace=ns, pod=pods)
        errors = _selector(namespace=ns, pod=pods, **{metrics.status_label: "5.."}).replace(
            f'{metrics.status_label}="5.."', f'{metrics.status_label}=~"5.."'
        )
        rate = f"[{RATE_WINDOW}]"
        out.add(
            "HeadroomAppLatencyHigh",
            f"histogram_quantile(0.95, sum by (namespace, le) "
            f"(rate({metrics.histogram}_bucket{sel}{rate}))) > {group.p95_latency_seconds:g}",
            summary=f"{deployment} p95 latency is above {group.p95_latency_seconds:g} s",
            description="95th percentile request duration {{ $value | humanizeDuration }} "
            f"(target < {group.p95_latency_seconds:g} s, spec.alerts.app.p95LatencySeconds).",
            runbook="If clients wait on the pooler or CPU is high, scale out (replicas.max); "
            "else find the slow endpoints and queries.",
        )
        _route_rules(out, plan, metrics=metrics, pods=pods)
        out.add(
            "HeadroomAppErrorRatioHigh",
            f"sum by (namespace) (rate({metrics.histogram}_count{errors}{rate})) / "
            f"sum by (namespace) (rate({metrics.histogram}_count{sel}{rate})) "
            f"> {group.error_ratio:g}",
            summary=f"{deployment} answers more than {group.error_ratio:.2%} of requests with 5xx",
            description="{{ $value | humanizePercentage }} of requests fail (target < "
            f"{group.error_ratio:.2%}, seed 000).",
            runbook="Look at the app's logs; database errors such as 'too many connections' "
            "mean the pooler or the budget (the pooler alerts say which).",
        )
    container = _selector(namespace=ns, pod=pods)[:-1] + ', container!="", container!="POD"}'
    out.add(
        "HeadroomAppCPUHigh",
        f"sum by (namespace) (rate(container_cpu_usage_seconds_total{container}[{RATE_WINDOW}]))"
        f" / sum by (namespace) (kube_pod_container_resource_requests"
        f'{_selector(namespace=ns, pod=pods)[:-1]}, resource="cpu"}}) * 100 '
        f"> {group.cpu_percent}",
        summary=f"{deployment} uses more than {group.cpu_percent}% of its CPU requests",
        description='Average CPU {{ $value | printf "%.0f" }}% of the pods\' requests '
        f"(target < {group.cpu_percent}%, seed 000).",
        runbook="The HPA should be adding pods: check AppScalingActive and "
        "HeadroomAppAtMaxReplicas; or raise the pods' CPU requests.",
    )
    out.add(
        "HeadroomAppMemoryHigh",
        f"sum by (namespace, pod) (container_memory_working_set_bytes{container}) > "
        f"{alerts.app.memory_bytes}",
        summary=f"a pod of {deployment} uses more than {group.memory}B of memory",
        description="{{ $labels.pod }} working set {{ $value | humanize }}B (target < "
        f"{group.memory}, seed 000: < 2 GB per server).",
        runbook="Find what grows (in-memory caches and rate limiters belong in Redis: "
        "spec.cache); or raise the pods' memory limit.",
    )
    return out.rules


# RE2's special characters among those a route may hold (v1alpha1.alerts.ROUTE).
_ROUTE_SPECIAL = frozenset(".()*+$[]{}")


def route_matcher(label: str, target: v1alpha1.RouteLatency) -> str:
    """The label matcher of a route target: the route exactly, or every route
    that starts with the prefix (its special characters escaped for RE2, the
    backslash doubled for the PromQL string)."""
    if target.route is not None:
        return f'{label}="{target.route}"'
    assert target.prefix is not None
    escaped = "".join(f"\\\\{c}" if c in _ROUTE_SPECIAL else c for c in target.prefix)
    return f'{label}=~"{escaped}.*"'


def _route_rules(
    out: _Rules, plan: planner.Plan, *, metrics: v1alpha1.AppMetrics, pods: str
) -> None:
    """A p95 per route (the histogram's route label), beside the app-wide one:
    one rule, each target's expression joined by ``or`` (a route two targets
    name is judged by the first)."""
    group = plan.alerts.settings.app if plan.alerts else None
    assert group is not None
    if not group.routes:
        return
    label = metrics.route_label
    parts = []
    targets = []
    for target in group.routes:
        sel = _selector(namespace=plan.namespace, pod=pods)[:-1]
        sel += f", {route_matcher(label, target)}}}"
        limit = target.p95_latency_seconds
        parts.append(
            f"histogram_quantile(0.95, sum by (namespace, {label}, le) "
            f"(rate({metrics.histogram}_bucket{sel}[{RATE_WINDOW}]))) > {limit:g}"
        )
        where = (
            literal(target.route)
            if target.route is not None
            else f"{literal(target.prefix or '')}*"
        )
        targets.append(f"{where} < {limit:g} s")
    out.add(
        "HeadroomRouteLatencyHigh",
        " or ".join(f"({part})" for part in parts) if len(parts) > 1 else parts[0],
        summary=f"{plan.app.deployment} {{{{ $labels.{label} }}}} p95 latency is above its target",
        description="95th percentile request duration {{ $value | humanizeDuration }} on "
        f"{{{{ $labels.{label} }}}} (targets: {'; '.join(targets)}; spec.alerts.app.routes).",
        runbook="Profile the route: its queries (HeadroomQuerySlow, the dashboard's "
        "statements), its calls out, what a cache could answer.",
    )


def rule_groups(plan: planner.Plan) -> list[Rule]:
    """The rule file's groups (empty when alerts are off)."""
    alerts = plan.alerts
    if alerts is None:
        return []
    settings = alerts.settings
    builders = (
        ("pooler", settings.pooler.enabled, _pooler_rules),
        ("database", settings.database.enabled, _database_rules),
        ("cache", settings.cache.enabled, _cache_rules),
        ("queues", settings.queues.enabled, _queue_rules),
        ("app", settings.app.enabled, _app_rules),
    )
    groups = []
    for name, enabled, make in builders:
        rules = make(plan, alerts) if enabled else []
        if rules:
            groups.append({"name": f"headroom.{plan.namespace}.{plan.name}.{name}", "rules": rules})
    return groups


def rule_file(plan: planner.Plan) -> str:
    """The rule file for a plain Prometheus (``rule_files:``)."""
    return yamlfmt.dump({"groups": rule_groups(plan)})


def _meta(plan: planner.Plan, name: str, extra: dict[str, str]) -> common.Obj:
    meta = common.metadata(plan, name=name, component=monitoring.COMPONENT, app_name="alerts")
    meta["labels"] = {**extra, **meta["labels"]}
    return meta


def _monitor(
    plan: planner.Plan,
    *,
    kind: str,
    name: str,
    selector: common.Obj,
    endpoint: common.Obj,
) -> common.Obj:
    labels = plan.facts.prometheus_selection.labels(kind)
    endpoints = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": kind,
        "metadata": _meta(plan, name, labels),
        "spec": {
            "selector": selector,
            "namespaceSelector": {"matchNames": [plan.namespace]},
            endpoints: [{**endpoint, "interval": SCRAPE_INTERVAL}],
        },
    }


def _monitors(plan: planner.Plan, *, app_pod_selector: common.Obj | None) -> list[common.Obj]:
    """A ServiceMonitor per pooler Service (its exporter, 9127), a PodMonitor per
    Redis instance (its exporter sidecar, 9121: in HA no Service fronts the Redis
    pods' metrics), per database server's exporter (9187) or for the CNPG
    Cluster's pods, and one for the app's pods."""
    assert plan.alerts is not None
    metrics_port = {"port": "metrics", "path": "/metrics"}
    found = []
    for pool in plan.alerts.pools:
        component = pgbouncer.COMPONENT if pool.role == "rw" else pgbouncer.READ_COMPONENT
        name = plan.names.pooler_service if pool.role == "rw" else plan.names.read_pooler_service
        selector = common.selector_labels(plan, component=component, name=pgbouncer.APP_NAME)
        found.append(
            _monitor(
                plan,
                kind="ServiceMonitor",
                name=name,
                selector={"matchLabels": selector},
                endpoint=metrics_port,
            )
        )
    for inst in plan.redis:
        found.append(
            _monitor(
                plan,
                kind="PodMonitor",
                name=plan.names.redis(inst.name),
                selector={"matchLabels": redis.pod_selector(plan, inst)},
                endpoint=metrics_port,
            )
        )
    found += _database_monitors(plan, endpoint=metrics_port)
    metrics = plan.alerts.settings.app.served_metrics
    if metrics is not None and app_pod_selector:
        found.append(
            _monitor(
                plan,
                kind="PodMonitor",
                name=plan.names.app_pod_monitor,
                selector=dict(app_pod_selector),
                endpoint={"portNumber": metrics.port, "path": metrics.path},
            )
        )
    return found


# CloudNativePG labels every pod of a Cluster with its name.
CNPG_CLUSTER_LABEL = "cnpg.io/cluster"


def _database_monitors(plan: planner.Plan, *, endpoint: common.Obj) -> list[common.Obj]:
    """A PodMonitor per exporter; with CloudNativePG's metrics one for the
    Cluster's pods (CNPG deprecates making its own: users are to write one)."""
    metrics = plan.database_metrics
    if metrics is None:
        return []
    if metrics.source == database_metrics.CNPG:
        assert metrics.cnpg_cluster is not None
        return [
            _monitor(
                plan,
                kind="PodMonitor",
                name=plan.names.pg_metrics(database_metrics.PRIMARY),
                selector={"matchLabels": {CNPG_CLUSTER_LABEL: metrics.cnpg_cluster}},
                endpoint=endpoint,
            )
        ]
    return [
        _monitor(
            plan,
            kind="PodMonitor",
            name=plan.names.pg_metrics(server.name),
            selector={"matchLabels": postgres_metrics.pod_selector(plan, server)},
            endpoint=endpoint,
        )
        for server in metrics.servers
    ]


def build(plan: planner.Plan, *, app_pod_selector: common.Obj | None) -> list[common.Obj]:
    """The rules and scrape targets, as prometheus-operator objects when it is
    installed (``plan.facts.prometheus_operator``), else a rule-file ConfigMap."""
    if plan.alerts is None:
        return []
    groups = rule_groups(plan)
    facts = plan.facts
    if facts.prometheus_operator:
        rule_labels = facts.prometheus_selection.labels("PrometheusRule")
        objects: list[common.Obj] = []
        if groups:
            objects.append(
                {
                    "apiVersion": "monitoring.coreos.com/v1",
                    "kind": "PrometheusRule",
                    "metadata": _meta(plan, plan.names.prometheus_rule, rule_labels),
                    "spec": {"groups": groups},
                }
            )
        return objects + _monitors(plan, app_pod_selector=app_pod_selector)
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(plan, plan.names.alert_rules, {}),
            "data": {plan.names.alert_rules_key: rule_file(plan)},
        }
    ]
