"""One validation layer that equals the API server's (issue 9): quantities,
container resources checked as a Pod's are, names, strict types, bounds, and
contradictions refused instead of clamped. The rejections shared with the e2e
tests are in ``tests/profiles.py`` (BAD); the quantity grammar is in
``test_quantity.py``."""

from __future__ import annotations

from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.planning import admission, planner
from tests import profiles

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("memory-0.5Gi", {"cache": profiles.instance(memory="0.5Gi")}),
    ("memory-64000k", {"cache": profiles.instance(memory="64000k")}),
    ("memory-exponent", {"cache": profiles.instance(memory="1e9")}),
    ("memory-as-integer", {"cache": profiles.instance(memory=1073741824)}),  # int-or-string
    ("size-as-integer", {"cache": profiles.instance(persistence={"size": 10**9})}),
    (
        "storage-class-subdomain",
        {"cache": profiles.instance(persistence={"storageClassName": "fast.ssd"})},
    ),
    (
        "requests-within-limits",
        profiles.worker_resources(requests={"cpu": "500m"}, limits={"cpu": 1}),
    ),
    (
        "requests-equal-limits",
        profiles.worker_resources(requests={"memory": "1Gi"}, limits={"memory": "1024Mi"}),
    ),
    ("quantity-petabytes", profiles.worker_resources(limits={"ephemeral-storage": "1P"})),
    (
        "extended-resource",
        profiles.worker_resources(requests={"nvidia.com/gpu": 1}, limits={"nvidia.com/gpu": 1}),
    ),
    (
        "huge-pages",
        profiles.worker_resources(
            requests={"hugepages-2Mi": "4Mi", "memory": "1Gi"},
            limits={"hugepages-2Mi": "4Mi", "memory": "1Gi"},
        ),
    ),
    (
        "capacity-min-at-ceiling",
        {
            "app.replicas": profiles._DELETE,
            "app.capacity": {"targetConcurrentUsers": 1000, "usersPerPod": 100, "minReplicas": 10},
        },
    ),
    ("min-pool-size-within-pool", {"pooler.parameters": {"min_pool_size": "27"}}),
]


@pytest.mark.parametrize(("case_id", "overrides"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_what_the_api_server_takes_is_admitted(case_id: str, overrides: dict[str, Any]) -> None:
    assert admission.review(profiles.base(**overrides)) is None


REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (
        "memory-too-small",
        {"cache": profiles.instance(memory="16Mi")},
        "spec.cache.instances[0].memory: must be at least 32Mi",
    ),
    ("memory-negative", {"cache": profiles.instance(memory="-1Gi")}, "must be at least 32Mi"),
    (
        "memory-fractional-bytes",
        {"cache": profiles.instance(memory="33554432.5")},
        "spec.cache.instances[0].memory: '33554432.5' must be a whole number of bytes",
    ),
    ("memory-as-float", {"cache": profiles.instance(memory=0.5)}, "spec.cache.instances[0].memory"),
    ("memory-as-bool", {"cache": profiles.instance(memory=True)}, "spec.cache.instances[0].memory"),
    ("memory-out-of-range", {"cache": profiles.instance(memory="8Ei")}, "out of range"),
    (
        "request-negative",
        profiles.worker_resources(requests={"cpu": "-1"}),
        "spec.queues[0].resources.requests.cpu: resource quantities must not be negative",
    ),
    (
        "extended-resource-fraction",
        profiles.worker_resources(
            requests={"nvidia.com/gpu": "0.5"}, limits={"nvidia.com/gpu": "0.5"}
        ),
        "requests.nvidia.com/gpu 0.5 must be a whole number",
    ),
    (
        "extended-resource-overcommitted",
        profiles.worker_resources(requests={"nvidia.com/gpu": "1"}, limits={"nvidia.com/gpu": "2"}),
        "requests.nvidia.com/gpu 1 must equal limits.nvidia.com/gpu 2",
    ),
    (
        "kubernetes-io-resource",
        profiles.worker_resources(requests={"kubernetes.io/foo": "1"}),
        "spec.queues[0].resources.requests.kubernetes.io/foo: resource names must be",
    ),
    (
        "huge-pages-alone",
        profiles.worker_resources(
            requests={"hugepages-2Mi": "4Mi"}, limits={"hugepages-2Mi": "4Mi"}
        ),
        "huge pages need a cpu or memory",
    ),
    (
        "huge-pages-not-a-multiple",
        profiles.worker_resources(
            requests={"hugepages-2Mi": "3Mi", "cpu": 1}, limits={"hugepages-2Mi": "3Mi"}
        ),
        "must be a whole multiple of the page size",
    ),
    (
        "huge-pages-bad-size",
        profiles.worker_resources(limits={"hugepages-2X": "4Mi"}),
        "resource names must be",
    ),
    (
        "too-many-resources",
        profiles.worker_resources(requests={f"example.com/r{i}": "1" for i in range(17)}),
        "spec.queues[0].resources.requests: Dictionary should have at most 16 items",
    ),
    (
        "secret-key-dot-dot",
        {"database.credentialsSecret": {"name": "db", "usernameKey": ".."}},
        "spec.database.credentialsSecret.usernameKey",
    ),
    ("pooler-parameter-key-huge", {"pooler.parameters": {"a" * 10**6: "1"}}, "at most 64"),
    ("pooler-parameter-value-huge", {"pooler.parameters": {"verbose": "1" * 10**6}}, "at most 256"),
    (
        "worker-command-huge",
        {
            **profiles.worker_resources(),
            "queues": [{**profiles.worker_resources()["queues"][0], "command": ["x" * 10**6]}],
        },
        "spec.queues[0].command[0]: String should have at most 4096 characters",
    ),
    (
        "list-name-too-long",
        {
            **profiles.worker_resources(),
            "queues": [{**profiles.worker_resources()["queues"][0], "listName": "l" * 129}],
        },
        "spec.queues[0].listName",
    ),
    (
        "port-as-string",
        {"database.port": "5432"},
        "spec.database.port: Input should be a valid integer",
    ),
    (
        "port-as-float",
        {"database.port": 5432.0},
        "spec.database.port: Input should be a valid integer",
    ),
    ("enabled-as-string", {"autoscaling": {"enabled": "false"}}, "spec.autoscaling.enabled"),
    ("enabled-as-number", {"autoscaling": {"enabled": 0}}, "spec.autoscaling.enabled"),
]


@pytest.mark.parametrize(("case_id", "overrides", "needle"), REFUSED, ids=[c[0] for c in REFUSED])
def test_what_the_api_server_would_refuse_is_refused_naming_the_field(
    case_id: str, overrides: dict[str, Any], needle: str
) -> None:
    message = admission.review(profiles.base(**overrides))
    assert message is not None, case_id
    assert needle in message
    assert "\n" not in message and len(message) < 2000  # one line, whatever the input


def test_a_map_key_with_a_newline_stays_on_one_line() -> None:
    message = admission.review(profiles.bad("resource-name-newline"))
    assert message is not None
    assert "spec.queues[0].resources.requests.'cpu\\nmemory': resource names" in message


def test_redis_memory_is_sized_from_the_exact_quantity() -> None:
    body = profiles.base(cache=profiles.instance(memory="0.5Gi"))
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.redis_named("jobs").maxmemory_bytes == 2**29 * 3 // 4
    as_int = profiles.base(cache=profiles.instance(memory=2**29))
    assert planner.plan(v1alpha1.parse_profile(as_int)).redis_named("jobs").memory == "536870912"


def test_a_capacity_floor_above_the_ceiling_is_not_clamped() -> None:
    body = profiles.base(
        **{
            "app.replicas": profiles._DELETE,
            "app.capacity": {"targetConcurrentUsers": 100, "usersPerPod": 250},  # minReplicas 2
        }
    )
    # the CRD's rule, and the model's (the same message)
    with pytest.raises(v1alpha1.ProfileError) as refused:
        v1alpha1.parse_profile(body)
    assert str(refused.value) == (
        "spec.app.capacity.minReplicas: "
        "2 is above the ceiling ceil(targetConcurrentUsers 100 / usersPerPod 250) = 1 pods"
    )


def test_min_pool_size_above_the_planned_pool_names_both_numbers() -> None:
    planned = planner.plan(v1alpha1.parse_profile(profiles.bad("min-pool-size-above-pool")))
    assert [p.field for p in planned.problems] == ["spec.pooler.parameters.min_pool_size"]
    assert "60 is above default_pool_size 27" in planned.problem_text()
