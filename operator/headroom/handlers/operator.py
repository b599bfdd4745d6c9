"""kopf handlers: parse nothing, decide nothing, call the engine.

Every trigger (create, update, resume, the resync loop, and any event on a
child we own) runs the same :meth:`Engine.reconcile`. Errors from the kube layer
are mapped to kopf's retry semantics here and nowhere else.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeAlias

import kopf
from prometheus_client import start_http_server

from headroom import settings as settings_mod
from headroom.api import v1alpha1
from headroom.builders import common
from headroom.handlers import webhook
from headroom.kube import client as kube_client
from headroom.kube import errors
from headroom.reconcile import engine as engine_mod
from headroom.reconcile import metrics as metrics_mod

Logger: TypeAlias = logging.Logger | logging.LoggerAdapter[Any]
PROFILE = (v1alpha1.GROUP, v1alpha1.VERSION, v1alpha1.PLURAL)
_COMPOSED_CRDS = frozenset({"scaledobjects.keda.sh", "triggerauthentications.keda.sh"})
_OWNED_LABELS = {"app.kubernetes.io/managed-by": common.MANAGED_BY}
_CFG = settings_mod.Settings()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="headroom.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="headroom.dev", key="last-handled-configuration"
    )
    # No handler needs one; kopf removes this finalizer from profiles that
    # still carry it from earlier versions.
    settings.persistence.finalizer = "headroom.dev/finalizer"
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    if _CFG.webhook_enabled:
        settings.admission.server = webhook.server(_CFG)
        settings.admission.managed = "headroom.dev"
    metrics = metrics_mod.Metrics()
    if _CFG.metrics_port:
        start_http_server(_CFG.metrics_port, addr=_CFG.metrics_addr, registry=metrics.registry)
    memo.engine = engine_mod.Engine(
        kube_client.Kube.from_environment(),
        metrics,
        primary_check_seconds=_CFG.primary_check_seconds,
    )


def _run(memo: Any, body: kopf.Body | dict[str, Any], logger: Logger) -> None:
    raw = dict(body)
    engine: engine_mod.Engine = memo.engine
    try:
        outcome = engine.reconcile(raw)
        if outcome is None:
            return  # deleted meanwhile
    except errors.NotServedError as err:
        raise kopf.TemporaryError(str(err), delay=15) from err
    except errors.ApiError as err:
        if err.namespace_terminating:
            # a child event while the namespace is deleted: nothing left to repair
            logger.info("namespace is being deleted, not reconciling: %s", err.message)
            return
        if err.retriable:
            raise kopf.TemporaryError(str(err), delay=5) from err
        raise kopf.PermanentError(str(err)) from err
    for event in outcome.events:
        try:
            engine.kube.post_event(
                outcome.profile, type=event.type, reason=event.reason, message=event.message
            )
        except errors.ApiError as err:  # an Event is a courtesy; never fail the pass for it
            if not (err.namespace_terminating or err.status == 404):  # namespace gone
                logger.warning("could not record event %s: %s", event.reason, err.message)
    logger.debug("reconciled, ready=%s", outcome.ready)


def _profiles(memo: Any) -> list[dict[str, Any]]:
    """Every profile this operator watches (all namespaces, or its own); the engine
    skips those being deleted."""
    engine: engine_mod.Engine = memo.engine
    scopes: tuple[str | None, ...] = tuple(memo.get("namespaces") or ()) or (None,)
    found = []
    for namespace in scopes:
        found += engine.kube.list(v1alpha1.API_VERSION, v1alpha1.KIND, namespace=namespace)
    return found


def _reconcile_all(memo: Any, logger: Logger) -> None:
    """One pass over every profile; one failing profile does not stop the rest."""
    for profile in _profiles(memo):
        meta = profile["metadata"]
        try:
            _run(memo, profile, logger)
        except Exception as err:  # logged; the next resync tries again
            logger.warning("resync of %s/%s failed: %s", meta["namespace"], meta["name"], err)


async def _resync_forever(memo: Any, logger: Logger) -> None:
    while True:
        await asyncio.sleep(_CFG.resync_seconds)
        try:
            await asyncio.to_thread(_reconcile_all, memo, logger)
        except Exception as err:  # listing failed (API server restarting, ...): next round
            logger.warning("resync could not list profiles: %s: %s", type(err).__name__, err)


@kopf.on.startup()
async def start_resync(memo: Any, logger: Logger, **_: Any) -> None:
    """Repair drift every resync interval, also on kinds we do not watch (KEDA's).

    A kopf timer would do the same but makes kopf put a finalizer on every
    profile, and then deleting a profile (or its namespace) hangs whenever the
    operator is not running. Owner references already clean up the children.
    """
    memo.resync_task = asyncio.create_task(_resync_forever(memo, logger))


@kopf.on.cleanup()
async def stop_resync(memo: Any, **_: Any) -> None:
    task = memo.get("resync_task")
    if task is not None:
        task.cancel()


@kopf.on.resume(*PROFILE)
@kopf.on.create(*PROFILE)
@kopf.on.update(*PROFILE)
def reconcile_profile(body: kopf.Body, memo: Any, logger: Logger, **_: Any) -> None:
    _run(memo, body, logger)


def _on_child(body: kopf.Body, memo: Any, logger: Logger) -> None:
    """A child changed or vanished: reconcile its owner so drift is repaired now."""
    owners = [
        ref
        for ref in body.get("metadata", {}).get("ownerReferences") or []
        if ref.get("kind") == v1alpha1.KIND and ref.get("apiVersion") == v1alpha1.API_VERSION
    ]
    if not owners:
        return
    # The engine reads the profile itself and skips it when it is gone, being
    # deleted, or a new profile with the old name (the uid differs).
    owner = {
        "metadata": {
            "name": owners[0]["name"],
            "namespace": body["metadata"]["namespace"],
            "uid": owners[0].get("uid", ""),
        }
    }
    _run(memo, owner, logger)


@kopf.on.event("apps", "v1", "deployments", labels=_OWNED_LABELS)
@kopf.on.event("", "v1", "services", labels=_OWNED_LABELS)
@kopf.on.event("", "v1", "configmaps", labels=_OWNED_LABELS)
@kopf.on.event("", "v1", "secrets", labels=_OWNED_LABELS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=_OWNED_LABELS)
@kopf.on.event("apps", "v1", "statefulsets", labels=_OWNED_LABELS)
@kopf.on.event("networking.k8s.io", "v1", "networkpolicies", labels=_OWNED_LABELS)
@kopf.on.event("autoscaling", "v2", "horizontalpodautoscalers", labels=_OWNED_LABELS)
# No watch on KEDA's ScaledObjects/TriggerAuthentications: when their CRDs are
# deleted, kopf's watch-stream can reconnect before kopf notices the CRD is gone,
# and the 404 it gets stops the whole operator. Drift on those two kinds is
# repaired by the resync loop; KEDA coming and going by composed_crd_changed.
def child_event(body: kopf.Body, memo: Any, logger: Logger, type: str, **_: Any) -> None:
    if not type:
        return  # the initial listing: resume handlers cover it
    _on_child(body, memo, logger)


@kopf.on.event(
    "apiextensions.k8s.io",
    "v1",
    "customresourcedefinitions",
    when=lambda name, **_: name in _COMPOSED_CRDS,
)
def composed_crd_changed(memo: Any, logger: Logger, type: str, name: str, **_: Any) -> None:
    """KEDA (or another composed engine) was installed or removed: re-plan every
    profile now instead of at the next resync, so the switch converges quickly."""
    if not type:
        return
    engine: engine_mod.Engine = memo.engine
    engine.kube.forget_discovery()
    logger.info("CRD %s changed (%s); reconciling every profile", name, type)
    _reconcile_all(memo, logger)


def run(*, namespace: list[str] | None = None) -> int:
    """Run the operator until interrupted (``headroom run``)."""
    kopf.configure(verbose=False)
    kopf.run(
        clusterwide=not namespace,
        namespaces=namespace or (),
        memo=kopf.Memo(namespaces=tuple(namespace or ())),
        standalone=True,
        liveness_endpoint=f"http://{_CFG.health_addr}:{_CFG.health_port}/healthz",
    )
    return 0
