"""Whether NetworkPolicies admit a pod's connection, by the rules of the
NetworkPolicy API (ingress side), for the e2e tests: the local control plane
runs no network plugin, so nothing enforces the policies there; this reads them
as a plugin would.

A target pod is isolated for ingress when some policy of its namespace selects
it and has Ingress among its policyTypes (absent: Ingress); then a connection
is admitted when some such policy has a rule whose ``from`` (empty: anyone)
has a peer matching the source and whose ``ports`` (empty: all) has the port
(a number, or a container port's name on the target; TCP by default).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Source:
    labels: Mapping[str, str]
    namespace: str
    namespace_labels: Mapping[str, str]


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    selector = selector or {}
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], source: Source, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # addresses, not pods
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != policy_namespace:
        return False
    return "podSelector" not in peer or selects(peer["podSelector"], source.labels)


def container_port(pod: Mapping[str, Any], name: str) -> int | None:
    for container in pod["spec"].get("containers", []):
        for port in container.get("ports") or []:
            if port.get("name") == name:
                return int(port["containerPort"])
    return None


def _port_matches(rule_port: Mapping[str, Any], port: int, target: Mapping[str, Any]) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    wanted = rule_port.get("port")
    if wanted is None:
        return True
    if isinstance(wanted, str):
        resolved = container_port(target, wanted)
        return resolved == port
    end = rule_port.get("endPort", wanted)
    return int(wanted) <= port <= int(end)


def admits(
    policies: Iterable[Mapping[str, Any]],
    *,
    source: Source,
    target: Mapping[str, Any],
    port: int,
) -> bool:
    """Whether ``source`` may open a TCP connection to ``port`` of pod ``target``."""
    namespace = target["metadata"]["namespace"]
    labels = target["metadata"].get("labels") or {}
    isolating = [
        p
        for p in policies
        if p["metadata"].get("namespace", namespace) == namespace
        and selects(p["spec"].get("podSelector"), labels)
        and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not isolating:
        return True
    for policy in isolating:
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from") or []
            if peers and not any(_peer_matches(peer, source, namespace) for peer in peers):
                continue
            ports = rule.get("ports") or []
            if not ports or any(_port_matches(p, port, target) for p in ports):
                return True
    return False
