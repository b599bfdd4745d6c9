"""Credentials on a real API server: a new value rolls exactly the pods that
read it, and the binding and the pods agree within seconds.

One profile with every kind of reader: the write pooler (PgBouncer and its
exporter), a Redis instance for the queue, its workers (the whole binding as
environment) and the builtin S3 server. The app's database password is
rotated, the builtin S3 server's app key is made anew (its Secret deleted),
and the pooler's generated stats password too; after each, the pods that
read the value are replaced and run the new template, and no other pod is.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import apps
import kube
import operator_process
from tests import profiles

NAME = "shop"
READER_COMPONENTS = ("pooler", "redis", "worker", "object-storage")


def _profile(namespace: str) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace)
    body["spec"]["pooler"]["instances"] = 1
    body["spec"]["cache"] = {"instances": [{"name": "jobs", "use": "queue", "memory": "64Mi"}]}
    body["spec"]["queues"] = [
        {
            "name": "emails",
            "redis": "jobs",
            "listName": "bull:emails:wait",
            "image": "registry.example/shop-worker:1.0",
            "replicas": {"min": 2, "max": 4},
            "databasePoolSize": 2,
        }
    ]
    body["spec"]["storage"] = {"buckets": [{"name": "uploads", "builtin": {}}]}
    return body


def _secret(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, str]:
    data = kube.get_json(kubectl, "secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _pods(kubectl: kube.Kubectl, namespace: str) -> dict[str, dict[str, Any]]:
    """The running pods of Headroom's readers, by uid."""
    found = kube.get_json(
        kubectl, "pods", "-n", namespace, "-l", f"app.kubernetes.io/instance={NAME}"
    )["items"]
    return {
        p["metadata"]["uid"]: p
        for p in found
        if p["metadata"]["labels"].get("app.kubernetes.io/component") in READER_COMPONENTS
        and not p["metadata"].get("deletionTimestamp")
    }


def _component(pod: dict[str, Any]) -> str:
    return str(pod["metadata"]["labels"]["app.kubernetes.io/component"])


def _workload_revisions(kubectl: kube.Kubectl, namespace: str) -> dict[str, str]:
    """Each reader component's template revision (what its pods must run)."""
    found: dict[str, str] = {}
    for kind in ("deployments", "statefulsets"):
        for obj in kube.get_json(
            kubectl, kind, "-n", namespace, "-l", f"app.kubernetes.io/instance={NAME}"
        )["items"]:
            component = obj["metadata"]["labels"]["app.kubernetes.io/component"]
            annotations = obj["spec"]["template"]["metadata"].get("annotations") or {}
            if component in READER_COMPONENTS:
                found[component] = annotations.get("headroom.dev/inputs-revision", "")
    return found


def _rolled(
    kubectl: kube.Kubectl, namespace: str, before: dict[str, dict[str, Any]], readers: set[str]
) -> bool:
    """Every pod of ``readers`` is new and runs its workload's template
    revision; every other pod is one of ``before``."""
    now = _pods(kubectl, namespace)
    wanted = _workload_revisions(kubectl, namespace)
    for uid, pod in now.items():
        component = _component(pod)
        if component in readers:
            held = (pod["metadata"].get("annotations") or {}).get("headroom.dev/inputs-revision")
            if uid in before or held != wanted[component]:
                return False
    counts = {c: sum(1 for p in now.values() if _component(p) == c) for c in readers}
    return all(counts.values())


def _untouched(
    kubectl: kube.Kubectl, namespace: str, before: dict[str, dict[str, Any]], readers: set[str]
) -> list[str]:
    """Pods of the other components that were replaced (none should be)."""
    now = _pods(kubectl, namespace)
    return sorted(
        f"{_component(pod)}/{pod['metadata']['name']}"
        for uid, pod in before.items()
        if _component(pod) not in readers and uid not in now
    )


def _rotate(
    kubectl: kube.Kubectl,
    namespace: str,
    *,
    change: Any,
    in_binding: Any,
    readers: set[str],
) -> tuple[float, dict[str, float]]:
    """Make the change; (seconds until the workers' binding shows it, seconds
    until the pods of each reader run the new template)."""
    before = _pods(kubectl, namespace)
    started = time.monotonic()
    change()
    worker_binding = f"{NAME}-worker-emails-binding"
    kube.wait_for(
        lambda: in_binding(_secret(kubectl, namespace, worker_binding)),
        timeout=30,
        interval=0.1,
        what="the new value in the workers' binding",
    )
    bound = time.monotonic() - started
    rolled = {}
    # the workers and the S3 server roll in seconds; the pooler waits for its
    # old pod to drain (minReadySeconds) before the next
    for component in sorted(readers, key=lambda c: c == "pooler"):
        kube.wait_for(
            lambda component=component: _rolled(kubectl, namespace, before, {component}),
            timeout=180,
            interval=0.2,
            what=f"the pods of {component} to roll",
        )
        rolled[component] = time.monotonic() - started
    assert _untouched(kubectl, namespace, before, readers) == []
    return bound, rolled


def test_a_new_credential_rolls_exactly_its_readers(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, apps.app_deployment(namespace), apps.credentials(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace,
        "--timeout=180s",
    )  # fmt: skip
    kube.wait_for(
        lambda: (
            {_component(p) for p in _pods(kubectl, namespace).values()} == set(READER_COMPONENTS)
        ),
        timeout=60,
        what="a pod of every reader",
    )
    timings = []

    # the app's database password rotates (its Secret is the user's)
    def new_password() -> None:
        kubectl(
            "patch", "secret", apps.CREDENTIALS, "-n", namespace, "--type=merge",
            "-p", '{"stringData": {"password": "r0tated-p@ss"}}',
        )  # fmt: skip

    timings.append(
        (
            "database password",
            _rotate(
                kubectl,
                namespace,
                change=new_password,
                in_binding=lambda b: "r0tated-p%40ss" in b["DATABASE_URL"],
                readers={"pooler", "worker"},
            ),
        )
    )

    # the builtin S3 server's app key pair is made anew
    old_key = _secret(kubectl, namespace, f"{NAME}-s3-app")["secretAccessKey"]
    timings.append(
        (
            "builtin S3 app key",
            _rotate(
                kubectl,
                namespace,
                change=lambda: kubectl("delete", "secret", f"{NAME}-s3-app", "-n", namespace),
                in_binding=lambda b: b.get("AWS_SECRET_ACCESS_KEY") not in (None, old_key),
                readers={"object-storage", "worker"},
            ),
        )
    )
    app_keys = _secret(kubectl, namespace, f"{NAME}-s3-app")
    binding = _secret(kubectl, namespace, f"{NAME}-binding")
    assert binding["AWS_SECRET_ACCESS_KEY"] == app_keys["secretAccessKey"]

    # the pooler's generated stats password is made anew: PgBouncer's userlist
    # and the exporter's DSN hold it; the workers do not
    old_stats = _secret(kubectl, namespace, f"{NAME}-pooler-auth")["stats-password"]
    timings.append(
        (
            "generated stats password",
            _rotate(
                kubectl,
                namespace,
                change=lambda: kubectl("delete", "secret", f"{NAME}-pooler-auth", "-n", namespace),
                # the workers' binding does not hold it: it is only the trigger's clock
                in_binding=lambda b: (
                    _secret(kubectl, namespace, f"{NAME}-pooler-auth").get("stats-password")
                    not in (None, old_stats)
                ),
                readers={"pooler"},
            ),
        )
    )
    for what, (bound, rolled) in timings:
        each = ", ".join(f"{c} {t:.1f} s" for c, t in rolled.items())
        print(f"{what}: in the binding after {bound:.2f} s; rolled: {each}")
