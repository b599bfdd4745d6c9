"""``spec.alerts``: Prometheus alerts on the plan's numbers per component
(pooler, database, cache, queues, app), the labels they carry, and where the
app serves its metrics."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from headroom.api.v1alpha1.schema import Model, Quantity, cel, quantity_rule

# A Prometheus duration (``for:``): what promtool accepts, e.g. 5m, 1h30m, 90s.
DURATION = r"^(([0-9]+)(ms|s|m|h|d|w|y))+$"
Duration = Annotated[str, Field(pattern=DURATION, max_length=16)]
PROM_LABEL = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
# label values are data in the rule file (YAML quoted), never expression text
LabelValue = Annotated[str, Field(max_length=128, pattern=r"^[^\n\r]*$")]
URL_PATH = r"^/[A-Za-z0-9._~/-]*$"
Severity = Literal["info", "warning", "critical"]


class _AlertGroup(Model):
    """What every group of alerts has: a switch, a ``for:`` and a severity."""

    enabled: bool = Field(default=True, description="Render this group's alerts.")
    for_: Duration = Field(
        default="5m",
        alias="for",
        description="How long a threshold must be breached before the alert fires.",
    )
    severity: Severity = Field(
        default="warning",
        description="Severity label of the group's threshold alerts (the ones that mean "
        "lost work or a component down are always critical).",
    )


class _ConnectionAlerts(_AlertGroup):
    """A group that warns, then goes critical, at shares of a connection limit;
    each subclass says which limit in its field descriptions."""

    connections_warning_percent: int = Field(default=50, ge=1, le=100)
    connections_critical_percent: int = Field(default=90, ge=1, le=100)

    @model_validator(mode="after")
    def _warning_below_critical(self) -> _ConnectionAlerts:
        if self.connections_warning_percent >= self.connections_critical_percent:
            raise ValueError(
                f"connectionsWarningPercent {self.connections_warning_percent} must be < "
                f"connectionsCriticalPercent {self.connections_critical_percent}"
            )
        return self


class PoolerAlerts(_ConnectionAlerts):
    """PgBouncer: server connections against each pool's planned max_db_connections,
    clients waiting for one, the pooler's exporter down."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.connectionsWarningPercent < self.connectionsCriticalPercent",
                    "spec.alerts.pooler.connectionsWarningPercent must be < "
                    "connectionsCriticalPercent",
                )
            ]
        }
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


class DatabaseAlerts(_ConnectionAlerts):
    """The primary's connections: what the poolers hold against max_connections -
    reserved (nothing Headroom runs reads Postgres' own pg_stat_activity)."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.connectionsWarningPercent < self.connectionsCriticalPercent",
                    "spec.alerts.database.connectionsWarningPercent must be < "
                    "connectionsCriticalPercent",
                )
            ]
        }
    )

    connections_warning_percent: int = Field(
        default=50,
        ge=1,
        le=100,
        description="Warn when the poolers' server connections reach this share of "
        "max_connections - reserved (seed 004: safe limit 50 of 100).",
    )
    connections_critical_percent: int = Field(
        default=90,
        ge=1,
        le=100,
        description="Critical at this share of max_connections - reserved.",
    )


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


class QueueAlerts(_AlertGroup):
    """Queues: a backlog the workers' ceiling cannot drain, workers at their maximum."""

    for_: Duration = Field(
        default="10m",
        alias="for",
        description="How long the backlog must stay above what the workers' ceiling "
        "drains before the alert fires.",
    )


class AppMetrics(Model):
    """Where the app's pods serve their HTTP metrics (a PodMonitor scrapes them)."""

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
    histogram: Annotated[str, Field(pattern=PROM_LABEL, max_length=128)] = Field(
        default="http_server_request_duration_seconds",
        description="Request-duration histogram in seconds, without _bucket (OpenTelemetry "
        "HTTP semantic conventions by default).",
    )
    status_label: Annotated[str, Field(pattern=PROM_LABEL, max_length=128)] = Field(
        default="http_response_status_code",
        description="Label of the histogram carrying the HTTP status code (5xx are errors).",
    )


class AppAlerts(_AlertGroup):
    """The app's own pods: p95 latency, error ratio, CPU, memory, HPA at max."""

    p95_latency_seconds: float = Field(
        default=0.2,
        gt=0,
        le=600,
        description="Warn when the 95th percentile request duration exceeds this "
        "(seed 000: p95 < 200 ms; seed 003: p95 < 3 s).",
    )
    error_ratio: float = Field(
        default=0.001,
        gt=0,
        le=1,
        description="Warn when this share of requests answers 5xx (seed 000: errors < 0.1%).",
    )
    cpu_percent: int = Field(
        default=50,
        ge=1,
        le=1000,
        description="Warn when the pods' CPU, averaged over them, exceeds this percent of "
        "their CPU requests (what an HPA target means; seed 000: CPU < 50% on average).",
    )
    memory: Quantity = Field(
        default="2G",
        description="Warn when a pod's working set exceeds this (seed 000: < 2 GB per server).",
        json_schema_extra={"x-kubernetes-validations": [quantity_rule("> 0", "must be > 0")]},
    )
    metrics: AppMetrics | None = Field(
        default_factory=AppMetrics,
        description="The app's HTTP metrics; null when it serves none (then no latency "
        "and error alerts, and no PodMonitor).",
    )


class Alerts(Model):
    """Prometheus alerts on the plan's numbers, scrape targets and a Grafana dashboard."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.labels) || !self.labels.exists(k, k in "
                    "['alertname', 'severity', 'namespace', 'profile', 'component'])",
                    "spec.alerts.labels: alertname, severity, namespace, profile and "
                    "component are set by Headroom",
                )
            ]
        }
    )

    enabled: bool = Field(
        default=True,
        description="Render the rules (PrometheusRule, or a ConfigMap without "
        "prometheus-operator), the monitors and the dashboard.",
    )
    # (a key pattern would be patternProperties, which structural schemas refuse: CEL instead)
    labels: dict[Annotated[str, Field(max_length=64)], LabelValue] = Field(
        default_factory=dict,
        max_length=16,
        description="Extra labels on every alert (e.g. team: shop), for routing.",
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"self.all(k, k.matches('{PROM_LABEL}'))",
                    "spec.alerts.labels: keys must be Prometheus label names "
                    "([a-zA-Z_][a-zA-Z0-9_]*)",
                )
            ]
        },
    )
    pooler: PoolerAlerts = Field(default_factory=PoolerAlerts)
    database: DatabaseAlerts = Field(default_factory=DatabaseAlerts)
    cache: CacheAlerts = Field(default_factory=CacheAlerts)
    queues: QueueAlerts = Field(default_factory=QueueAlerts)
    app: AppAlerts = Field(default_factory=AppAlerts)

    @field_validator("labels")
    @classmethod
    def _not_ours(cls, labels: dict[str, str]) -> dict[str, str]:
        bad = sorted(k for k in labels if not re.match(PROM_LABEL, k))
        if bad:
            raise ValueError(f"{', '.join(map(repr, bad))}: not Prometheus label names")
        taken = sorted(set(labels) & RESERVED_ALERT_LABELS)
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by Headroom")
        return labels


# Labels every alert carries from Headroom itself.
RESERVED_ALERT_LABELS = frozenset({"alertname", "severity", "namespace", "profile", "component"})
