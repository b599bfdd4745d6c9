"""The ValidatingWebhookConfiguration that points the API server at the
webhook: built from the settings (a URL on 127.0.0.1 locally, a Service in a
cluster), registered by the leader with the CA bundle it trusts, removed when
admission is off. Called by :mod:`headroom.runtime.admission.lifecycle`.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from headroom import settings
from headroom.api import v1alpha1
from headroom.kube import apiserver, kinds

log = logging.getLogger(__name__)

CONFIGURATION = "headroom.dev"
WEBHOOK_NAME = "scalingprofile.headroom.dev"
PATH = "/validate/scalingprofile"


def trusts(configuration_obj: dict[str, Any] | None, cert_pem: bytes) -> bool:
    """Whether our registered configuration's caBundle holds ``cert_pem``."""
    for hook in (configuration_obj or {}).get("webhooks") or []:
        bundle = base64.b64decode((hook.get("clientConfig") or {}).get("caBundle") or "")
        if cert_pem.strip() in bundle:
            return True
    return False


async def registered(kube: apiserver.Kube) -> dict[str, Any] | None:
    return await kube.get(kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION)


def configuration(cfg: settings.Settings, ca_pem: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration pointing the API server at us."""
    bundle = base64.b64encode(ca_pem).decode()
    if cfg.webhook_service:
        namespace, name = cfg.webhook_service.split("/", 1)
        client: dict[str, Any] = {
            "service": {
                "namespace": namespace,
                "name": name,
                "port": cfg.webhook_port,
                "path": PATH,
            },
            "caBundle": bundle,
        }
    else:
        host = cfg.webhook_host or cfg.webhook_addr
        client = {"url": f"https://{host}:{cfg.webhook_port}{PATH}", "caBundle": bundle}
    return {
        "apiVersion": kinds.VALIDATING_WEBHOOK.api_version,
        "kind": kinds.VALIDATING_WEBHOOK.kind,
        "metadata": {"name": CONFIGURATION, "labels": {"app.kubernetes.io/name": "headroom"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client,
                "rules": [
                    {
                        "apiGroups": [v1alpha1.GROUP],
                        "apiVersions": [v1alpha1.VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [v1alpha1.PLURAL],
                        "scope": "Namespaced",
                    }
                ],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                # a profile being deleted is not reviewed: its finalizer can be
                # removed (or the force annotation set) while no replica serves
                "matchConditions": [
                    {
                        "name": "not-being-deleted",
                        "expression": "!has(object.metadata.deletionTimestamp)",
                    }
                ],
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 10,
            }
        ],
    }


async def register(cfg: settings.Settings, kube: apiserver.Kube, ca_pem: bytes) -> None:
    """Apply our configuration; replace one whose webhooks another manager set
    (kopf-era versions), so no stale entry points at a server that is gone."""
    wanted = configuration(cfg, ca_pem)
    applied = await kube.apply(wanted)
    names = [w.get("name") for w in applied.get("webhooks") or []]
    client = (applied.get("webhooks") or [{}])[0].get("clientConfig") or {}
    if names != [WEBHOOK_NAME] or ("url" in client and "service" in client):
        await kube.delete(
            kinds.VALIDATING_WEBHOOK,
            namespace=None,
            name=CONFIGURATION,
            uid=applied["metadata"]["uid"],
        )
        await kube.apply(wanted)


async def unregister(kube: apiserver.Kube) -> bool:
    """Delete our configuration if there is one; whether one was deleted."""
    found = await kube.get(kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION)
    if found is None:
        return False
    log.info("admission is off: removing ValidatingWebhookConfiguration %s", CONFIGURATION)
    return await kube.delete(
        kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION, uid=found["metadata"]["uid"]
    )
