"""``spec.alerts``: Prometheus alerts on the plan's numbers per component
(pooler, database, cache, queues, app), the labels they carry, and where the
app serves its metrics.

What lands in a rule file is checked as Prometheus reads it
(:mod:`headroom.api.prometheus`): durations in Prometheus' grammar and range,
label names Prometheus takes and Headroom does not set itself, a histogram
name the rules can add ``_bucket`` to."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from headroom.api import prometheus
from headroom.api.v1alpha1.schema import (
    SHORT_NAME,
    SHORT_NAME_MAX,
    Broken,
    Checked,
    Model,
    PositiveQuantity,
    Rule,
    paired,
)

# A Prometheus duration (``for:``): what Prometheus parses, e.g. 5m, 1h30m, 90s.
DURATION = prometheus.DURATION_PATTERN


def _checked_duration(text: str) -> str:
    problem = prometheus.duration_problem(text)
    if problem:
        raise ValueError(problem)
    return text


Duration = Annotated[
    str,
    # the pattern is the CRD's; the check says what is wrong in words
    Field(max_length=prometheus.DURATION_MAX_LENGTH),
    Checked(
        _checked_duration,
        {
            "type": "string",
            "minLength": 1,
            "maxLength": prometheus.DURATION_MAX_LENGTH,
            "pattern": DURATION,
            "x-kubernetes-validations": [
                paired(prometheus.duration_cel(), prometheus.DURATION_RANGE_MESSAGE)
            ],
        },
    ),
]
PROM_LABEL = prometheus.LABEL_NAME
_NOT_RESERVED = paired(
    "!self.startsWith('__')", "label names starting with __ are reserved for Prometheus"
)


def _label_name(*, max_length: int, taken: tuple[str, ...], why: str) -> Checked:
    """A Prometheus label name, none of ``taken`` (which the rules set themselves)."""

    def checked(name: str) -> None:
        problem = prometheus.label_name_problem(name)
        if problem:
            raise ValueError(problem)
        if name in taken:
            raise ValueError(f"{name!r} {why}")

    listed = ", ".join(f"'{t}'" for t in taken)
    return Checked(
        checked,
        {
            "type": "string",
            "maxLength": max_length,
            "pattern": PROM_LABEL,
            "x-kubernetes-validations": [
                _NOT_RESERVED,
                paired(f"!(self in [{listed}])", f"must not be one of {listed}: {why}"),
            ],
        },
    )


# The labels the status-code matcher sits beside in the error-ratio rule.
SELECTOR_LABELS = ("namespace", "pod", "le")
StatusLabel = Annotated[
    str,
    Field(max_length=128),
    _label_name(
        max_length=128,
        taken=SELECTOR_LABELS,
        why="is a label the rules select the app's pods and buckets by",
    ),
]
# The rules add these to the histogram's name.
HISTOGRAM_SUFFIXES = ("_bucket", "_count", "_sum")


def _checked_histogram(name: str) -> None:
    problem = prometheus.label_name_problem(name)
    if problem:
        raise ValueError(problem)
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            raise ValueError(
                f"{name!r}: give the histogram's name without {suffix} (the rules read "
                f"{name.removesuffix(suffix)}_bucket and _count)"
            )


HistogramName = Annotated[
    str,
    Field(max_length=128),
    Checked(
        _checked_histogram,
        {
            "type": "string",
            "maxLength": 128,
            "pattern": PROM_LABEL,
            "x-kubernetes-validations": [
                _NOT_RESERVED,
                paired(
                    "!(" + " || ".join(f"self.endsWith('{s}')" for s in HISTOGRAM_SUFFIXES) + ")",
                    "give the histogram's name without _bucket, _count or _sum",
                ),
            ],
        },
    ),
]
# label values are data in the rule file (YAML quoted), never expression text
LabelValue = Annotated[str, Field(max_length=128, pattern=r"^[^\n\r]*$")]
URL_PATH = r"^/[A-Za-z0-9._~/-]*$"
Severity = Literal["info", "warning", "critical"]

# Labels every alert carries from Headroom itself (pool, redis, queue and server
# tell the alerts of one profile's pools, instances, queues and database servers apart).
RESERVED_ALERT_LABELS = frozenset(
    {
        "alertname",
        "severity",
        "namespace",
        "profile",
        "component",
        "pool",
        "redis",
        "queue",
        "server",
    }
)
AlertLabelName = Annotated[
    str,
    Field(max_length=64),
    _label_name(
        max_length=64, taken=tuple(sorted(RESERVED_ALERT_LABELS)), why="is set by Headroom"
    ),
]


class _AlertGroup(Model):
    """What every group of alerts has: a switch, a ``for:`` and a severity."""

    enabled: bool = Field(default=True, description="Render this group's alerts.")
    for_: Duration = Field(
        default="5m",
        alias="for",
        description="How long a threshold must be breached before the alert fires "
        "(a Prometheus duration: 90s, 5m, 1h30m).",
    )
    severity: Severity = Field(
        default="warning",
        description="Severity label of the group's threshold alerts (the ones that mean "
        "lost work or a component down are always critical).",
    )


def _percent_of(side: str, field: str) -> str:
    """CEL: a pool's own ``field`` when it sets one, else the group's."""
    return f"(has(self.{side}.{field}) ? self.{side}.{field} : self.{field})"


def _pool_warning_below_critical(side: str) -> Rule:
    """The warning share a pool ends up with (its own or the group's) is below its
    critical share."""

    def check(alerts: PoolerAlerts) -> Broken | None:
        own: PoolAlerts | None = getattr(alerts, side)
        if own is None:
            return None
        warning = own.connections_warning_percent or alerts.connections_warning_percent
        critical = own.connections_critical_percent or alerts.connections_critical_percent
        if warning < critical:
            return None
        which = "connectionsWarningPercent"
        named = which if own.connections_warning_percent else "connectionsCriticalPercent"
        return Broken(
            f"{side}.{named}",
            lambda at: (
                f"the {side} pooler's warning share {warning} must be < its critical "
                f"share {critical} ({at(side)} over {at('connectionsWarningPercent')} and "
                f"{at('connectionsCriticalPercent')})"
            ),
        )

    return Rule(
        f"!has(self.{side}) || {_percent_of(side, 'connectionsWarningPercent')} < "
        f"{_percent_of(side, 'connectionsCriticalPercent')}",
        f"spec.alerts.pooler.{side}: its connectionsWarningPercent (or the group's) must be "
        "< its connectionsCriticalPercent (or the group's)",
        check,
    )


def _warning_below_critical(group: str) -> Rule:
    def check(alerts: _ConnectionAlerts) -> Broken | None:
        warning, critical = alerts.connections_warning_percent, alerts.connections_critical_percent
        if warning < critical:
            return None
        return Broken(
            "connectionsWarningPercent",
            lambda at: f"{warning} must be < {at('connectionsCriticalPercent')} {critical}",
        )

    return Rule(
        "self.connectionsWarningPercent < self.connectionsCriticalPercent",
        f"spec.alerts.{group}.connectionsWarningPercent must be < "
        f"spec.alerts.{group}.connectionsCriticalPercent",
        check,
    )


class _ConnectionAlerts(_AlertGroup):
    """A group that warns, then goes critical, at shares of a connection limit;
    each subclass says which limit in its field descriptions."""

    connections_warning_percent: int = Field(default=50, ge=1, le=100)
    connections_critical_percent: int = Field(default=90, ge=1, le=100)


class PoolAlerts(Model):
    """One pooler's own settings; what it leaves unset is the group's."""

    enabled: bool | None = Field(default=None, description="Render this pooler's alerts.")
    connections_warning_percent: int | None = Field(
        default=None, ge=1, le=100, description="Its own warning share of max_db_connections."
    )
    connections_critical_percent: int | None = Field(
        default=None, ge=1, le=100, description="Its own critical share of max_db_connections."
    )
    max_wait_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Its own longest wait for a server connection."
    )
    query_time_baseline_factor: float | None = Field(
        default=None, gt=1, le=100, description="Its own factor over its baseline."
    )
    query_time_floor_seconds: float | None = Field(
        default=None, gt=0, le=3600, description="Its own floor of database time per query."
    )


class PoolerAlerts(_ConnectionAlerts):
    """PgBouncer: server connections against each pool's planned max_db_connections,
    clients waiting for one, database time per query against its own baseline, the
    pooler's exporter down."""

    RULES = (
        _warning_below_critical("pooler"),
        _pool_warning_below_critical("write"),
        _pool_warning_below_critical("read"),
    )

    connections_warning_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Warn when a pooler pod holds this share of its max_db_connections "
        "(seed 004: a safe limit of 50 of 100 connections).",
    )
    connections_critical_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Critical at this share: the next clients wait for a server connection.",
    )

    max_wait_seconds: float = Field(
        default=1.0,
        gt=0,
        le=3600,
        description="Critical when the oldest waiting client has waited longer than this "
        "(seed 004: queries over 1 s are slow).",
    )
    query_time_baseline_factor: float = Field(
        default=3.0,
        gt=1,
        le=100,
        description="Warn when the database time per query through a pooler (5 minutes) "
        "rises above this many times its own baseline (the last day).",
    )
    query_time_floor_seconds: float = Field(
        default=0.05,
        gt=0,
        le=3600,
        description="The baseline alert fires only above this database time per query "
        "(seconds), so that a fast or idle app's noise never fires it.",
    )
    write: PoolAlerts | None = Field(
        default=None,
        description="The write pooler's own settings (<name>-pooler-rw), over the group's.",
    )
    read: PoolAlerts | None = Field(
        default=None,
        description="The read pooler's own settings (<name>-pooler-ro), over the group's.",
    )


def _count_warning_below_critical() -> Rule:
    def check(alerts: DatabaseAlerts) -> Broken | None:
        warning, critical = alerts.connections_warning_count, alerts.connections_critical_count
        if warning is None or critical is None or warning < critical:
            return None
        return Broken(
            "connectionsWarningCount",
            lambda at: f"{warning} must be < {at('connectionsCriticalCount')} {critical}",
        )

    return Rule(
        "!has(self.connectionsWarningCount) || !has(self.connectionsCriticalCount) || "
        "self.connectionsWarningCount < self.connectionsCriticalCount",
        "spec.alerts.database.connectionsWarningCount must be < "
        "spec.alerts.database.connectionsCriticalCount",
        check,
    )


class DatabaseAlerts(_ConnectionAlerts):
    """The database servers: their own connections (postgres_exporter, or
    CloudNativePG's metrics) against max_connections, and what the poolers hold
    of the primary's budget; slow queries and statements, the query rate, the
    replicas' own replication lag."""

    RULES = (_warning_below_critical("database"), _count_warning_below_critical())

    connections_warning_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Warn when a server's own connections reach this share of its "
        "max_connections - superuser_reserved_connections, and when the poolers' server "
        "connections reach it of the primary's max_connections - reserved (seed 004: safe "
        "limit 50 of 100).",
    )
    connections_critical_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Critical at this share (of the same two limits).",
    )
    connections_warning_count: int | None = Field(
        default=None,
        ge=1,
        le=262_143,
        description="Warn when a server holds this many connections, instead of at "
        "connectionsWarningPercent of its max_connections (seed 004: safe limit 50 of 100).",
    )
    connections_critical_count: int | None = Field(
        default=None,
        ge=1,
        le=262_143,
        description="Critical when a server holds this many connections, instead of at "
        "connectionsCriticalPercent (seed 004: breaking point 100).",
    )
    slow_query_seconds: float = Field(
        default=1.0,
        gt=0,
        le=86_400,
        description="Warn while a query of the app's database has been running longer than "
        "this (its transaction's age; the threshold is the wait, no `for`), and when a "
        "statement's mean time over 5 minutes exceeds it (pg_stat_statements; seed 004: "
        "slow query > 1 s; seeds 000/002: log queries > 100 ms).",
    )
    query_rate_per_second: float | None = Field(
        default=None,
        gt=0,
        le=10_000_000,
        description="Warn when the app's database commits and rolls back more transactions "
        "per second than this, over every server (each statement outside a transaction is "
        "one; seed 000: < 100 queries/s at 1,000 users). Unset: no alert.",
    )
    replica_lag_seconds: float | None = Field(
        default=None,
        gt=0,
        le=86_400,
        description="Warn when a replica reports replaying this far behind the primary "
        "(pg_replication_lag_seconds). Default: spec.database.readReplicas.maxLagSeconds.",
    )


class CacheInstanceAlerts(Model):
    """One Redis instance's own settings; what it leaves unset is the group's."""

    enabled: bool | None = Field(default=None, description="Render this instance's alerts.")
    memory_percent: int | None = Field(
        default=None, ge=1, le=100, description="Its own warning share of maxmemory."
    )
    hit_rate_min: float | None = Field(
        default=None, gt=0, le=1, description="Its own hit-rate target (use: cache only)."
    )
    evictions: bool | None = Field(
        default=None,
        description="Warn when it evicts (use: cache only; default true). False for a cache "
        "meant to run full, where evicting the least-recently-used keys is its job.",
    )


InstanceName = Annotated[str, Field(pattern=SHORT_NAME, max_length=SHORT_NAME_MAX)]


class CacheAlerts(_AlertGroup):
    """Redis: memory against maxmemory, evictions, hit rate, Redis down."""

    hit_rate_min: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Warn when a use: cache instance serves fewer hits than this share of "
        "lookups (seed 000: cache hit rate > 80%).",
    )
    memory_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Warn when used memory reaches this share of maxmemory (a queue "
        "instance then refuses writes, a cache evicts).",
    )
    instances: dict[InstanceName, CacheInstanceAlerts] = Field(
        default_factory=dict,
        max_length=8,
        description="Per instance (by spec.cache.instances name), its own settings over the "
        "group's: a switch, thresholds.",
    )


class QueueAlerts(_AlertGroup):
    """Queues: a backlog the workers' ceiling cannot drain, workers at their maximum."""

    for_: Duration = Field(
        default="10m",
        alias="for",
        description="How long the backlog must stay above what the workers' ceiling "
        "drains before the alert fires (a Prometheus duration).",
    )


class AppMetrics(Model):
    """Where the app's pods serve their HTTP metrics (a PodMonitor scrapes them)."""

    enabled: bool = Field(
        default=True,
        description="false: the app serves no HTTP metrics (then no latency and error "
        "alerts, and no PodMonitor). A plain field, so server-side apply, client-side "
        "apply, headroom plan and render read it alike (a null is absent: the default).",
    )

    port: int = Field(
        default=9464,
        ge=1,
        le=65535,
        description="Container port of the metrics endpoint (9464: the OpenTelemetry "
        "Prometheus exporter's default).",
    )
    path: Annotated[str, Field(pattern=URL_PATH, max_length=256)] = Field(
        default="/metrics", description="HTTP path of the metrics endpoint."
    )
    histogram: HistogramName = Field(
        default="http_server_request_duration_seconds",
        description="Request-duration histogram in seconds, without _bucket (OpenTelemetry "
        "HTTP semantic conventions by default).",
    )
    status_label: StatusLabel = Field(
        default="http_response_status_code",
        description="Label of the histogram carrying the HTTP status code (5xx are errors); "
        "not namespace, pod or le, which the rules select by.",
    )
    route_label: StatusLabel = Field(
        default="http_route",
        description="Label of the histogram carrying the route (OpenTelemetry's http.route "
        "by default), for the per-route targets (routes).",
    )


# A route as routers name it (/week/:n, /api/users/{id}, /posts/[slug]): URL path
# characters and brackets, never a quote or a backslash (it lands in a PromQL string).
ROUTE = r"^/[A-Za-z0-9._~:@!$&'()*+,;=/\[\]{}%-]*$"
ROUTE_MAX = 256


def _one_of_route_or_prefix(latency: RouteLatency) -> Broken | None:
    if (latency.route is None) != (latency.prefix is None):
        return None
    return Broken(
        "route",
        lambda at: (
            f"give exactly one of {at('route')} (one route) and {at('prefix')} "
            "(every route starting with it)"
        ),
    )


class RouteLatency(Model):
    """A p95 target for one route, or for each route under a prefix."""

    RULES = (
        Rule(
            "has(self.route) != has(self.prefix)",
            "spec.alerts.app.routes[]: give exactly one of route and prefix",
            _one_of_route_or_prefix,
        ),
    )

    route: Annotated[str, Field(pattern=ROUTE, max_length=ROUTE_MAX)] | None = Field(
        default=None, description="The route label's value, exactly (e.g. /week/[n])."
    )
    prefix: Annotated[str, Field(pattern=ROUTE, max_length=ROUTE_MAX)] | None = Field(
        default=None,
        description="Every route starting with this (e.g. /api/), each with its own p95.",
    )
    p95_latency_seconds: float = Field(
        gt=0,
        le=600,
        description="Warn when the route's 95th percentile request duration exceeds this "
        "(seed 000: week pages < 100 ms, API < 50 ms; seed 003: coach dashboard < 2 s).",
    )


DEFAULT_P95_LATENCY_SECONDS = 0.2
DEFAULT_ERROR_RATIO = 0.001


class AppAlerts(_AlertGroup):
    """The app's own pods: p95 latency, error ratio, CPU, memory, HPA at max."""

    p95_latency_given: float | None = Field(
        default=None,
        alias="p95LatencySeconds",
        gt=0,
        le=600,
        description="Warn when the 95th percentile request duration exceeds this "
        f"(default {DEFAULT_P95_LATENCY_SECONDS}; seed 000: p95 < 200 ms; seed 003: "
        "p95 < 3 s). Needs metrics.",
    )
    error_ratio_given: float | None = Field(
        default=None,
        alias="errorRatio",
        gt=0,
        le=1,
        description=f"Warn when this share of requests answers 5xx (default "
        f"{DEFAULT_ERROR_RATIO}; seed 000: errors < 0.1%). Needs metrics.",
    )
    cpu_percent: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Warn when the pods' CPU, averaged over them, exceeds this percent of "
        "their CPU requests (what an HPA target means; seed 000: CPU < 50% on average).",
    )
    memory: PositiveQuantity = Field(
        default="2G",
        description="Warn when a pod's working set exceeds this (seed 000: < 2 GB per server).",
    )
    routes: list[RouteLatency] = Field(
        default_factory=list,
        max_length=16,
        description="p95 targets per route (the histogram's metrics.routeLabel), beside "
        "the app-wide p95LatencySeconds. Needs metrics.",
    )
    # nullable in the CRD only so that server-side apply takes a null as the
    # other paths do (client-side apply drops it): absent, the default
    metrics: AppMetrics = Field(
        default_factory=AppMetrics,
        description="The app's HTTP metrics; enabled: false when it serves none (a null "
        "is the default, metrics on).",
        json_schema_extra={"nullable": True},
    )

    @property
    def served_metrics(self) -> AppMetrics | None:
        """Where the app serves its metrics; None when it serves none."""
        return self.metrics if self.metrics.enabled else None

    @property
    def p95_latency_seconds(self) -> float:
        """The latency target, given or the default."""
        given = self.p95_latency_given
        return DEFAULT_P95_LATENCY_SECONDS if given is None else given

    @property
    def error_ratio(self) -> float:
        given = self.error_ratio_given
        return DEFAULT_ERROR_RATIO if given is None else given


class Alerts(Model):
    """Prometheus alerts on the plan's numbers, scrape targets and a Grafana dashboard."""

    enabled: bool = Field(
        default=True,
        description="Render the rules (PrometheusRule, or a ConfigMap without "
        "prometheus-operator), the monitors and the dashboard.",
    )
    # (a key pattern would be patternProperties, which structural schemas refuse:
    # the key type's rules become CEL over the map's keys)
    labels: dict[AlertLabelName, LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra labels on every alert (e.g. team: shop), for routing; not "
        "the ones Headroom sets (" + ", ".join(sorted(RESERVED_ALERT_LABELS)) + ").",
    )
    pooler: PoolerAlerts = Field(default_factory=PoolerAlerts)
    database: DatabaseAlerts = Field(default_factory=DatabaseAlerts)
    cache: CacheAlerts = Field(default_factory=CacheAlerts)
    queues: QueueAlerts = Field(default_factory=QueueAlerts)
    app: AppAlerts = Field(default_factory=AppAlerts)
