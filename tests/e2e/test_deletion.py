"""In-use protection on a real API server: deleting a profile whose binding
running pods read keeps the binding and the pooler, with ``Deletable=False``
naming the workloads, and completes on its own once they are gone; the app and
its profile deleted by one ``kubectl delete -f`` both go; the opt-out and the
force annotation let go at once; ``helm uninstall`` keeps the CRD and the
profiles. The app's pods run on kwok nodes: they read nothing for real, but
the API server holds their specs as a kubelet would read them.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import kube
import operator_process
import yaml
from apps import app_deployment, credentials
from tests import profiles

REPO = Path(__file__).resolve().parents[2]
NAME = "shop"
FINALIZER = "headroom.dev/in-use-protection"
CHILDREN = [("secret", f"{NAME}-binding"), ("deployment", f"{NAME}-pooler")]


def _reading_app(namespace: str) -> dict[str, Any]:
    """The app as docs/api.md shows it: the binding as its environment."""
    body = app_deployment(namespace)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["envFrom"] = [{"secretRef": {"name": f"{NAME}-binding"}}]
    return body


def _ready_profile(kubectl: kube.Kubectl, namespace: str, **overrides: Any) -> dict[str, Any]:
    kube.apply(kubectl, _reading_app(namespace), credentials(namespace))
    body = profiles.base(name=NAME, namespace=namespace, **overrides)
    kube.apply(kubectl, body, namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=60s"
    )
    kube.wait_for(
        lambda: len(_running_app_pods(kubectl, namespace)) == 2,
        timeout=60,
        what="the app's two pods running",
    )
    return body


def _running_app_pods(kubectl: kube.Kubectl, namespace: str) -> list[dict[str, Any]]:
    pods = kube.get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]
    return [p for p in pods if p.get("status", {}).get("phase") == "Running"]


def _profile(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any] | None:
    if not kube.exists(kubectl, "scalingprofile", NAME, "-n", namespace):
        return None
    return kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)


def _gone(kubectl: kube.Kubectl, namespace: str, *, what: str, timeout: float = 60) -> None:
    kube.wait_for(
        lambda: _profile(kubectl, namespace) is None,
        timeout=timeout,
        what=f"the profile to be deleted ({what})",
    )
    for kind, name in CHILDREN:
        kube.wait_for(
            lambda kind=kind, name=name: not kube.exists(kubectl, kind, name, "-n", namespace),
            timeout=60,
            what=f"{kind}/{name} to be garbage-collected",
        )


def _deletable(profile: dict[str, Any] | None) -> dict[str, Any] | None:
    for cond in (profile or {}).get("status", {}).get("conditions") or []:
        if cond.get("type") == "Deletable":
            return dict(cond)
    return None


def _delete_held(kubectl: kube.Kubectl, namespace: str) -> dict[str, Any]:
    """Delete the profile without waiting, and return its Deletable condition
    once the deletion waits for the app that reads its binding."""
    kubectl("delete", "scalingprofile", NAME, "-n", namespace, "--wait=false")
    return kube.wait_for(
        lambda: _deletable(_profile(kubectl, namespace)),
        timeout=30,
        what="the deletion to wait for the app",
    )


def test_deleting_a_profile_whose_binding_is_read_waits_for_its_readers(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    _ready_profile(kubectl, namespace)
    profile = _profile(kubectl, namespace)
    assert profile is not None and FINALIZER in profile["metadata"]["finalizers"]

    held = _delete_held(kubectl, namespace)
    assert (held["status"], held["reason"]) == ("False", "InUse")
    assert "Deployment/web (2 pods)" in held["message"], held["message"]
    assert f"{NAME}-binding" in held["message"]
    # the binding and the pooler stay while the app runs: still there after
    # several of the operator's looks (every 5 s)
    profile = _profile(kubectl, namespace)
    assert profile is not None and profile["metadata"].get("deletionTimestamp")
    for kind, name in CHILDREN:
        assert kube.exists(kubectl, kind, name, "-n", namespace), f"{kind}/{name}"
    ready = kube.condition(profile, "Ready")
    assert ready == "False"

    kubectl("delete", "deployment", "web", "-n", namespace, "--wait=false")
    _gone(kubectl, namespace, what="its readers gone")


def test_the_app_and_its_profile_deleted_together_both_go(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    body = _ready_profile(kubectl, namespace)
    manifest = tmp_path / "app.yaml"
    manifest.write_text(yaml.safe_dump_all([_reading_app(namespace), credentials(namespace), body]))
    # what a GitOps prune or `kubectl delete -f` of the app's folder does; kubectl
    # waits for every object to be gone, the profile's finalizer included
    kubectl("delete", "-f", str(manifest), "--timeout=90s")
    _gone(kubectl, namespace, what="deleted with its app")
    assert not _running_app_pods(kubectl, namespace)


def test_the_opt_out_and_the_force_annotation_delete_at_once(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    _ready_profile(kubectl, namespace, inUseProtection=False)
    kube.wait_for(
        lambda: not (_profile(kubectl, namespace) or {})["metadata"].get("finalizers"),
        timeout=30,
        what="no finalizer on a profile that opts out",
    )
    kubectl("delete", "scalingprofile", NAME, "-n", namespace, "--wait=false")
    _gone(kubectl, namespace, what="opted out", timeout=20)
    assert len(_running_app_pods(kubectl, namespace)) == 2  # the app still runs

    _ready_profile(kubectl, namespace)
    _delete_held(kubectl, namespace)
    kubectl("annotate", "scalingprofile", NAME, "-n", namespace, "headroom.dev/force-delete=true")
    _gone(kubectl, namespace, what="forced", timeout=20)
    assert len(_running_app_pods(kubectl, namespace)) == 2


def test_helm_uninstall_keeps_the_crd_and_the_profiles(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    kubeconfig: str,
    namespace: str,
    helm: str,
) -> None:
    """The chart's CRD carries helm.sh/resource-policy: keep, so uninstalling
    the release leaves it and every profile in place."""
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, profiles.base(name=NAME, namespace=namespace), namespace=namespace)
    release, system = "keep-crd", f"{namespace}-system"
    env = {**os.environ, "KUBECONFIG": kubeconfig, "HELM_CACHE_HOME": str(Path(kubeconfig).parent)}

    def run_helm(*args: str) -> None:
        done = subprocess.run([helm, *args], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"

    kubectl("create", "namespace", system)
    try:
        chart = str(REPO / "charts" / "headroom")
        # its own names, so the session's RBAC is not touched; the CRD is taken over
        # no monitors: whether this cluster serves prometheus-operator's kinds
        # depends on the tests before; the CRD's keep policy does not
        off = ["--set", "metrics.podMonitor.enabled=false"]
        off += ["--set", "metrics.prometheusRule.enabled=false"]
        run_helm("install", release, chart, "-n", system, "--take-ownership", *off)
        crd = kube.get_json(kubectl, "crd", "scalingprofiles.headroom.dev")
        assert crd["metadata"]["annotations"]["meta.helm.sh/release-name"] == release
        run_helm("uninstall", release, "-n", system, "--wait")
        assert kube.exists(kubectl, "crd", "scalingprofiles.headroom.dev")
        assert kube.exists(kubectl, "scalingprofile", NAME, "-n", namespace)
        assert not kube.exists(kubectl, "deployment", release, "-n", system)
    finally:
        kubectl("delete", "namespace", system, "--wait=false", check=False)
        # the CRD as the session's operator installed it: no release claims it
        kubectl(
            "annotate",
            "crd",
            "scalingprofiles.headroom.dev",
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            check=False,
        )


def test_a_deleting_profile_is_let_go_while_no_webhook_answers(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    """The force path works with no replica serving admission (the operator
    down, or uninstalled with its webhook configuration left behind): the API
    server does not call the webhook for a profile being deleted."""
    _ready_profile(kubectl, namespace)
    _delete_held(kubectl, namespace)
    config = "validatingwebhookconfiguration/" + operator_process.WEBHOOK_CONFIG
    url = kube.get_json(kubectl, config)["webhooks"][0]["clientConfig"]["url"]

    def point_at(target: str) -> None:
        patch = [{"op": "replace", "path": "/webhooks/0/clientConfig/url", "value": target}]
        kubectl("patch", config, "--type=json", "-p", json.dumps(patch))

    point_at("https://127.0.0.1:1/validate")  # nothing listens there
    try:
        # a profile not being deleted is refused: the webhook does not answer
        spare = profiles.base(name="spare", namespace=namespace)
        refused = kube.create(kubectl, spare, namespace=namespace, check=False)
        assert refused.returncode != 0 and "failed calling webhook" in refused.stderr
        kubectl(
            "annotate", "scalingprofile", NAME, "-n", namespace, "headroom.dev/force-delete=true"
        )
        _gone(kubectl, namespace, what="forced with no webhook answering", timeout=20)
    finally:
        point_at(url)
