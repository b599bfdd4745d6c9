"""How GitOps tools judge real profiles on the local cluster, computed with
their own libraries (gitopscheck: kstatus from sigs.k8s.io/cli-utils, the
gopher-lua runtime Argo CD runs gitops/argocd/.../health.lua in, cel-go with
the healthCheckExprs of gitops/flux/kustomization.yaml): every state a profile
goes through, as the operator leaves it.

``HEADROOM_UPDATE_GITOPS_TESTDATA=1`` writes the exported profiles into the
Argo CD check's testdata/ (the namespace renamed ``shop``); the conformance
test tests/conformance/test_gitops_checks.py runs the checks on them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import kube
import operator_process
import pytest
import yaml
from apps import credentials, named_app
from tests import gitopscheck, profiles

ARGO, FLUX = gitopscheck.ARGO, gitopscheck.FLUX
UPDATE = os.environ.get("HEADROOM_UPDATE_GITOPS_TESTDATA") == "1"
# state -> (kstatus, Argo CD, Flux healthCheckExprs)
EXPECTED = {
    "healthy": ("Current", "Healthy", "Current"),
    "rolling-out": ("InProgress", "Progressing", "InProgress"),
    "budget-refused": ("Failed", "Degraded", "Failed"),
    "app-missing": ("Failed", "Degraded", "Failed"),
    "generation-not-observed": ("InProgress", "Progressing", "InProgress"),
    "not-yet-reconciled": ("InProgress", "Progressing", "InProgress"),
}


@pytest.fixture(scope="module")
def checker() -> str:
    return gitopscheck.binary()


def _profile(namespace: str, name: str, **overrides: Any) -> dict[str, Any]:
    return profiles.base(
        name=name,
        namespace=namespace,
        **{"app.deployment": f"{name}-web", "database.host": f"{name}-db", **overrides},
    )


def _get(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return kube.get_json(kubectl, "scalingprofile", name, "-n", namespace)


def _condition(sp: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in sp["status"].get("conditions", []) if c["type"] == kind), {})


def _until(
    kubectl: kube.Kubectl, namespace: str, name: str, holds: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    def current() -> dict[str, Any] | None:
        sp = _get(kubectl, namespace, name)
        settled = sp["status"].get("observedGeneration") == sp["metadata"]["generation"]
        return sp if settled and holds(sp) else None

    return kube.wait_for(current, timeout=120, what=f"{name} in its state")


def _stalled(reason: str) -> Callable[[dict[str, Any]], bool]:
    return lambda sp: _condition(sp, "Stalled").get("reason") == reason


def test_every_state_reads_the_same_in_kstatus_argo_cd_and_flux(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    checker: str,
    namespace: str,
    pooler_agents: object,  # older's pool shrinks for refused's: its agents confirm it
) -> None:
    ns = namespace
    apps = ("healthy-web", "older-web", "refused-web")
    kube.apply(kubectl, credentials(ns), *(named_app(ns, a) for a in apps))
    states: dict[str, dict[str, Any]] = {}

    # Ready: every component rolled out
    kube.apply(kubectl, _profile(ns, "healthy"), namespace=ns)
    states["healthy"] = _until(
        kubectl, ns, "healthy", lambda sp: kube.condition(sp, "Ready") == "True"
    )

    # the operator has not acted on a new profile / on a change yet: what the
    # API server answers for them (server-side dry runs) before it does
    fresh = kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-",
        input=json.dumps(_profile(ns, "fresh")),
    )  # fmt: skip
    states["not-yet-reconciled"] = json.loads(fresh.stdout)
    changed = kubectl(
        "patch", "scalingprofile", "healthy", "-n", ns, "--type=merge", "--dry-run=server",
        "-o", "json", "-p", json.dumps({"spec": {"pooler": {"instances": 3}}}),
    )  # fmt: skip
    states["generation-not-observed"] = json.loads(changed.stdout)

    # its app's Deployment does not exist: an input a person must provide
    kube.apply(kubectl, _profile(ns, "app-missing"), namespace=ns)
    states["app-missing"] = _until(kubectl, ns, "app-missing", _stalled("AppDeploymentNotFound"))

    # the budget: two profiles share a server; a change to session mode whose 55
    # sessions (28 per pooler pod, 3 at peak) do not fit beside the other's minimum,
    # admitted at the same moment as another change (the webhook off), is refused
    shared = {"database.host": "shared-db"}
    kube.apply(kubectl, _profile(ns, "older", **shared), namespace=ns)
    _until(kubectl, ns, "older", lambda sp: kube.condition(sp, "Ready") == "True")
    small = {"app.replicas": {"min": 1, "max": 4}}
    kube.apply(kubectl, _profile(ns, "refused", **shared, **small), namespace=ns)
    _until(kubectl, ns, "refused", lambda sp: kube.condition(sp, "Ready") == "True")
    sessions = {
        "app.replicas": {"min": 1, "max": 5},
        "app.poolSizePerPod": 11,
        "pooler.poolMode": "session",
    }
    change = _profile(ns, "refused", **shared, **sessions)
    operator.without_admission(kubectl, lambda: kube.apply(kubectl, change, namespace=ns))
    states["budget-refused"] = _until(kubectl, ns, "refused", _stalled("BudgetExceeded"))

    # rolling out: a quota keeps the pooler's pods from being created
    with kube.fresh_namespace(kubectl) as quota_ns:
        quota = {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-pods", "namespace": quota_ns},
            "spec": {"hard": {"pods": "0"}},
        }
        kube.apply(kubectl, quota, credentials(quota_ns), named_app(quota_ns, "rolling-web"))
        kube.apply(kubectl, _profile(quota_ns, "rolling"), namespace=quota_ns)
        states["rolling-out"] = _until(
            kubectl,
            quota_ns,
            "rolling",
            lambda sp: _condition(sp, "Reconciling").get("status") == "True",
        )

    objects = [states[s] for s in EXPECTED]
    kstatus = gitopscheck.judge(checker, "kstatus", objects=objects)
    argo = gitopscheck.judge(checker, "argo-health", str(ARGO / "health.lua"), objects=objects)
    flux = gitopscheck.judge(checker, "flux-health", str(FLUX), objects=objects)
    got = {
        state: (k["status"], a["status"], f["status"])
        for state, k, a, f in zip(EXPECTED, kstatus, argo, flux, strict=True)
    }
    assert got == EXPECTED
    # a refusal says why, in every tool
    refused = list(EXPECTED).index("budget-refused")
    assert kstatus[refused]["message"].startswith("ConnectionBudget: spec.")
    assert argo[refused]["message"].startswith("BudgetExceeded: ConnectionBudget: spec.")
    if UPDATE:
        _write_testdata(states, namespaces={ns, states["rolling-out"]["metadata"]["namespace"]})


def _write_testdata(states: dict[str, dict[str, Any]], *, namespaces: set[str]) -> None:
    for state, obj in states.items():
        meta = obj["metadata"]
        for noise in ("managedFields", "uid", "resourceVersion"):
            meta.pop(noise, None)
        text = yaml.safe_dump(obj, sort_keys=False)
        for ns in namespaces:
            text = text.replace(ns, "shop")
        (ARGO / "testdata").mkdir(exist_ok=True)
        (ARGO / "testdata" / f"{state}.yaml").write_text(text)
