"""The Helm chart renders objects the API server accepts: `helm template` of
charts/headroom (helm built from the Go module proxy by hack/build-helm.sh) is
applied with a server-side dry run, so every object is validated by the real
schemas; with the upstream prometheus-operator CRDs installed, the operator's
PodMonitor and PrometheusRule are validated too."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kube
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "headroom"
MONITORING_CRDS = [
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
]


@pytest.fixture(scope="module")
def helm() -> str:
    done = subprocess.run(
        [str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _template(helm: str, namespace: str, *args: str) -> list[dict[str, Any]]:
    done = subprocess.run(
        [helm, "template", "hr", str(CHART), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def _kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


@pytest.fixture
def monitoring_crds(kubectl: kube.Kubectl, upstream_crds_dir: Path) -> Iterator[None]:
    names = kube.install_crds(kubectl, [upstream_crds_dir / f for f in MONITORING_CRDS])
    try:
        yield
    finally:
        kube.uninstall_crds(kubectl, names)


def _dry_run(kubectl: kube.Kubectl, docs: list[dict[str, Any]]) -> str:
    out = kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=e2e",
        "-f",
        "-",
        input=yaml.safe_dump_all(docs),
    )
    return out.stdout


def test_chart_objects_pass_the_api_servers_validation(
    helm: str, kubectl: kube.Kubectl, namespace: str
) -> None:
    docs = _template(helm, namespace)
    # no monitoring API served: "auto" renders no PodMonitor / PrometheusRule
    assert {"Deployment", "ServiceAccount", "ClusterRole", "Service"} <= _kinds(docs)
    assert not _kinds(docs) & {"PodMonitor", "PrometheusRule"}
    out = _dry_run(kubectl, docs)
    assert "deployment.apps/hr serverside-applied (server dry run)" in out


def test_operator_podmonitor_and_rules_are_valid_when_prometheus_operator_is_installed(
    helm: str, kubectl: kube.Kubectl, namespace: str, monitoring_crds: None
) -> None:
    docs = _template(
        helm,
        namespace,
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--set",
        "metrics.podMonitor.labels.release=kps",
        "--set",
        "metrics.prometheusRule.labels.release=kps",
    )
    by_kind = {d["kind"]: d for d in docs}
    monitor, rule, deployment = (
        by_kind["PodMonitor"],
        by_kind["PrometheusRule"],
        by_kind["Deployment"],
    )
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert rule["metadata"]["labels"]["release"] == "kps"
    # the monitor selects the operator's pods and scrapes the port they name
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    ports = {
        p["name"] for c in deployment["spec"]["template"]["spec"]["containers"] for p in c["ports"]
    }
    assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
    # the rule carries the promtool-tested file unchanged
    shipped = yaml.safe_load((CHART / "files" / "operator-rules.yaml").read_text())
    assert rule["spec"] == shipped
    out = _dry_run(kubectl, [monitor, rule])
    assert "podmonitor.monitoring.coreos.com/hr serverside-applied (server dry run)" in out
    assert "prometheusrule.monitoring.coreos.com/hr serverside-applied (server dry run)" in out

    # a switch turns each off
    off = _template(
        helm,
        namespace,
        "--api-versions",
        "monitoring.coreos.com/v1",
        "--set",
        "metrics.podMonitor.enabled=false",
    )
    assert "PodMonitor" not in _kinds(off) and "PrometheusRule" in _kinds(off)
