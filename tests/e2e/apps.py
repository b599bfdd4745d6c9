"""The app side of an e2e test: the app's Deployment and its database
credentials, as a user would have them before writing a ScalingProfile.

The Deployment's pods pass the restricted Pod Security Standard and become
Ready on the kwok nodes; Headroom reads it and never changes it.
"""

from __future__ import annotations

from typing import Any

APP_LABELS = {"app": "web"}
APP_NAME = "web"
CREDENTIALS = "db-credentials"


def named_app(namespace: str, name: str) -> dict[str, Any]:
    """Another app (one replica) under its own name and labels, for tests with
    several profiles in one namespace."""
    body = app_deployment(namespace, replicas=1)
    labels = {"app": name}
    body["metadata"].update(name=name, labels=labels)
    body["spec"]["selector"]["matchLabels"] = labels
    body["spec"]["template"]["metadata"]["labels"] = labels
    return body


def app_deployment(namespace: str, *, replicas: int = 2) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP_NAME, "namespace": namespace, "labels": dict(APP_LABELS)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(APP_LABELS)},
            "template": {
                "metadata": {"labels": dict(APP_LABELS)},
                "spec": {
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 1000,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "web",
                            "image": "registry.example/web:1",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]},
                            },
                        }
                    ],
                },
            },
        },
    }


def credentials(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS, "namespace": namespace},
        "stringData": {"username": "shop_app", "password": "p@ss:w/rd"},
    }
