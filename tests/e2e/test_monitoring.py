"""Alerts end to end: with prometheus-operator's upstream CRDs installed, the
PrometheusRule, ServiceMonitor and PodMonitor Headroom renders are accepted by
the API server's schema validation and labelled from a ``Prometheus`` object
created here; ``AlertsSelected`` follows what that Prometheus selects. The
database's postgres_exporter (Deployment, NetworkPolicy, PodMonitor) is
accepted too, reads its login from the profile's Secret only, and
``DatabaseMetrics`` says when it is ready. Without the CRDs: the rule-file
ConfigMap (promtool accepts it) and its condition.

Nothing runs Prometheus here (the operator's output is what is checked); the
rules firing in a real Prometheus is tests/conformance' business.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kube
import operator_process
import yaml
from apps import app_deployment, credentials
from tests import profiles

NAME = "mon"
MONITORING_CRDS = (
    "monitoring.coreos.com_prometheuses.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_servicemonitors.yaml",
)
RULE_LABEL = {"role": "headroom-e2e"}


def _profile(namespace: str) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace, **{"database.readLimits": False})
    body["spec"]["alerts"] = {"labels": {"team": "e2e"}, "pooler": {"for": "1m"}}
    return body


def _prometheus(namespace: str, *, rule_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "Prometheus",
        "metadata": {"name": "k8s", "namespace": namespace},
        "spec": {
            "ruleSelector": {"matchLabels": rule_labels},
            # only namespaces labelled for monitoring
            "ruleNamespaceSelector": {"matchLabels": {"monitoring": "on"}},
            # null namespace selectors: the Prometheus' own namespace (the profile's)
            "podMonitorSelector": {},
            "serviceMonitorSelector": {"matchExpressions": [{"key": "team", "operator": "Exists"}]},
        },
    }


def _selected(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any] | None:
    sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
    return next(
        (c for c in sp.get("status", {}).get("conditions") or [] if c["type"] == "AlertsSelected"),
        None,
    )


def _wait_selected(
    kubectl: kube.Kubectl, namespace: str, status: str, reason: str
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = _selected(kubectl, namespace)
        if found and (found["status"], found["reason"]) == (status, reason):
            return found
        return None

    return kube.wait_for(reached, timeout=90, what=f"AlertsSelected={status} ({reason})")


def _database_exporter_accepted(
    kubectl: kube.Kubectl, namespace: str, alerts: dict[str, Any]
) -> None:
    """The primary's postgres_exporter: its pods run under the restricted Pod
    Security Standard with the login taken from the profile's Secret by
    reference, only the scrapers reach it, a PodMonitor scrapes it, and its
    rules are in the PrometheusRule."""
    name = f"{NAME}-pg-metrics"
    exporter = kube.get_json(kubectl, "deployment", name, "-n", namespace)
    pod = exporter["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    for key, secret_key in (("DATA_SOURCE_USER", "username"), ("DATA_SOURCE_PASS", "password")):
        assert env[key] == {
            "name": key,
            "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": secret_key}},
        }
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    policy = kube.get_json(kubectl, "networkpolicy", name, "-n", namespace)
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"port": 9187, "protocol": "TCP"}]}
    ]
    monitor = kube.get_json(kubectl, "podmonitors", name, "-n", namespace)
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    for alert in ("HeadroomDatabaseConnectionsHigh", "HeadroomQuerySlow", "HeadroomDatabaseDown"):
        assert alerts[alert]["labels"]["server"] == "primary"

    def ready() -> dict[str, Any] | None:
        sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
        conds = {c["type"]: c for c in sp.get("status", {}).get("conditions") or []}
        found = conds.get("DatabaseMetrics")
        return conds if found and found["reason"] == "ExportersReady" else None

    conds = kube.wait_for(ready, timeout=90, what="DatabaseMetrics=True (ExportersReady)")
    assert conds["StatementStats"]["reason"] == "NeedsMonitoringRole"


def test_rules_and_monitors_labelled_for_the_prometheus_and_the_configmap_without_it(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    upstream_crds_dir: Path,
    tmp_path: Path,
) -> None:
    crd_names = [
        f"{f.removeprefix('monitoring.coreos.com_').removesuffix('.yaml')}.monitoring.coreos.com"
        for f in MONITORING_CRDS
    ]
    before = [n for n in crd_names if kube.exists(kubectl, "crd", n)]
    installed = kube.install_crds(kubectl, [upstream_crds_dir / f for f in MONITORING_CRDS])
    try:
        kube.apply(
            kubectl,
            app_deployment(namespace),
            credentials(namespace),
            _prometheus(namespace, rule_labels=RULE_LABEL),
        )
        kube.apply(kubectl, _profile(namespace), namespace=namespace)

        # The Prometheus' ruleNamespaceSelector does not admit the namespace yet.
        selected = _wait_selected(kubectl, namespace, "False", "NotSelected")
        assert f"{namespace}/k8s: ruleNamespaceSelector does not admit" in selected["message"]
        assert "PodMonitor" not in selected["message"]  # those are selected

        # Accepted by the upstream CRDs' schema validation, all of them.
        rule = kube.get_json(kubectl, "prometheusrules", f"{NAME}-alerts", "-n", namespace)
        assert rule["metadata"]["labels"]["role"] == "headroom-e2e"
        alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
        waiting = alerts["HeadroomPoolerClientsWaiting"]
        assert waiting["for"] == "1m"
        assert (
            waiting["labels"] | {"namespace": namespace, "profile": NAME, "team": "e2e"}
            == (waiting["labels"])
        )
        assert f'namespace="{namespace}"' in waiting["expr"]
        monitor = kube.get_json(kubectl, "servicemonitors", f"{NAME}-pooler-rw", "-n", namespace)
        assert monitor["metadata"]["labels"]["team"] == "true"  # satisfies Exists
        assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
        service = kube.get_json(kubectl, "service", f"{NAME}-pooler-rw", "-n", namespace)
        assert (
            monitor["spec"]["selector"]["matchLabels"].items()
            <= service["metadata"]["labels"].items()
        )
        app = kube.get_json(kubectl, "podmonitors", f"{NAME}-app", "-n", namespace)
        assert app["spec"]["selector"] == {"matchLabels": {"app": "web"}}
        assert app["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9464
        assert not kube.exists(kubectl, "configmap", f"{NAME}-alert-rules", "-n", namespace)
        assert kube.exists(kubectl, "configmap", f"{NAME}-dashboard", "-n", namespace)
        _database_exporter_accepted(kubectl, namespace, alerts)

        # The namespace is labelled for monitoring: selected, naming the Prometheus.
        kubectl("label", "namespace", namespace, "monitoring=on")
        selected = _wait_selected(kubectl, namespace, "True", "Selected")
        assert f"PrometheusRule by Prometheus {namespace}/k8s" in selected["message"]

        # The Prometheus selects other labels: the rule follows.
        kube.apply(kubectl, _prometheus(namespace, rule_labels={"role": "other"}))

        def relabelled() -> bool:
            found = kube.get_json(kubectl, "prometheusrules", f"{NAME}-alerts", "-n", namespace)
            return found["metadata"]["labels"].get("role") == "other"

        kube.wait_for(relabelled, timeout=60, what="the PrometheusRule relabelled")
        sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
        assert kube.condition(sp, "ChildrenApplied") == "True"
    finally:
        kube.uninstall_crds(kubectl, installed)

    # prometheus-operator gone: the rule file in a ConfigMap, and the condition says so.
    selected = _wait_selected(kubectl, namespace, "False", "NoPrometheusOperator")
    assert f"ConfigMap {NAME}-alert-rules" in selected["message"]
    rules = kube.get_json(kubectl, "configmap", f"{NAME}-alert-rules", "-n", namespace)
    text = rules["data"][f"{namespace}-{NAME}.rules.yaml"]
    groups = yaml.safe_load(text)["groups"]
    assert {g["name"] for g in groups} >= {f"headroom.{namespace}.{NAME}.pooler"}
    promtool = shutil.which("promtool")
    if promtool:  # Debian's prometheus package (hack/install-deps.sh)
        path = tmp_path / "rules.yaml"
        path.write_text(text)
        check = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
    # CRDs another test left installed are installed again (install is idempotent)
    monitoring = [
        upstream_crds_dir / f
        for f, n in zip(MONITORING_CRDS, crd_names, strict=True)
        if n in before
    ]
    if monitoring:
        kube.install_crds(kubectl, monitoring)


def _alert_names(rule_file: str) -> set[str]:
    return {r["alert"] for g in yaml.safe_load(rule_file)["groups"] for r in g["rules"]}


def test_app_metrics_off_means_the_same_in_every_apply_plan_and_render(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    tmp_path: Path,
    pooler_agents: object,  # four profiles on one server: each arrival shrinks the others
) -> None:
    """`metrics: {enabled: false}` switches the app's metrics off and a null is
    the default, whether the profile comes by server-side apply, client-side
    apply, `headroom plan` or `headroom render`: the operator's rule file (no
    prometheus-operator here) holds the alerts render prints for the same body."""
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    served = kube.exists(kubectl, "crd", "prometheusrules.monitoring.coreos.com")
    cases = {
        "off-ssa": ("server", {"enabled": False}),
        "off-csa": ("client", {"enabled": False}),
        "null-ssa": ("server", None),
        "null-csa": ("client", None),
    }
    for name, (side, metrics) in cases.items():
        body = profiles.base(name=name, namespace=namespace, **{"database.readLimits": False})
        body["spec"]["alerts"] = {"app": {"metrics": metrics}}
        kubectl(
            "apply", f"--server-side={'true' if side == 'server' else 'false'}",
            "--field-manager=e2e", "-n", namespace, "-f", "-",
            input=yaml.safe_dump(body),
        )  # fmt: skip
        document = tmp_path / f"{name}.yaml"
        document.write_text(yaml.safe_dump(body))
        rendered = subprocess.run(
            [str(Path(sys.executable).parent / "headroom"), "render", "--rules", str(document)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        expected = _alert_names(rendered)
        off = metrics is not None
        assert ("HeadroomAppLatencyHigh" in expected) is not off, (name, sorted(expected))
        assert ("HeadroomAppErrorRatioHigh" in expected) is not off, (name, sorted(expected))

        def alerts(name: str = name) -> set[str] | None:
            # a PrometheusRule where another test left prometheus-operator's CRDs
            if served and kube.exists(
                kubectl, "prometheusrules", f"{name}-alerts", "-n", namespace
            ):
                rule = kube.get_json(kubectl, "prometheusrules", f"{name}-alerts", "-n", namespace)
                return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]}
            if kube.exists(kubectl, "configmap", f"{name}-alert-rules", "-n", namespace):
                found = kube.get_json(kubectl, "configmap", f"{name}-alert-rules", "-n", namespace)
                return _alert_names(found["data"][f"{namespace}-{name}.rules.yaml"])
            return None

        found = kube.wait_for(alerts, timeout=90, what=f"{name}'s alerting rules")
        assert found == expected, name
