"""Operator metrics (prometheus-client), one registry per process, created by the
runtime at start-up and handed to the engine, the queue's workers and the
webhook; served on ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

_PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        r = self.registry
        self.reconcile_seconds = Histogram(
            "headroom_reconcile_duration_seconds",
            "Time of one reconcile pass of a ScalingProfile (queue wait excluded).",
            ["trigger"],
            registry=r,
            buckets=_PASS_BUCKETS,
        )
        self.queue_wait_seconds = Histogram(
            "headroom_queue_wait_seconds",
            "Time from a profile's first pending trigger to the start of its pass.",
            ["trigger"],
            registry=r,
            buckets=_PASS_BUCKETS,
        )
        self.passes = Counter(
            "headroom_passes_total",
            "Passes by most urgent trigger and result (applied, unchanged, skipped, failed).",
            ["trigger", "result"],
            registry=r,
        )
        self.queue_depth = Gauge("headroom_queue_depth", "Profiles waiting for a pass.", registry=r)
        self.in_flight = Gauge("headroom_passes_in_flight", "Passes running now.", registry=r)
        self.reconcile_errors = Counter(
            "headroom_reconcile_errors_total",
            "Passes that failed, by reason.",
            ["reason"],
            registry=r,
        )
        self.applied_objects = Counter(
            "headroom_applied_objects_total",
            "Child objects written by server-side apply because they differed, by kind.",
            ["kind"],
            registry=r,
        )
        self.pruned_objects = Counter(
            "headroom_pruned_objects_total",
            "Owned child objects deleted because the profile no longer wants them.",
            ["kind"],
            registry=r,
        )
        self.api_requests = Counter(
            "headroom_api_requests_total",
            "Requests to the API server by verb, kind and HTTP code (0: no answer).",
            ["verb", "kind", "code"],
            registry=r,
        )
        self.leader = Gauge("headroom_leader", "1 while this replica holds the Lease.", registry=r)
        self.cached_objects = Gauge(
            "headroom_cached_objects", "Objects held in the watch caches.", registry=r
        )
        self.admission_seconds = Histogram(
            "headroom_admission_duration_seconds",
            "Time to answer one admission review (inside the webhook server).",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
