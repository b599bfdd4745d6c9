"""Least privilege in manifests/rbac.yaml (the chart copies its rules)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from headroom.runtime.admission import registration

RBAC = Path(__file__).resolve().parents[2] / "manifests" / "rbac.yaml"


def _rules(kind: str) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    rules: list[dict[str, Any]] = next(d for d in docs if d["kind"] == kind)["rules"]
    return rules


def test_only_our_own_webhook_configuration_may_be_read_changed_or_deleted() -> None:
    admission = [
        r for r in _rules("ClusterRole") if "admissionregistration.k8s.io" in r["apiGroups"]
    ]
    assert all(r["resources"] == ["validatingwebhookconfigurations"] for r in admission)
    for rule in admission:
        if set(rule["verbs"]) - {"create"}:  # create cannot be limited by name
            assert rule["resourceNames"] == [registration.CONFIGURATION], rule
    verbs = {v for r in admission for v in r["verbs"]}
    assert verbs == {"create", "get", "patch", "delete"}  # no list/watch/update of others


def test_no_wildcards_and_claims_are_only_read() -> None:
    rules = _rules("ClusterRole") + _rules("Role")
    for rule in rules:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
    claims = [r for r in rules if "persistentvolumeclaims" in r["resources"]]
    assert [r["verbs"] for r in claims] == [["get"]]


def test_every_owned_kind_may_be_written_and_prometheuses_only_read() -> None:
    from headroom.reconcile import watches

    rules = _rules("ClusterRole")

    def verbs(group: str, resource: str) -> set[str]:
        return {
            v
            for r in rules
            if group in r["apiGroups"] and resource in r["resources"]
            for v in r["verbs"]
        }

    for owned in watches.ALL_OWNED:
        assert {"create", "patch", "delete", "watch"} <= verbs(
            owned.resource.group, owned.resource.plural
        ), owned.kind
    assert verbs("monitoring.coreos.com", "prometheuses") == {"get", "list", "watch"}
    assert verbs("", "namespaces") == {"get", "list", "watch"}
