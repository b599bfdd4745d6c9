"""Operator metrics (prometheus-client), one registry per process, created by the
runtime at start-up and handed to the engine, the queue's workers and the
webhook; served on ``/metrics``.

Besides the engine's own counters: ``headroom_build_info`` (which build runs) and
``headroom_profile_condition`` (every profile's status conditions, kube-state-metrics
style: one series per condition and status, 1 for the current status), fed by the
runtime from the profile watch cache, so every replica (not only the leader)
exports the same view and an alert can say which profile is not Ready.
"""

from __future__ import annotations

import platform
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

import headroom

_STATUSES = ("True", "False", "Unknown")


class ProfileConditions(Collector):
    """The conditions of every cached profile, as ``headroom_profile_condition``.

    ``observe``/``forget`` run on the event loop; ``collect`` runs on the metrics
    server's thread: it reads a copy of the table (one C-level dict copy, atomic
    under the GIL), never the table being mutated."""

    def __init__(self) -> None:
        self._table: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}

    def observe(self, namespace: str, name: str, profile: Mapping[str, Any]) -> None:
        conditions = (profile.get("status") or {}).get("conditions") or []
        self._table[(namespace, name)] = tuple(
            (str(c.get("type")), str(c.get("status")))
            for c in conditions
            if isinstance(c, dict) and c.get("type")
        )

    def forget(self, namespace: str, name: str) -> None:
        self._table.pop((namespace, name), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "headroom_profile_condition",
            "A ScalingProfile's status condition: 1 for its current status, 0 for the others.",
            labels=["namespace", "profile", "condition", "status"],
        )
        for (namespace, name), conditions in sorted(self._table.copy().items()):
            for ctype, current in conditions:
                for status in _STATUSES:
                    family.add_metric(
                        [namespace, name, ctype, status], 1.0 if current == status else 0.0
                    )
        yield family


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
        self.build = Info("headroom_build", "The running Headroom build.", registry=r)
        self.build.info(
            {
                "version": headroom.__version__,
                "python_version": platform.python_version(),
            }
        )
        self.profile_conditions = ProfileConditions()
        r.register(self.profile_conditions)
        self.admission_seconds = Histogram(
            "headroom_admission_duration_seconds",
            "Time to answer one admission review (inside the webhook server).",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
