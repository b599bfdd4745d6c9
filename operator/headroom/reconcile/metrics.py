"""Operator metrics (prometheus-client), one registry per process, created by the
handlers at start-up and handed to the engine; served on ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.reconcile_seconds = Histogram(
            "headroom_reconcile_duration_seconds",
            "Time of one reconcile pass of a ScalingProfile.",
            registry=self.registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.reconcile_errors = Counter(
            "headroom_reconcile_errors_total",
            "Reconcile passes that failed, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.applied_objects = Counter(
            "headroom_applied_objects_total",
            "Child objects created or changed by server-side apply, by kind.",
            ["kind"],
            registry=self.registry,
        )
        self.pruned_objects = Counter(
            "headroom_pruned_objects_total",
            "Owned child objects deleted because the profile no longer wants them.",
            ["kind"],
            registry=self.registry,
        )
