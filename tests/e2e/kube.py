"""Helpers for the e2e suite: polling, kubectl JSON, CRD install.

Everything goes through the ``kubectl`` fixture (see conftest.py), a callable
``kubectl(*args, input=None, check=True) -> CompletedProcess[str]`` that already
carries ``--kubeconfig``. Tests never sleep: they poll with :func:`wait_for`.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import yaml

T = TypeVar("T")


class Kubectl(Protocol):
    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


class KubectlError(subprocess.CalledProcessError):
    """A failed kubectl call; str() shows the command and kubectl's stderr."""

    def __str__(self) -> str:
        cmd = " ".join(str(a) for a in self.cmd)
        return f"`{cmd}` exited {self.returncode}:\n{(self.stderr or '').strip()}"


def kubectl_runner(base: Sequence[str]) -> Kubectl:
    """A :class:`Kubectl` that runs ``base`` (the binary and its global flags)
    with the given arguments; a failure raises :class:`KubectlError` when checked."""

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*base, *args], input=input, capture_output=True, text=True, timeout=300, check=False
        )
        if check and proc.returncode != 0:
            raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)
        return proc

    return run


def wait_for(
    predicate: Callable[[], T],
    *,
    timeout: float = 60.0,
    interval: float = 0.5,
    what: str,
) -> T:
    """Poll ``predicate`` until it returns something truthy and return that.

    An exception raised by the predicate counts as "not yet" (objects that do
    not exist yet, conflicts, ...); the last one is shown if the wait times out.
    Raises AssertionError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    last_exc: Exception | None = None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except Exception as exc:
            last_exc = exc
        if time.monotonic() >= deadline:
            detail = f"last error: {last_exc}" if last_exc is not None else f"last value: {last!r}"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; {detail}")
        time.sleep(interval)


def get_json(kubectl: Kubectl, *args: str) -> dict[str, Any]:
    """``kubectl get ARGS -o json`` parsed. Raises KubectlError (e.g. NotFound)."""
    proc = kubectl("get", *args, "-o", "json")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def can_i(kubectl: Kubectl, user: str, verb: str, resource: str, *, namespace: str) -> bool:
    """Whether ServiceAccount ``user`` may ``verb`` ``resource`` in ``namespace``,
    asked of the API server's authorizer with a SubjectAccessReview.

    ``resource`` is ``plural[.group]``, optionally ``/status`` or ``/scale`` for
    a subresource or ``/<name>`` for one named object. Unlike ``kubectl auth
    can-i`` this needs no discovery: a kind whose CRD is not installed (KEDA's,
    prometheus-operator's) is still judged by RBAC alone.
    """
    kind, _, rest = resource.partition("/")
    plural, _, group = kind.partition(".")
    attributes = {"namespace": namespace, "verb": verb, "group": group, "resource": plural}
    if rest:
        attributes["subresource" if rest in {"status", "scale"} else "name"] = rest
    sa_namespace = user.split(":")[2]  # system:serviceaccount:<namespace>:<name>
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{sa_namespace}"]
    review: dict[str, Any] = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": [*groups, "system:authenticated"],
            "resourceAttributes": attributes,
        },
    }
    proc = kubectl("create", "-o", "json", "-f", "-", input=json.dumps(review))
    return bool(json.loads(proc.stdout)["status"].get("allowed", False))


def exists(kubectl: Kubectl, *args: str) -> bool:
    """Whether ``kubectl get ARGS`` finds the object (False on NotFound)."""
    proc = kubectl("get", *args, "-o", "name", check=False)
    if proc.returncode == 0:
        return True
    if "NotFound" in proc.stderr or "not found" in proc.stderr:
        return False
    raise KubectlError(proc.returncode, proc.args, proc.stdout, proc.stderr)


def condition(obj: dict[str, Any], type_: str) -> str | None:
    """Status ("True"/"False"/"Unknown") of condition ``type_`` in obj.status, or None."""
    for cond in obj.get("status", {}).get("conditions") or []:
        if cond.get("type") == type_:
            status: str = cond.get("status")
            return status
    return None


def apply(kubectl: Kubectl, *objects: dict[str, Any], namespace: str | None = None) -> None:
    """Server-side apply the given objects (as one multi-document YAML)."""
    args = ["apply", "--server-side", "--field-manager=e2e", "--force-conflicts", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    kubectl(*args, input=yaml.safe_dump_all(objects))


def create(
    kubectl: Kubectl, obj: dict[str, Any], *, namespace: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``kubectl create`` one object (server-side strict field validation)."""
    args = ["create", "--validate=strict", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    return kubectl(*args, input=json.dumps(obj), check=check)


def _crd_docs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    docs = []
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                docs.append(doc)
    return docs


def install_crds(
    kubectl: Kubectl, paths: Sequence[str | Path], *, timeout: float = 60.0
) -> list[str]:
    """Server-side apply CRD files; wait until Established and served. Idempotent.

    Returns the CRD names (e.g. ``scaledobjects.keda.sh``).
    """
    docs = _crd_docs(paths)
    if not docs:
        raise ValueError(f"no CustomResourceDefinition in {list(paths)}")
    args = ["apply", "--server-side", "--field-manager=e2e", "--force-conflicts"]
    for path in paths:
        args += ["-f", str(path)]
    kubectl(*args)
    names = [d["metadata"]["name"] for d in docs]
    for doc in docs:
        name: str = doc["metadata"]["name"]
        # Established can precede discovery by a moment; also wait until kubectl
        # can resolve the resource, before a test tries to create one.
        resource = f"{doc['spec']['names']['plural']}.{doc['spec']['group']}"

        def established(name: str = name) -> bool:
            return condition(get_json(kubectl, "crd", name), "Established") == "True"

        def served(resource: str = resource) -> bool:
            return kubectl("get", resource, "-A", "-o", "name", check=False).returncode == 0

        wait_for(established, timeout=timeout, what=f"CRD {name} to be Established")
        wait_for(served, timeout=timeout, what=f"{resource} to be served")
    return names


def uninstall_crds(kubectl: Kubectl, names: Iterable[str], *, timeout: float = 120.0) -> None:
    """Delete CRDs by name and wait until they are gone (missing ones are fine)."""
    names = list(names)
    if not names:
        return
    kubectl("delete", "crd", *names, "--ignore-not-found", f"--timeout={int(timeout)}s")
    for name in names:

        def gone(name: str = name) -> bool:
            return not exists(kubectl, "crd", name)

        wait_for(gone, timeout=timeout, what=f"CRD {name} to be deleted")


@contextlib.contextmanager
def fresh_namespace(kubectl: Kubectl, *, timeout: float = 60) -> Iterator[str]:
    """Create a namespace enforcing the restricted Pod Security Standard.

    Yields once its ``default`` ServiceAccount exists (pods are rejected
    before that; the controller-manager creates it, within ``timeout``
    seconds); deleted without waiting afterwards.
    """
    name = f"e2e-{uuid.uuid4().hex[:10]}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
                "headroom.test/e2e": "true",
            },
        },
    }
    kubectl("create", "-f", "-", input=json.dumps(manifest))
    try:
        wait_for(
            lambda: exists(kubectl, "serviceaccount", "default", "-n", name),
            timeout=timeout,
            interval=0.2,
            what=f"ServiceAccount {name}/default",
        )
        yield name
    finally:
        kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
