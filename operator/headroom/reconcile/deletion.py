"""A profile being deleted: in-use protection.

Every profile with ``spec.inUseProtection`` (the default) carries the
finalizer :data:`FINALIZER`. When it is deleted, the pass calls
:func:`settle`: while running pods that are not Headroom's read one of the
profile's binding Secrets (``env``/``envFrom``/a volume naming
``<profile>-binding``, a worker binding or a bucket's binding), the finalizer
stays, so the garbage collector leaves the binding and the pooler in place, and
``Deletable=False`` (reason ``InUse``) names the workloads; the pass looks again
every :data:`RECHECK_SECONDS` and removes the finalizer once none is left (the
app deleted with the profile included). ``spec.inUseProtection: false`` or the
annotation :data:`FORCE_ANNOTATION` ``"true"`` remove it at once.

The pods are listed (one request per look, only for profiles being deleted):
a reference to a Secret is not something a watch can select on, and caching
every pod of the cluster for the rare deletion would cost more than it saves.
Called by :mod:`headroom.reconcile.reconciler`; :func:`holders` is pure.
"""

from __future__ import annotations

from collections.abc import Iterable

from headroom.api import conditions
from headroom.planning import names
from headroom.reconcile import cluster_view, outcome

Obj = cluster_view.Obj
FINALIZER = "headroom.dev/in-use-protection"
FORCE_ANNOTATION = "headroom.dev/force-delete"
RECHECK_SECONDS = 5.0


def protected(body: Obj) -> bool:
    """Whether the profile wants the finalizer (``spec.inUseProtection``, default true)."""
    return (body.get("spec") or {}).get("inUseProtection", True) is not False


def forced(body: Obj) -> bool:
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return annotations.get(FORCE_ANNOTATION) == "true"


def _secrets_read(pod: Obj) -> set[str]:
    """Every Secret a pod's containers read, as environment or as a volume."""
    spec = pod.get("spec") or {}
    read: set[str] = set()
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for container in spec.get(group) or []:
            for source in container.get("envFrom") or []:
                read.add(str((source.get("secretRef") or {}).get("name", "")))
            for env in container.get("env") or []:
                ref = (env.get("valueFrom") or {}).get("secretKeyRef") or {}
                read.add(str(ref.get("name", "")))
    for volume in spec.get("volumes") or []:
        read.add(str((volume.get("secret") or {}).get("secretName", "")))
        for source in (volume.get("projected") or {}).get("sources") or []:
            read.add(str((source.get("secret") or {}).get("name", "")))
    read.discard("")
    return read


def _ours(pod: Obj, profile: str) -> bool:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return (
        labels.get("app.kubernetes.io/managed-by") == names.MANAGED_BY
        and labels.get(names.PROFILE_LABEL) == profile
    )


def _workload(pod: Obj) -> str:
    """Kind/name of what runs the pod: a Deployment for a ReplicaSet's pod
    (the ReplicaSet is named <deployment>-<pod-template-hash>), else its owner."""
    meta = pod.get("metadata") or {}
    owner = next((o for o in meta.get("ownerReferences") or [] if o.get("controller")), None)
    if owner is None:
        return f"Pod/{meta.get('name', '')}"
    kind, name = str(owner.get("kind", "")), str(owner.get("name", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash", "")
    if kind == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return f"Deployment/{name.removesuffix(f'-{template_hash}')}"
    return f"{kind}/{name}"


def holders(pods: Iterable[Obj], *, profile: str, bindings: frozenset[str]) -> dict[str, int]:
    """Workload (Kind/name) -> how many of its running pods read one of
    ``bindings``; Headroom's own pods (the profile's workers) never hold it."""
    found: dict[str, int] = {}
    for pod in pods:
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or _ours(pod, profile):
            continue
        if _secrets_read(pod) & bindings:
            workload = _workload(pod)
            found[workload] = found.get(workload, 0) + 1
    return dict(sorted(found.items()))


def binding_names(children: Iterable[str], *, profile: str, namespace: str) -> frozenset[str]:
    """The profile's binding Secrets among its children ("Kind/name"): the
    app's (named even when it is gone already), each queue's workers' and each
    bucket's."""
    app = names.ChildNames(profile, namespace).binding
    found = {app}
    for key in children:
        kind, _, name = key.partition("/")
        worker = name.startswith(f"{profile}-worker-") and name.endswith("-binding")
        if kind == "Secret" and (worker or name.startswith(f"{app}-")):
            found.add(name)
    return frozenset(found)


def message(held: dict[str, int], bindings: frozenset[str]) -> str:
    listed = ", ".join(
        f"{workload} ({count} pod{'s' if count != 1 else ''})" for workload, count in held.items()
    )
    return (
        f"deletion waits: {listed} read {', '.join(sorted(bindings))}; it completes once they "
        f"are gone (delete them, or annotate the profile {FORCE_ANNOTATION}=true to delete now)"
    )


async def settle(cluster: cluster_view.Cluster, body: Obj, *, key: str) -> outcome.Outcome | None:
    """A pass of a profile being deleted: None once the finalizer is gone
    (or was never there), else the outcome of waiting (a pass again after
    :data:`RECHECK_SECONDS`)."""
    meta = body["metadata"]
    if FINALIZER not in (meta.get("finalizers") or []):
        return None
    if protected(body) and not forced(body):
        bindings = binding_names(
            cluster.children(str(meta.get("uid", ""))),
            profile=str(meta["name"]),
            namespace=str(meta["namespace"]),
        )
        held = holders(
            await cluster.running_pods(str(meta["namespace"])),
            profile=str(meta["name"]),
            bindings=bindings,
        )
        if held:
            report = outcome.Report(cluster, body, key=key, on_inputs=lambda _: None)
            cond = conditions.Cond(conditions.DELETABLE, "False", "InUse", message(held, bindings))
            result = await report.finish([cond], keep_last=True)
            result.recheck_seconds = RECHECK_SECONDS
            return result
    await cluster.remove_finalizer(body, FINALIZER)
    return None


def finalizer_change(body: Obj) -> str:
    """ "add", "remove" or "" for a profile that is not being deleted."""
    present = FINALIZER in ((body.get("metadata") or {}).get("finalizers") or [])
    if protected(body) and not present:
        return "add"
    if present and not protected(body):
        return "remove"
    return ""
