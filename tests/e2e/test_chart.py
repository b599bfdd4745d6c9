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
from tests import hack_scripts

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "headroom"
MONITORING_CRDS = [
    "monitoring.coreos.com_podmonitors.yaml",
    "monitoring.coreos.com_prometheusrules.yaml",
]


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
        "--force-conflicts",  # a dry run: whoever manages the CRD now is not the question
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


def _sync_chart() -> Any:
    return hack_scripts.load("sync_chart")


def test_manifests_are_the_chart_rendered(helm: str) -> None:
    """manifests/ is what `helm template headroom -n headroom-system` renders
    (`make manifests`): kubectl and Helm users install the same objects."""
    rendered = _sync_chart().render_manifests(helm)
    assert set(rendered) == {"operator.yaml", "rbac.yaml"}
    for name, text in rendered.items():
        assert (REPO / "manifests" / name).read_text() == text, f"manifests/{name}: make manifests"
    kustomization = yaml.safe_load((REPO / "manifests" / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {"namespace.yaml", *rendered}


def test_the_crd_is_a_kept_template(helm: str, kubectl: kube.Kubectl, namespace: str) -> None:
    docs = _template(helm, namespace)
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert len(crds) == 1
    committed = yaml.safe_load((REPO / "crds" / "headroom.dev_scalingprofiles.yaml").read_text())
    assert crds[0]["spec"] == committed["spec"]
    assert crds[0]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    out = _dry_run(kubectl, crds)
    assert "scalingprofiles.headroom.dev serverside-applied (server dry run)" in out
    off = _template(helm, namespace, "--set", "crds.install=false")
    assert "CustomResourceDefinition" not in _kinds(off)


@pytest.mark.parametrize(
    ("values", "refusal"),
    [
        ([], None),
        (["--set", "logFormat=json"], None),
        (["--set", "logFormat=xml"], "at '/logFormat': value must be one of 'text', 'json'"),
        (["--set", "replicas=0"], "at '/replicas': minimum: got 0, want 1"),
        (["--set", "webhook.port=70000"], "at '/webhook/port': maximum: got 70,000, want 65,535"),
        (["--set", "metrics.podMonitor.enabled=sometimes"], "at '/metrics/podMonitor/enabled'"),
        (["--set", "resyncSecond=5"], "additional properties 'resyncSecond' not allowed"),
    ],
)
def test_helm_lint_checks_values_against_the_schema(
    helm: str, values: list[str], refusal: str | None
) -> None:
    done = subprocess.run(
        [helm, "lint", str(CHART), *values], capture_output=True, text=True, check=False
    )
    if refusal is None:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "0 chart(s) failed" in done.stdout
    else:
        assert done.returncode != 0
        assert refusal in done.stdout + done.stderr
