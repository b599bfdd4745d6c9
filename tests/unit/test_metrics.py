"""The operator's own metrics: build info and the per-profile condition gauge."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

import headroom
from headroom.reconcile import metrics as metrics_mod


def _samples(m: metrics_mod.Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = generate_latest(m.registry).decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def _profile(*conditions: tuple[str, str]) -> dict[str, object]:
    return {"status": {"conditions": [{"type": t, "status": s} for t, s in conditions]}}


def test_build_info_names_the_running_version() -> None:
    (labels, value), *_ = _samples(metrics_mod.Metrics(), "headroom_build_info").items()
    assert dict(labels)["version"] == headroom.__version__
    assert value == 1.0


def test_profile_condition_is_one_for_the_current_status_only() -> None:
    m = metrics_mod.Metrics()
    m.profile_conditions.observe(
        "shop", "web", _profile(("Ready", "False"), ("PoolerReady", "True"))
    )
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


def test_profile_condition_follows_updates_and_deletes() -> None:
    m = metrics_mod.Metrics()
    m.profile_conditions.observe("a", "one", _profile(("Ready", "False")))
    m.profile_conditions.observe("b", "two", _profile(("Ready", "True")))
    m.profile_conditions.observe("a", "one", _profile(("Ready", "True")))
    m.profile_conditions.forget("b", "two")
    samples = _samples(m, "headroom_profile_condition")
    assert {dict(k)["profile"] for k in samples} == {"one"}
    ready = {dict(k)["status"]: v for k, v in samples.items()}
    assert ready == {"True": 1.0, "False": 0.0, "Unknown": 0.0}


def test_a_profile_without_status_exports_nothing_yet() -> None:
    m = metrics_mod.Metrics()
    m.profile_conditions.observe("a", "new", {"spec": {}})
    assert _samples(m, "headroom_profile_condition") == {}
