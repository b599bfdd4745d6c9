"""The operator's own metrics: build info and the per-profile condition gauge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import headroom
from headroom.reconcile import telemetry


def _samples(m: telemetry.Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(m.registry).decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


@dataclass
class _Cached:
    """A cached profile as the watch cache holds it; counts how often it is parsed."""

    namespace: str
    name: str
    resource_version: str
    conditions: list[tuple[str, str]] = field(default_factory=list)
    parsed: int = 0

    def object(self) -> dict[str, Any]:
        self.parsed += 1
        if not self.conditions:
            return {"spec": {}}
        return {"status": {"conditions": [{"type": t, "status": s} for t, s in self.conditions]}}


def _fed(*cached: _Cached) -> tuple[telemetry.Metrics, list[_Cached]]:
    m = telemetry.Metrics()
    store = list(cached)
    m.profile_conditions.source = lambda: list(store)
    return m, store


def test_build_info_names_the_running_version() -> None:
    (labels, value), *_ = _samples(telemetry.Metrics(), "headroom_build_info").items()
    assert dict(labels)["version"] == headroom.__version__
    assert value == 1.0


def test_profile_condition_is_one_for_the_current_status_only() -> None:
    m, _ = _fed(_Cached("shop", "web", "1", [("Ready", "False"), ("PoolerReady", "True")]))
    samples = _samples(m, "headroom_profile_condition")

    def value(condition: str, status: str) -> float:
        key = (
            ("condition", condition),
            ("namespace", "shop"),
            ("profile", "web"),
            ("status", status),
        )
        return samples[key]

    assert [value("Ready", s) for s in ("True", "False", "Unknown")] == [0.0, 1.0, 0.0]
    assert [value("PoolerReady", s) for s in ("True", "False", "Unknown")] == [1.0, 0.0, 0.0]
    assert len(samples) == 6


def test_profile_condition_follows_the_cache_and_parses_once_per_version() -> None:
    one = _Cached("a", "one", "1", [("Ready", "False")])
    m, store = _fed(one, _Cached("b", "two", "1", [("Ready", "True")]))
    _samples(m, "headroom_profile_condition")
    _samples(m, "headroom_profile_condition")
    assert one.parsed == 1  # the same resourceVersion is not parsed again
    store[:] = [_Cached("a", "one", "2", [("Ready", "True")])]  # updated; "two" deleted
    samples = _samples(m, "headroom_profile_condition")
    assert {dict(k)["profile"] for k in samples} == {"one"}
    ready = {dict(k)["status"]: v for k, v in samples.items()}
    assert ready == {"True": 1.0, "False": 0.0, "Unknown": 0.0}


def test_a_profile_without_status_exports_nothing_yet() -> None:
    m, _ = _fed(_Cached("a", "new", "1"))
    assert _samples(m, "headroom_profile_condition") == {}
