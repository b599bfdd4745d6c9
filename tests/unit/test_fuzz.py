"""Property-based fuzzing of the API without a server (tests/fuzzing): any
profile is refused with a message naming a field, or it plans and renders
(`headroom plan`, `headroom render`, the pass's builders, admission) without a
crash; and the grammars the model checks are Prometheus' own. The real
programs and the real API server judge the same profiles in
tests/conformance/test_fuzz_programs.py and tests/e2e/test_fuzz_api.py;
``make fuzz`` runs all three long."""

from __future__ import annotations

import copy
import re
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from headroom.api import prometheus
from tests.fuzzing import oracle, strategies
from tests.fuzzing.settings import fuzz_settings

# found by a long run: an image field given a list crashed its default's lookup
_LIST_IMAGE = {
    "apiVersion": "headroom.dev/v1alpha1",
    "kind": "ScalingProfile",
    "metadata": {"name": "a", "namespace": "default"},
    "spec": {
        "app": {"deployment": "web"},
        "database": {"host": "db", "name": "shop", "credentialsSecret": {"name": "db-creds"}},
        "pooler": {"image": []},
    },
}


@given(body=strategies.profiles())
@example(body=_LIST_IMAGE)
@fuzz_settings(short=150)
def test_every_profile_is_refused_naming_a_field_or_plans_and_renders(body: Any) -> None:
    oracle.judge(body)


# found by a long run: 30 pods x 10,000 slots, past what Erlang C is computed for,
# crashed the workers' headroom in headroom plan
_GIANT_FLEET = {
    **_LIST_IMAGE,
    "spec": {
        "app": {"deployment": "web", "replicas": {"min": 1, "max": 4}},
        "database": _LIST_IMAGE["spec"]["database"],
        "cache": {"instances": [{"name": "jobs", "use": "queue", "memory": "32Mi"}]},
        "queues": [
            {
                "name": "mail",
                "redis": "jobs",
                "listName": "bull:mail:wait",
                "image": "w:1",
                "replicas": {"min": 0, "max": 30},
                "load": {
                    "peakJobsPerSecond": 0.1,
                    "secondsPerJob": 0.05,
                    "concurrencyPerPod": 10000,
                },
            }
        ],
    },
}


# and 8 jobs/s of a day each on 1,000 pods of 10,000: its workers' row
_DAY_LONG_JOBS = copy.deepcopy(_GIANT_FLEET)
_DAY_LONG_JOBS["spec"]["queues"][0]["replicas"]["max"] = 1000
_DAY_LONG_JOBS["spec"]["queues"][0]["load"] |= {"peakJobsPerSecond": 8.0, "secondsPerJob": 86400}


@given(body=strategies.queue_load_profiles())
@example(body=_GIANT_FLEET)
@example(body=_DAY_LONG_JOBS)
@fuzz_settings(short=100)
def test_every_queue_load_is_refused_naming_a_field_or_plans_and_renders(body: Any) -> None:
    oracle.judge(body)


# prometheus/common model.ParseDuration, transliterated (facts, not code: its
# loop, its order of units and its range), as the reference the model is held to
_UNITS = {"ms": (7, 1), "s": (6, 1000), "m": (5, 60_000), "h": (4, 3_600_000)}
_UNITS |= {"d": (3, 86_400_000), "w": (2, 604_800_000), "y": (1, 31_536_000_000)}


def prometheus_parses(text: str) -> bool:
    if text == "0":
        return True
    if not text:
        return False
    rest, last, total_ns = text, 0, 0
    while rest:
        digits = re.match(r"[0-9]*", rest).group()  # type: ignore[union-attr]
        if not digits:
            return False
        rest = rest[len(digits) :]
        unit = re.match(r"[^0-9]*", rest).group()  # type: ignore[union-attr]
        rest = rest[len(unit) :]
        if not unit or unit not in _UNITS or _UNITS[unit][0] <= last:
            return False
        last = _UNITS[unit][0]
        mult_ns = _UNITS[unit][1] * 1_000_000
        value = int(digits)
        if value > (1 << 63) // mult_ns:
            return False
        total_ns += value * mult_ns
        if total_ns > (1 << 63) - 1:
            return False
    return True


def _within_headrooms_bounds(text: str) -> bool:
    """Headroom's own bounds on top of Prometheus' grammar (see headroom.api.prometheus)."""
    return len(text) <= prometheus.DURATION_MAX_LENGTH and all(
        len(d) <= prometheus.DURATION_DIGITS for d in re.findall(r"[0-9]+", text)
    )


@given(text=st.one_of(strategies.durations(), st.text(st.sampled_from("0123456789ymwdhs "))))
@example(text="106751d23h47m16s854ms")  # the longest duration there is: just in range
@example(text="106751d23h47m16s855ms")
@fuzz_settings(short=400)
def test_a_duration_is_accepted_exactly_when_prometheus_parses_it(text: str) -> None:
    accepted = prometheus.duration_problem(text) is None
    assert accepted == (prometheus_parses(text) and _within_headrooms_bounds(text)), text
    if accepted:  # and the CRD's pattern takes it too (its CEL sum: tests/e2e)
        assert re.fullmatch(prometheus.DURATION_PATTERN, text)
