"""When a desired child counts as different from the cached one."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from headroom.reconcile import compare


def _deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "p", "namespace": "d", "labels": {"a": "b"}},
        "spec": {
            "template": {
                "spec": {
                    "enableServiceLinks": False,
                    "containers": [
                        {
                            "name": "c",
                            "image": "i:1",
                            "resources": {"requests": {"cpu": "0.5", "memory": "64Mi"}},
                            "ports": [{"containerPort": 6432}],
                        }
                    ],
                }
            }
        },
    }


def _as_stored(desired: dict[str, Any]) -> dict[str, Any]:
    """What the API server keeps: defaults added, quantities canonical."""
    live = copy.deepcopy(desired)
    live["metadata"] |= {"uid": "u", "resourceVersion": "9", "generation": 1}
    pod = live["spec"]["template"]["spec"]
    pod["restartPolicy"] = "Always"
    container = pod["containers"][0]
    container["resources"]["requests"]["cpu"] = "500m"
    container["ports"][0]["protocol"] = "TCP"
    container["imagePullPolicy"] = "IfNotPresent"
    live["spec"]["replicas"] = 3  # an HPA's
    live["status"] = {"readyReplicas": 3}
    return live


def test_defaults_status_and_canonical_quantities_are_not_differences() -> None:
    desired = compare.stamp(_deployment())
    assert compare.difference(desired, _as_stored(desired)) is None


def test_an_edited_field_is_drift() -> None:
    desired = compare.stamp(_deployment())
    live = _as_stored(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "i:evil"
    assert compare.difference(desired, live) == "drift"


def test_a_removed_field_is_drift() -> None:
    desired = compare.stamp(_deployment())
    live = _as_stored(desired)
    del live["spec"]["template"]["spec"]["enableServiceLinks"]
    assert compare.difference(desired, live) == "drift"


def test_a_field_no_longer_wanted_is_a_change_via_the_hash() -> None:
    old = compare.stamp(_deployment())
    live = _as_stored(old)
    new = _deployment()
    del new["metadata"]["labels"]["a"]
    assert compare.difference(compare.stamp(new), live) == "changed"


def test_absent_is_absent() -> None:
    assert compare.difference(compare.stamp(_deployment()), None) == "absent"


def test_secret_data_must_match_exactly() -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "s"},
        "data": {"a": "MQ=="},
    }
    desired = compare.stamp(secret)
    live = copy.deepcopy(desired)
    assert compare.difference(desired, live) is None
    live["data"]["old"] = "Mg=="
    assert compare.difference(desired, live) == "data"
    assert compare.extra_secret_keys(desired, live) == ["old"]


@pytest.mark.parametrize(
    ("a", "b", "equal"),
    [
        ("0.5", "500m", True),
        ("1Gi", "1024Mi", True),
        ("1G", "1000M", True),
        ("1e3", "1k", True),
        ("64Mi", "64M", False),
        ("100m", "0.2", False),
        ("0.5Gi", "512Mi", True),
        ("1E", "1000P", True),
        ("25e-1", "2500m", True),
    ],
)
def test_quantities_compare_by_value(a: str, b: str, equal: bool) -> None:
    assert (compare.quantity_value(a) == compare.quantity_value(b)) is equal


def test_booleans_are_not_numbers() -> None:
    assert not compare.covers({"x": 1}, {"x": True})
    assert not compare.covers({"x": 0}, {"x": False})
    assert compare.covers({"x": 1.0}, {"x": 1})


def test_lists_must_keep_their_length() -> None:
    assert not compare.covers({"l": [1, 2, 3]}, {"l": [1, 2]})
    assert compare.covers({}, {"l": []})
