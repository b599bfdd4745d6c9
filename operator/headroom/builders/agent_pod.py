"""The pieces of a pod where one of Headroom's config agents runs beside its
program (headroom.agent.pooler beside PgBouncer, headroom.agent.redis beside
redis-server): the in-memory run dir the program starts from, the init step
that fills it from the mounted ConfigMap, the sidecar with the only API
token of the pod, and the agent's ServiceAccount, Role (its ConfigMap read
and watched by name, nothing else unless the caller adds a rule) and
RoleBinding. Pure; used by builders.pgbouncer, builders.read_pooler and
builders.redis.
"""

from __future__ import annotations

from collections.abc import Callable

from headroom.builders import common
from headroom.planning import planner

SIDECAR = "agent"  # the container name of every agent sidecar
RUN_DIR = "/run/headroom"  # the emptyDir the agent writes and the program reads
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # noqa: S105 - a path
TOKEN_SECONDS = 3607  # what kubelet asks for an automounted token (rotated at 80%)


def run_mount() -> common.Obj:
    """The program's mount of the run dir (read-only: only the agent writes)."""
    return {"name": "run", "mountPath": RUN_DIR, "readOnly": True}


def resources() -> common.Obj:
    """Requests and limits of an agent container."""
    return {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}}


def volumes() -> list[common.Obj]:
    """The run dir (in memory, small) and the agent's token."""
    return [{"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}, token_volume()]


def token_volume() -> common.Obj:
    """The agent's service-account token, CA and namespace, as kubelet mounts
    an automounted token (the pod automounts none: only the agent gets it)."""
    return {
        "name": "agent-token",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "expirationSeconds": TOKEN_SECONDS}},
                {
                    "configMap": {
                        "name": "kube-root-ca.crt",
                        "items": [{"key": "ca.crt", "path": "ca.crt"}],
                    }
                },
                {
                    "downwardAPI": {
                        "items": [
                            {
                                "path": "namespace",
                                "fieldRef": {"fieldPath": "metadata.namespace"},
                            }
                        ]
                    }
                },
            ]
        },
    }


def copy_init(
    plan: planner.Plan,
    *,
    module: str,
    config_dir: str,
    config_file: str,
    args: list[str] | None = None,
    env: list[common.Obj] | None = None,
    mounts: list[common.Obj] | None = None,
) -> common.Obj:
    """``agent-init``: copies the mounted ``config_file`` into the run dir
    before the program starts (``python -m <module> --once``); ``args``,
    ``env`` and ``mounts``: what else the init step does (the read pooler's
    first measure of its replicas)."""
    container: common.Obj = {
        "name": "agent-init",
        "image": plan.facts.agent_image,
        "command": [
            "python",
            "-m",
            module,
            *(args or []),
            "--once",
            "--source",
            f"{config_dir}/{config_file}",
            "--output",
            f"{RUN_DIR}/{config_file}",
        ],
    }
    if env:
        container["env"] = env
    return container | {
        "resources": resources(),
        "securityContext": common.container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": config_dir, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
            *(mounts or []),
        ],
    }


def sidecar(
    plan: planner.Plan,
    *,
    module: str,
    args: list[str],
    env: list[common.Obj] | None = None,
    mounts: list[common.Obj] | None = None,
) -> common.Obj:
    """``agent``: ``python -m <module> <args> --token-dir TOKEN_DIR``, with
    the run dir, the token and ``mounts``; the only container with a token."""
    container: common.Obj = {
        "name": SIDECAR,
        "image": plan.facts.agent_image,
        "command": ["python", "-m", module, *args, "--token-dir", TOKEN_DIR],
    }
    if env:
        container["env"] = env
    container |= {
        "resources": resources(),
        "securityContext": common.container_security_context(),
        "volumeMounts": [
            {"name": "run", "mountPath": RUN_DIR},
            {"name": "agent-token", "mountPath": TOKEN_DIR, "readOnly": True},
            *(mounts or []),
        ],
    }
    return container


def reader_objects(
    plan: planner.Plan,
    *,
    name: str,
    config_map: str,
    meta: Callable[[str], common.Obj],
    more_rules: list[common.Obj] | None = None,
) -> list[common.Obj]:
    """The agent's ServiceAccount (no automounted token), its Role (get, list
    and watch of ``config_map`` only, plus ``more_rules``) and RoleBinding,
    all named ``name``, with the metadata ``meta`` makes for a name."""

    def named() -> common.Obj:
        return meta(name)

    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": named(),
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": named(),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": [config_map],
                    "verbs": ["get", "list", "watch"],
                },
                *(more_rules or []),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": named(),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": plan.namespace}],
        },
    ]
