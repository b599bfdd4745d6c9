"""Operator metrics (prometheus-client), one registry per process, created by the
runtime at start-up and handed to the reconcile pass, the queue's workers and the
webhook; served on ``/metrics``.

Besides the reconcile pass's own counters: ``headroom_build_info`` (which build runs) and
``headroom_profile_condition`` (every profile's status conditions, kube-state-metrics
style: one series per condition and status, 1 for the current status), fed by the
runtime from the profile watch cache at scrape time, so every replica (not only the leader)
exports the same view and an alert can say which profile is not Ready.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

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
_PASS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class CachedProfile(Protocol):
    """What the collector needs of a cached profile (kube.informer.Entry has it)."""

    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def resource_version(self) -> str: ...
    def object(self) -> dict[str, Any]: ...


class ProfileConditions(Collector):
    """The conditions of every cached profile, as ``headroom_profile_condition``.

    Read at scrape time from the profile watch cache (``source``, set by the
    runtime), so what the operator wrote itself and what the watch brought are
    both seen, and a deleted profile's series go with it. ``collect`` runs on
    the metrics server's thread: ``source`` must return a copy (a dict copy is
    one C call, atomic under the GIL); each profile is parsed once per
    resourceVersion."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[CachedProfile]] = list
        self._parsed: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...]]] = {}

    def _conditions(self, entry: CachedProfile) -> tuple[tuple[str, str], ...]:
        key = (entry.namespace, entry.name)
        seen = self._parsed.get(key)
        if seen is not None and seen[0] == entry.resource_version:
            return seen[1]
        found = (entry.object().get("status") or {}).get("conditions") or []
        conditions = tuple(
            (str(c.get("type")), str(c.get("status")))
            for c in found
            if isinstance(c, dict) and c.get("type")
        )
        self._parsed[key] = (entry.resource_version, conditions)
        return conditions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "headroom_profile_condition",
            "A ScalingProfile's status condition: 1 for its current status, 0 for the others.",
            labels=["namespace", "profile", "condition", "status"],
        )
        entries = sorted(self.source(), key=lambda e: (e.namespace, e.name))
        for entry in entries:
            for ctype, current in self._conditions(entry):
                for status in _STATUSES:
                    family.add_metric(
                        [entry.namespace, entry.name, ctype, status],
                        1.0 if current == status else 0.0,
                    )
        live = {(e.namespace, e.name) for e in entries}
        for gone in [k for k in self._parsed if k not in live]:
            del self._parsed[gone]
        yield family


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
            "Passes by most urgent trigger and result "
            "(applied, unchanged, skipped, confirmed, failed).",
            ["trigger", "result"],
            registry=r,
        )
        self.last_pass = Gauge(
            "headroom_profile_last_pass_timestamp_seconds",
            "When this process last ended a pass of the profile (one confirmed as "
            "unchanged included): a profile whose time lags the others is starved.",
            ["namespace", "profile"],
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
