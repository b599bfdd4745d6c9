"""Real fires: Debian's Prometheus loads the rule file Headroom renders and scrapes the
real exporters (the versions the pods run, started as the rendered exporter
containers say) in front of the rendered PgBouncer and a real Postgres, and of a
rendered Redis cache and queue instances; real load breaches the plan's thresholds
and the alerts go ``firing`` in Prometheus' API, then resolve when the load stops
(evictions excepted: ``rate(...[5m])`` stays above 0 for the rules' 5-minute window).

The profile sets each group's ``for:`` short through its own ``spec.alerts``
fields (the rule text is never edited). The targets carry the ``namespace`` and
``pod`` labels a Kubernetes scrape would give the pods, named as Headroom names
them, since every rule filters on them. Waits have generous deadlines (a loaded
2-core machine); the times measured are printed, and asserted only against
those deadlines.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import prometheus_servers
import psycopg
import pytest
import redis_servers
import servers
from prometheus_servers import Exporter, Prometheus, Target

from headroom.api import v1alpha1
from headroom.builders import alert_rules, pgbouncer, postgres_metrics, redis
from headroom.planning import credentials, planner

pytestmark = pytest.mark.conformance

NAMESPACE = "shop"
PROFILE = "fire"
FOR_SECONDS = 3
SCRAPE = 1.0
# The pod names a Kubernetes scrape would label the targets with.
POOLER_POD = f"{PROFILE}-pooler-7c9d5b8f4-x2k4p"
QUEUE_LIST = "bull:emails:wait"
# Generous: Prometheus, pgbench and the servers share 2 loaded cores with other suites.
DEADLINE = 90.0
# Per transaction, each holds a server connection this long: with CLIENTS of them on
# the pool's few server connections most wait, for several seconds each.
HOLD_SECONDS = 1
CLIENTS = 30

StartExporter = Callable[..., Exporter]
StartPrometheus = Callable[..., Prometheus]


def pgbouncer_version(tools: servers.Tools) -> str:
    """The installed PgBouncer's version ("1.18.0"): the rendered ini must suit it."""
    found = re.search(r"\d+\.\d+(\.\d+)?", tools.versions()["pgbouncer"])
    assert found, tools.versions()
    return found.group(0)


def make_plan(database_port: int, version: str = "1.18.0") -> planner.Plan:
    """A profile whose primary is small for its app: 4 pods x 10 connections, and
    max_connections 20 leave each pooler pod 6 server connections for 45 clients.
    ``version``: PgBouncer's, named by the pooler image's tag (never pulled here)."""
    profile = v1alpha1.parse_profile(
        {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ScalingProfile",
            "metadata": {"name": PROFILE, "namespace": NAMESPACE, "uid": "alert-fire"},
            "spec": {
                "app": {
                    "deployment": "web",
                    "replicas": {"min": 1, "max": 4},
                    "poolSizePerPod": 10,
                },
                "database": {
                    "host": servers.HOST,
                    "port": database_port,
                    "name": "app",
                    "credentialsSecret": {"name": "db"},
                    "maxConnections": 20,
                    "superuserReservedConnections": 3,
                },
                "pooler": {
                    "instances": 1,
                    "poolMode": "transaction",
                    "image": f"registry.example/pgbouncer:{version}",
                },
                "cache": {
                    "instances": [
                        {"name": "cache", "use": "cache", "memory": "32Mi"},
                        {"name": "jobs", "use": "queue", "memory": "32Mi"},
                        {"name": "limits", "use": "counters", "memory": "32Mi"},
                    ]
                },
                "queues": [
                    {
                        "name": "emails",
                        "redis": "jobs",
                        "listName": QUEUE_LIST,
                        "image": "registry.example/worker:1.0",
                        "replicas": {"min": 0, "max": 2},
                        "backlogPerWorker": 5,
                        "databasePoolSize": 1,
                    }
                ],
                "alerts": {
                    group: {"for": f"{FOR_SECONDS}s"} for group in ("pooler", "cache", "queues")
                },
            },
        }
    )
    plan = planner.plan(profile)
    assert plan.ok, [str(p) for p in plan.problems]
    return plan


def _container(obj: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in obj["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def _rule(plan: planner.Plan, name: str, **labels: str) -> dict[str, Any]:
    (found,) = [
        r
        for g in alert_rules.rule_groups(plan)
        for r in g["rules"]
        if r.get("alert") == name and all(r["labels"].get(k) == v for k, v in labels.items())
    ]
    return found


def _bound(plan: planner.Plan, name: str, **labels: str) -> float:
    """What the issue promises: firing within the rule's ``for:`` plus two scrapes
    (and one evaluation); reported beside each measurement."""
    duration = _rule(plan, name, **labels).get("for", "0s")
    assert duration.endswith("s"), duration
    return float(duration[:-1]) + 2 * SCRAPE + SCRAPE


def _report(what: str, seconds: float, bound: float) -> None:
    print(f"{what}: {seconds:.1f} s (for + 2 scrapes + 1 evaluation = {bound:g} s)")


# --- the pooler -------------------------------------------------------------------


@pytest.fixture
def pooler(
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    start_exporter: StartExporter,
    exporters: prometheus_servers.Exporters,
) -> Iterator[tuple[planner.Plan, servers.PgBouncer, Exporter]]:
    database.wait_for_no_app_backends()
    plan = make_plan(database.port, pgbouncer_version(database.server.tools))
    stats_password = secrets.token_hex(16)
    creds = credentials.Credentials(
        username=database.user,
        password=database.password,
        stats_password=stats_password,
        revision="1",
    )
    bouncer = start_pgbouncer(servers.ini_for(plan), database.userlist(stats_password))
    objects = pgbouncer.build(plan, creds)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    rendered_secrets = {
        o["metadata"]["name"]: prometheus_servers.secret_values(o)
        for o in objects
        if o["kind"] == "Secret"
    }
    args, env = prometheus_servers.container_command(
        _container(deployment, "exporter"),
        secrets=rendered_secrets,
        moved={
            f"127.0.0.1:{planner.POOLER_PORT}": f"{servers.HOST}:{bouncer.port}",
        },
    )
    exporter = start_exporter(exporters.pgbouncer, args, env, name="pgbouncer_exporter")
    yield plan, bouncer, exporter


def _pool_value(exporter: Exporter, metric: str) -> float:
    return sum(
        value
        for labels, value in exporter.samples(metric)
        if labels.get("database") == "app" and labels.get("user") != "pgbouncer"
    )


def test_pooler_alerts_fire_under_real_load_and_resolve_after_it(
    pooler: tuple[planner.Plan, servers.PgBouncer, Exporter],
    database: servers.AppDatabase,
    start_prometheus: StartPrometheus,
    tmp_path: Path,
) -> None:
    plan, bouncer, exporter = pooler
    assert plan.alerts is not None
    (pool,) = plan.alerts.pools
    assert pool.max_db_connections < CLIENTS, "the load must outnumber the server connections"
    # the rendered exporter reads the rendered PgBouncer (stats user, admin console)
    assert exporter.samples("pgbouncer_up") == [({}, 1.0)]

    prometheus = start_prometheus(
        rules={"headroom.rules.yaml": alert_rules.rule_file(plan)},
        targets=[
            Target(
                "pgbouncer",
                exporter.address,
                {"namespace": NAMESPACE, "pod": POOLER_POD},
            )
        ],
        scrape_interval=SCRAPE,
        evaluation_interval=SCRAPE,
    )
    prometheus.wait_for_targets_up(timeout=DEADLINE)
    health = prometheus.rule_health()
    assert "HeadroomPoolerClientsWaiting" in health
    assert not [h for h in health.values() if h.startswith("err")], health
    # healthy: nothing pending or firing before the load
    idle = [a for a in prometheus.alerts() if a.labels.get("component") == "pooler"]
    assert idle == [], idle

    script = tmp_path / "hold.sql"
    script.write_text(f"BEGIN;\nSELECT pg_sleep({HOLD_SECONDS});\nEND;\n")
    load = servers.Load(database, port=bouncer.port, clients=CLIENTS, script=script)
    try:
        servers.wait_until(
            lambda: _pool_value(exporter, "pgbouncer_pools_client_waiting_connections") > 0,
            timeout=DEADLINE,
            what="clients waiting in PgBouncer",
            interval=0.2,
        )
        breached = time.monotonic()
        labels = {"namespace": NAMESPACE, "pod": POOLER_POD, "pool": "rw"}
        for name in (
            "HeadroomPoolerClientsWaiting",
            "HeadroomPoolerConnectionsHigh",
            "HeadroomPoolerConnectionsCritical",
            "HeadroomPoolerMaxWaitHigh",
        ):
            alert, _ = prometheus.wait_for_alert(name, timeout=DEADLINE, **labels)
            waited = time.monotonic() - breached
            _report(f"{name} firing after clients first waited", waited, _bound(plan, name))
            assert alert.labels["profile"] == PROFILE
        (waiting,) = prometheus.matching("HeadroomPoolerClientsWaiting", **labels)
        assert float(waiting.value) > 0
        (critical,) = prometheus.matching("HeadroomPoolerConnectionsCritical", **labels)
        assert float(critical.value) >= pool.critical
        assert str(pool.max_db_connections) in critical.annotations["description"]
        # the baseline rule reads these counters as v0.12 names them; a load
        # that has been the same since the start is its own baseline: no deviation
        for metric in (
            "pgbouncer_stats_totals_queries_duration_seconds_total",
            "pgbouncer_stats_totals_queries_pooled_total",
        ):
            counted = [v for found, v in exporter.samples(metric) if found.get("database") == "app"]
            assert counted and counted[0] > 0, (metric, counted)
        assert not prometheus.matching("HeadroomPoolerQueryTimeAboveBaseline")
    finally:
        stderr = load.stop()
    assert not load.slot_errors(), stderr[-2000:]

    # pgbench killed mid-transaction: PgBouncer drops those server connections too
    stopped = time.monotonic()
    for name in (
        "HeadroomPoolerClientsWaiting",
        "HeadroomPoolerMaxWaitHigh",
        "HeadroomPoolerConnectionsCritical",
        "HeadroomPoolerConnectionsHigh",
    ):
        prometheus.wait_for_no_alert(name, timeout=DEADLINE, **labels)
        print(f"{name} resolved {time.monotonic() - stopped:.1f} s after the load stopped")


def test_pooler_down_fires_when_pgbouncer_stops(
    pooler: tuple[planner.Plan, servers.PgBouncer, Exporter],
    start_prometheus: StartPrometheus,
) -> None:
    plan, bouncer, exporter = pooler
    prometheus = start_prometheus(
        rules={"headroom.rules.yaml": alert_rules.rule_file(plan)},
        targets=[
            Target("pgbouncer", exporter.address, {"namespace": NAMESPACE, "pod": POOLER_POD})
        ],
        scrape_interval=SCRAPE,
        evaluation_interval=SCRAPE,
    )
    prometheus.wait_for_targets_up(timeout=DEADLINE)
    assert not prometheus.matching("HeadroomPoolerDown")
    bouncer.halt()
    start = time.monotonic()
    servers.wait_until(
        lambda: exporter.samples("pgbouncer_up") == [({}, 0.0)],
        timeout=DEADLINE,
        what="pgbouncer_up 0",
        interval=0.2,
    )
    alert, _ = prometheus.wait_for_alert(
        "HeadroomPoolerDown", timeout=DEADLINE, namespace=NAMESPACE, pod=POOLER_POD
    )
    _report(
        "HeadroomPoolerDown firing after PgBouncer stopped",
        time.monotonic() - start,
        _bound(plan, "HeadroomPoolerDown"),
    )
    assert alert.labels["severity"] == "critical"


# --- Redis ------------------------------------------------------------------------


@pytest.fixture
def redis_instance(
    start_redis: Callable[..., redis_servers.RedisProcess],
    start_exporter: StartExporter,
    exporters: prometheus_servers.Exporters,
    database: servers.AppDatabase,
) -> Callable[[str], tuple[planner.Plan, redis_servers.RedisProcess, Exporter]]:
    """``redis_instance(name)``: the rendered redis.conf of instance ``name`` in
    redis-server, and the rendered exporter container in front of it."""

    def start(name: str) -> tuple[planner.Plan, redis_servers.RedisProcess, Exporter]:
        plan = make_plan(database.port)
        inst = plan.redis_named(name)
        password = secrets.token_hex(24)

        def conf(port: int, workdir: Path) -> str:
            return redis.render_conf(
                inst,
                bind=servers.HOST,
                port=port,
                data_dir=str(workdir),
                auth_file=str(workdir / "auth.conf"),
            )

        server = start_redis(
            conf, files={"auth.conf": redis.render_auth(password)}, password=password
        )
        objects = redis.build(
            plan, inst, password=password, app_pod_selector={"matchLabels": {"app": "web"}}
        )
        (statefulset,) = [
            o
            for o in objects
            if o["kind"] == "StatefulSet" and o["metadata"]["name"] == plan.names.redis(inst.name)
        ]
        args, env = prometheus_servers.container_command(
            _container(statefulset, "exporter"),
            secrets={plan.names.redis_auth(inst.name): {"password": password}},
            moved={f"127.0.0.1:{planner.REDIS_PORT}": f"{servers.HOST}:{server.port}"},
        )
        exporter = start_exporter(exporters.redis, args, env, name="redis_exporter")
        return plan, server, exporter

    return start


@pytest.fixture
def cache(
    redis_instance: Callable[[str], tuple[planner.Plan, redis_servers.RedisProcess, Exporter]],
) -> tuple[planner.Plan, redis_servers.RedisProcess, Exporter]:
    return redis_instance("cache")


def _redis_pod(instance: str) -> str:
    return f"{PROFILE}-redis-{instance}-0"


def _redis_prometheus(
    start_prometheus: StartPrometheus,
    plan: planner.Plan,
    exporter: Exporter,
    instance: str = "cache",
) -> Prometheus:
    target = Target(
        "redis", exporter.address, {"namespace": NAMESPACE, "pod": _redis_pod(instance)}
    )
    return _prometheus_over(start_prometheus, plan, [target])


def test_hit_rate_alert_fires_on_misses_and_resolves_on_hits(
    cache: tuple[planner.Plan, redis_servers.RedisProcess, Exporter],
    start_prometheus: StartPrometheus,
) -> None:
    plan, server, exporter = cache
    assert plan.alerts is not None
    target = plan.alerts.settings.cache.hit_rate_min
    assert exporter.samples("redis_up") == [({}, 1.0)]
    prometheus = _redis_prometheus(start_prometheus, plan, exporter)
    labels = {"namespace": NAMESPACE, "redis": "cache"}
    with server.client() as conn:
        conn.call("SET", "hot", "1")
        # below target: one hit for every four misses is a 20% hit rate
        for n in range(200):
            conn.pipeline([["GET", "hot"], *[["GET", f"cold:{n}:{m}"] for m in range(4)]])
        start = time.monotonic()
        alert, _ = prometheus.wait_for_alert("HeadroomRedisHitRateLow", timeout=DEADLINE, **labels)
        _report(
            "HeadroomRedisHitRateLow firing after the misses",
            time.monotonic() - start,
            _bound(plan, "HeadroomRedisHitRateLow"),
        )
        assert float(alert.value) < target
        # healthy again: enough hits that the window's ratio passes the target
        misses = 200 * 4
        hits_needed = int(misses * target / (1 - target)) * 2
        for _ in range(hits_needed // 100):
            conn.pipeline([["GET", "hot"]] * 100)
        waited = prometheus.wait_for_no_alert("HeadroomRedisHitRateLow", timeout=DEADLINE, **labels)
        print(f"HeadroomRedisHitRateLow resolved {waited:.1f} s after the hits")
    assert not prometheus.matching("HeadroomRedisEvicting")


def test_eviction_alert_fires_when_the_cache_fills_past_maxmemory(
    cache: tuple[planner.Plan, redis_servers.RedisProcess, Exporter],
    start_prometheus: StartPrometheus,
) -> None:
    plan, server, exporter = cache
    prometheus = _redis_prometheus(start_prometheus, plan, exporter)
    labels = {"namespace": NAMESPACE, "redis": "cache"}
    assert not prometheus.matching("HeadroomRedisEvicting")
    assert plan.alerts is not None
    (inst,) = [r for r in plan.alerts.redis if r.name == "cache"]
    value = b"x" * 10_240
    with server.client() as conn:
        assert conn.config_get("maxmemory-policy") == "allkeys-lru"
        written = 0
        while written * len(value) < 2 * inst.maxmemory_bytes:
            conn.pipeline([["SET", f"key:{written + n}", value] for n in range(100)])
            written += 100
        assert int(conn.info("stats")["evicted_keys"]) > 0
    start = time.monotonic()
    alert, _ = prometheus.wait_for_alert("HeadroomRedisEvicting", timeout=DEADLINE, **labels)
    _report(
        "HeadroomRedisEvicting firing after the fill",
        time.monotonic() - start,
        _bound(plan, "HeadroomRedisEvicting"),
    )
    assert float(alert.value) > 0
    memory, _ = prometheus.wait_for_alert("HeadroomRedisMemoryHigh", timeout=DEADLINE, **labels)
    assert str(inst.maxmemory_bytes) in memory.annotations["description"]


def test_redis_down_fires_when_redis_dies(
    cache: tuple[planner.Plan, redis_servers.RedisProcess, Exporter],
    start_prometheus: StartPrometheus,
) -> None:
    plan, server, exporter = cache
    prometheus = _redis_prometheus(start_prometheus, plan, exporter)
    labels = {"namespace": NAMESPACE, "redis": "cache", "pod": _redis_pod("cache")}
    assert not prometheus.matching("HeadroomRedisDown")
    server.kill()
    start = time.monotonic()
    alert, _ = prometheus.wait_for_alert("HeadroomRedisDown", timeout=DEADLINE, **labels)
    _report(
        "HeadroomRedisDown firing after kill -9 of Redis",
        time.monotonic() - start,
        _bound(plan, "HeadroomRedisDown", redis="cache"),
    )
    assert alert.labels["severity"] == "critical"
    assert exporter.samples("redis_up") == [({}, 0.0)]


def test_queue_backlog_alert_fires_above_the_workers_ceiling_and_resolves_when_drained(
    redis_instance: Callable[[str], tuple[planner.Plan, redis_servers.RedisProcess, Exporter]],
    start_prometheus: StartPrometheus,
) -> None:
    """The rendered exporter exports the queue's list length (redis_key_size, from
    the keys Headroom gives it), and the backlog alert compares it with replicas.max x
    backlogPerWorker."""
    plan, server, exporter = redis_instance("jobs")
    assert plan.alerts is not None
    (queue,) = plan.alerts.queues
    prometheus = _redis_prometheus(start_prometheus, plan, exporter, "jobs")
    labels = {"namespace": NAMESPACE, "queue": "emails", "key": QUEUE_LIST}
    with server.client() as conn:
        jobs = [f'{{"id":{n}}}' for n in range(queue.drain_ceiling)]
        conn.call("LPUSH", QUEUE_LIST, *jobs)
        # at the ceiling: the workers' maximum is sized for it, the rule does not match
        backlog = f'max(redis_key_size{{key="{QUEUE_LIST}"}})'
        servers.wait_until(
            lambda: [v for _, v in prometheus.query(backlog)] == [float(queue.drain_ceiling)],
            timeout=DEADLINE,
            what="Prometheus to scrape the backlog at the ceiling",
            interval=0.2,
        )
        assert prometheus.query(_rule(plan, "HeadroomQueueBacklogHigh")["expr"]) == []
        conn.call("LPUSH", QUEUE_LIST, '{"id":"one more"}')
        start = time.monotonic()
        alert, _ = prometheus.wait_for_alert("HeadroomQueueBacklogHigh", timeout=DEADLINE, **labels)
        _report(
            "HeadroomQueueBacklogHigh firing one job above the ceiling",
            time.monotonic() - start,
            _bound(plan, "HeadroomQueueBacklogHigh"),
        )
        assert float(alert.value) == queue.drain_ceiling + 1
        conn.call("DEL", QUEUE_LIST)
        waited = prometheus.wait_for_no_alert(
            "HeadroomQueueBacklogHigh", timeout=DEADLINE, **labels
        )
        print(f"HeadroomQueueBacklogHigh resolved {waited:.1f} s after the queue drained")


# --- the database servers' own metrics (postgres_exporter) -----------------------

DB_POD = f"{PROFILE}-pg-metrics-7c9d5b8f4-x2k4p"
SLOW_SECONDS = 1
SLEEP_SECONDS = 2
# Direct sessions warn from this many on the server (the absolute count, below
# the share: 50% of max_connections 20 - 3 superuser-reserved would be 9).
WARNING_SESSIONS = 7


def database_plan(database: servers.AppDatabase, *, monitoring_role: bool = False) -> planner.Plan:
    """A profile on ``database`` with the database alerts' thresholds of the
    tests: slow queries at 1 s, a warning at WARNING_SESSIONS sessions."""
    metrics: dict[str, Any] = {"credentialsSecret": {"name": "monitor"}} if monitoring_role else {}
    profile = v1alpha1.parse_profile(
        {
            "apiVersion": "headroom.dev/v1alpha1",
            "kind": "ScalingProfile",
            "metadata": {"name": PROFILE, "namespace": NAMESPACE, "uid": "alert-fire"},
            "spec": {
                "app": {"deployment": "web", "replicas": {"min": 1, "max": 2}, "poolSizePerPod": 4},
                "database": {
                    "host": servers.HOST,
                    "port": database.port,
                    "name": database.name,
                    "credentialsSecret": {"name": "db"},
                    "maxConnections": database.server.max_connections,
                    "superuserReservedConnections": 3,
                    "sslMode": "disable",
                    "metrics": metrics,
                },
                "pooler": {"instances": 1, "image": "registry.example/pgbouncer:1.18.0"},
                "alerts": {
                    "database": {
                        "for": f"{FOR_SECONDS}s",
                        "slowQuerySeconds": SLOW_SECONDS,
                        "connectionsWarningCount": WARNING_SESSIONS,
                    },
                    "pooler": {"for": f"{FOR_SECONDS}s"},
                },
            },
        }
    )
    plan = planner.plan(profile)
    assert plan.ok, [str(p) for p in plan.problems]
    return plan


@pytest.fixture(scope="module")
def metrics_database(
    tools: servers.Tools, request: pytest.FixtureRequest
) -> Iterator[servers.AppDatabase]:
    """A Postgres of its own: 20 connections (so a few direct sessions fill it),
    pg_stat_statements preloaded and created in the app's database, a monitoring
    role granted pg_monitor."""
    server = servers.Postgres(
        tools,
        max_connections=20,
        superuser_reserved_connections=3,
        extra_conf="shared_preload_libraries = 'pg_stat_statements'\n",
    )
    try:
        server.start()
        server.create_app("app", "app-pw", "app")
        server.admin("app").rows("CREATE EXTENSION pg_stat_statements")
        server.create_role("monitor", "monitor-pw")
        server.admin().rows("GRANT pg_monitor TO monitor")
        yield servers.AppDatabase(server, "app", "app-pw", "app")
    finally:
        server.stop()


def _start_postgres_exporter(
    plan: planner.Plan,
    database: servers.AppDatabase,
    start_exporter: StartExporter,
    exporters: prometheus_servers.Exporters,
) -> Exporter:
    """The primary's exporter, as its rendered Deployment starts it: its args,
    and DATA_SOURCE_* from the Secrets the profile names."""
    objects = postgres_metrics.build(plan, _creds(database))
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    assert deployment["metadata"]["name"] == plan.names.pg_metrics("primary")
    args, env = prometheus_servers.container_command(
        _container(deployment, "exporter"),
        secrets={
            "db": {"username": database.user, "password": database.password},
            "monitor": {"username": "monitor", "password": "monitor-pw"},
        },
        moved={},
    )
    return start_exporter(exporters.postgres, args, env, name="postgres_exporter")


def _creds(database: servers.AppDatabase) -> credentials.Credentials:
    return credentials.Credentials(
        username=database.user,
        password=database.password,
        stats_password=secrets.token_hex(16),
        revision="1",
    )


def _prometheus_over(
    start_prometheus: StartPrometheus, plan: planner.Plan, targets: list[Target]
) -> Prometheus:
    prometheus = start_prometheus(
        rules={"headroom.rules.yaml": alert_rules.rule_file(plan)},
        targets=targets,
        scrape_interval=SCRAPE,
        evaluation_interval=SCRAPE,
    )
    prometheus.wait_for_targets_up(timeout=DEADLINE)
    health = prometheus.rule_health()
    assert not [h for h in health.values() if h.startswith("err")], health
    return prometheus


def test_a_slow_query_fires_the_slow_query_alert_and_it_resolves_after(
    metrics_database: servers.AppDatabase,
    start_exporter: StartExporter,
    start_prometheus: StartPrometheus,
    exporters: prometheus_servers.Exporters,
) -> None:
    """pg_sleep(2) with slowQuerySeconds 1: the exporter's longest active
    transaction of the app's database passes 1 s while it runs (the rule has no
    ``for``: the threshold is a duration), and drops when it ends."""
    database = metrics_database
    plan = database_plan(database)
    exporter = _start_postgres_exporter(plan, database, start_exporter, exporters)
    assert exporter.samples("pg_up") == [({}, 1.0)]
    prometheus = _prometheus_over(
        start_prometheus,
        plan,
        [Target("postgres", exporter.address, {"namespace": NAMESPACE, "pod": DB_POD})],
    )
    labels = {"namespace": NAMESPACE, "server": "primary"}
    assert not prometheus.matching("HeadroomQuerySlow")
    psql = servers.Psql(
        database.server.tools, database.port, database.user, database.password, database.name
    )
    started = time.time()
    psql.rows(f"SELECT pg_sleep({SLEEP_SECONDS})")
    ended = time.time()
    # Prometheus writes ALERTS at every evaluation while the alert fires: read
    # when it fired from there, not from a poll that a short alert could slip past
    expr = 'ALERTS{alertname="HeadroomQuerySlow", alertstate="firing", server="primary"}'

    def firing() -> list[float]:
        return sorted(ts for _, stamps in prometheus.history(expr, seconds=60) for ts in stamps)

    servers.wait_until(
        lambda: bool(firing()),
        timeout=DEADLINE,
        what="HeadroomQuerySlow firing while pg_sleep ran",
        interval=0.5,
    )
    fired = firing()
    print(
        f"HeadroomQuerySlow firing {fired[0] - started:.1f} s after pg_sleep({SLEEP_SECONDS}) "
        f"began (threshold {SLOW_SECONDS} s + up to 1 scrape + 1 evaluation), for "
        f"{len(fired)} evaluation(s)"
    )
    assert started + SLOW_SECONDS <= fired[0] <= ended + 2 * SCRAPE + SCRAPE
    waited = prometheus.wait_for_no_alert("HeadroomQuerySlow", timeout=DEADLINE, **labels)
    print(f"HeadroomQuerySlow resolved {time.time() - ended:.1f} s after the query ended")
    assert waited < DEADLINE
    (alert_rule,) = [
        r
        for g in alert_rules.rule_groups(plan)
        for r in g["rules"]
        if r["alert"] == "HeadroomQuerySlow"
    ]
    assert "for" not in alert_rule
    # the app's role sees its own sessions' state; the exporter's runs are not slow
    assert prometheus.query(alert_rule["expr"]) == []


def test_direct_sessions_fire_the_servers_connections_alert_the_poolers_sum_misses(
    metrics_database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    start_exporter: StartExporter,
    start_prometheus: StartPrometheus,
    exporters: prometheus_servers.Exporters,
) -> None:
    """Sessions straight to Postgres (a migration, a console, another app) fill
    the server while the poolers hold nothing: the poolers' sum stays below its
    threshold, the server's own count (pg_stat_database) fires at the absolute
    connectionsWarningCount, and resolves when they leave."""
    database = metrics_database
    database.wait_for_no_app_backends()
    plan = database_plan(database)
    creds = _creds(database)
    bouncer = start_pgbouncer(servers.ini_for(plan), database.userlist(creds.stats_password))
    objects = pgbouncer.build(plan, creds)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    args, env = prometheus_servers.container_command(
        _container(deployment, "exporter"),
        secrets={
            o["metadata"]["name"]: prometheus_servers.secret_values(o)
            for o in objects
            if o["kind"] == "Secret"
        },
        moved={f"127.0.0.1:{planner.POOLER_PORT}": f"{servers.HOST}:{bouncer.port}"},
    )
    pooler_exporter = start_exporter(exporters.pgbouncer, args, env, name="pgbouncer_exporter")
    postgres_exporter = _start_postgres_exporter(plan, database, start_exporter, exporters)
    prometheus = _prometheus_over(
        start_prometheus,
        plan,
        [
            Target(
                "pgbouncer", pooler_exporter.address, {"namespace": NAMESPACE, "pod": POOLER_POD}
            ),
            Target("postgres", postgres_exporter.address, {"namespace": NAMESPACE, "pod": DB_POD}),
        ],
    )
    assert plan.alerts is not None and plan.alerts.database is not None
    pooled = _rule(plan, "HeadroomPrimaryConnectionsHigh")
    (server,) = plan.alerts.database.servers
    assert server.warning == WARNING_SESSIONS
    assert not prometheus.matching("HeadroomDatabaseConnectionsHigh")
    sessions = [
        psycopg.connect(
            host=servers.HOST,
            port=database.port,
            user=database.user,
            password=database.password,
            dbname=database.name,
            application_name="migration",
        )
        for _ in range(WARNING_SESSIONS)
    ]
    try:
        opened = time.monotonic()
        labels = {"namespace": NAMESPACE, "server": "primary", "pod": DB_POD}
        alert, _ = prometheus.wait_for_alert(
            "HeadroomDatabaseConnectionsHigh", timeout=DEADLINE, **labels
        )
        _report(
            f"HeadroomDatabaseConnectionsHigh firing after {WARNING_SESSIONS} direct sessions",
            time.monotonic() - opened,
            _bound(plan, "HeadroomDatabaseConnectionsHigh"),
        )
        assert float(alert.value) >= WARNING_SESSIONS
        # the poolers hold nothing: their sum is far from its own threshold
        held = prometheus.query(pooled["expr"].rsplit(" >= ", 1)[0])
        assert [v for _, v in held] == [0.0], held
        assert not prometheus.matching("HeadroomPrimaryConnectionsHigh")
    finally:
        for session in sessions:
            session.close()
    left = time.monotonic()
    prometheus.wait_for_no_alert("HeadroomDatabaseConnectionsHigh", timeout=DEADLINE, **labels)
    print(
        f"HeadroomDatabaseConnectionsHigh resolved {time.monotonic() - left:.1f} s after the "
        "sessions closed"
    )


def test_per_statement_times_come_through_a_monitoring_role_only(
    metrics_database: servers.AppDatabase,
    start_exporter: StartExporter,
    exporters: prometheus_servers.Exporters,
) -> None:
    """With a monitoring role (pg_monitor) the rendered exporter runs the
    pg_stat_statements collector and its scrape stays whole; with the app's role
    it is not run (postgres_exporter 0.17 would fail the whole scrape on the
    other roles' hidden query ids)."""
    database = metrics_database
    psql = servers.Psql(
        database.server.tools, database.port, database.user, database.password, database.name
    )
    psql.rows("SELECT count(*) FROM pgbench_accounts")
    database.server.admin("app").rows("SELECT count(*) FROM pgbench_branches")
    monitored = database_plan(database, monitoring_role=True)
    assert monitored.database_metrics is not None and monitored.database_metrics.statements
    exporter = _start_postgres_exporter(monitored, database, start_exporter, exporters)
    calls = exporter.samples("pg_stat_statements_calls_total")
    assert calls and all(labels["queryid"] != "unknown" for labels, _ in calls)
    assert {labels["user"] for labels, _ in calls} >= {"app", "postgres"}
    assert exporter.samples("pg_up") == [({}, 1.0)]
    plain = database_plan(database)
    assert plain.database_metrics is not None and not plain.database_metrics.statements
    app_role = _start_postgres_exporter(plain, database, start_exporter, exporters)
    assert app_role.samples("pg_stat_statements_calls_total") == []
    assert app_role.samples("pg_up") == [({}, 1.0)]


def test_a_counters_instance_never_fires_the_hit_rate_alert(
    redis_instance: Callable[[str], tuple[planner.Plan, redis_servers.RedisProcess, Exporter]],
    start_prometheus: StartPrometheus,
) -> None:
    """A rate limiter's counters: mostly lookups of keys not there yet (a miss,
    then INCR), a hit rate a cache would alert on; the counters instance has no
    hit-rate (nor eviction-as-cache) rule, never evicts, and never fires."""
    plan, server, exporter = redis_instance("limits")
    assert plan.redis_named("limits").eviction_policy == "noeviction"
    prometheus = _redis_prometheus(start_prometheus, plan, exporter, "limits")
    rules = [r for g in alert_rules.rule_groups(plan) for r in g["rules"]]
    names = {r["alert"] for r in rules if r["labels"].get("redis") == "limits"}
    assert "HeadroomRedisHitRateLow" not in names and "HeadroomRedisEvicting" not in names
    assert "HeadroomCountersRedisEvicting" in names and "HeadroomRedisMemoryHigh" in names
    with server.client() as conn:
        assert conn.config_get("maxmemory-policy") == "noeviction"
        for n in range(300):
            key = f"rl:user:{n}"
            conn.pipeline([["GET", key], ["INCR", key], ["EXPIRE", key, "60"]])
    pod = _redis_pod("limits")
    ratio = (
        f'sum(rate(redis_keyspace_hits_total{{pod="{pod}"}}[5m])) / '
        f'sum(rate(redis_keyspace_hits_total{{pod="{pod}"}}[5m]) + '
        f'rate(redis_keyspace_misses_total{{pod="{pod}"}}[5m]))'
    )
    servers.wait_until(
        lambda: [v for _, v in prometheus.query(ratio)] != [],
        timeout=DEADLINE,
        what="Prometheus to compute the counters' hit rate",
        interval=0.5,
    )
    (low,) = [v for _, v in prometheus.query(ratio)]
    assert low < 0.8  # a cache with this hit rate would alert
    # and over more than the cache group's for + 2 scrapes, nothing fires for it
    deadline = time.monotonic() + FOR_SECONDS + 4 * SCRAPE
    while time.monotonic() < deadline:
        assert not [a for a in prometheus.alerts() if a.labels.get("redis") == "limits"]
        time.sleep(0.5)
