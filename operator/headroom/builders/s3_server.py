"""The builtin storage provider's S3 server (``<profile>-s3``): one versitygw
per profile holding every ``builtin`` bucket of it. Pure.

- StatefulSet ``<profile>-s3`` (1 replica): init container ``prepare`` (the
  versitygw image) makes the data dirs on the PVC; ``versitygw`` serves S3 on
  7070 (posix backend and internal IAM on the PVC, admin API on 127.0.0.1:7071
  only, readiness on GET /health); sidecar ``agent`` (Headroom's image,
  ``python -m headroom.agent.bucket``) creates the app's non-root user, its
  buckets (owned by it) and their CORS, and is Ready only once it has;
- the PVC comes from the volumeClaimTemplate ``data``: with a ``Retain``
  bucket among the profile's builtin ones it is retained when the profile
  goes (the StatefulSet controller gives it no ownerReference), with only
  ``Delete`` ones it is deleted with the StatefulSet;
- Secret ``<profile>-s3-root`` (the server's root keys, read only by this pod)
  and ``<profile>-s3-app`` (the app's keys, what the binding carries);
- ConfigMap ``<profile>-s3-config`` (``buckets.json``, the agent's config);
- Service ``<profile>-s3`` (port 7070) and a NetworkPolicy that lets only the
  app's and the workers' pods reach it.
"""

from __future__ import annotations

from headroom.api import v1alpha1
from headroom.builders import common, revision
from headroom.planning import credentials, names, object_storage, planner, versitygw

COMPONENT = "object-storage"
APP_NAME = "versitygw"
CONFIG_DIR = "/etc/headroom-s3"
CONFIG_FILE = "buckets.json"
RUN_DIR = "/run/headroom"
AGENT_COMMAND = ("python", "-m", "headroom.agent.bucket")


def agent_config(
    server: versitygw.ServerPlan, keys: versitygw.ServerKeys
) -> versitygw.BucketServerConfig:
    return versitygw.BucketServerConfig(
        app_access_key=keys.app_access_key,
        buckets=server.buckets,
        region=server.region,
        ready_file=f"{RUN_DIR}/provisioned",
    )


def _secret_env(env_name: str, secret: str, key: str) -> common.Obj:
    return {"name": env_name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def build(
    plan: planner.Plan,
    server: versitygw.ServerPlan,
    *,
    keys: versitygw.ServerKeys,
    app_pod_selector: common.Obj | None = None,
) -> list[common.Obj]:
    base = plan.names.s3_server
    selector = common.selector_labels(plan, component=COMPONENT, name=APP_NAME)

    def meta(obj_name: str) -> common.Obj:
        return common.metadata(plan, name=obj_name, component=COMPONENT, app_name=APP_NAME)

    config = agent_config(server, keys).to_json()
    root_env = [
        _secret_env("ROOT_ACCESS_KEY", plan.names.s3_root_keys, credentials.ACCESS_KEY),
        _secret_env("ROOT_SECRET_KEY", plan.names.s3_root_keys, credentials.SECRET_KEY),
    ]
    data_mount = {"name": names.DATA_VOLUME, "mountPath": versitygw.DATA_DIR}
    prepare = {
        "name": "prepare",
        "image": server.image,
        "command": versitygw.init_command(),
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "32Mi"}},
        "securityContext": common.container_security_context(),
        "volumeMounts": [data_mount],
    }
    health = {"httpGet": {"path": versitygw.HEALTH_PATH, "port": "s3"}, "periodSeconds": 5}
    gateway = {
        "name": "versitygw",
        "image": server.image,
        "command": [versitygw.BINARY],
        "args": versitygw.server_args(),
        "env": [*root_env, {"name": "VGW_REGION", "value": server.region}],
        "ports": [{"name": "s3", "containerPort": versitygw.S3_PORT}],
        "readinessProbe": health,
        "livenessProbe": {**health, "initialDelaySeconds": 10, "failureThreshold": 6},
        "resources": {"requests": dict(server.requests), "limits": dict(server.limits)},
        "securityContext": common.container_security_context(),
        "volumeMounts": [data_mount, {"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108
    }
    agent = {
        "name": "agent",
        "image": plan.facts.agent_image,
        "command": [*AGENT_COMMAND, "--config", f"{CONFIG_DIR}/{CONFIG_FILE}"],
        "env": [
            *root_env,
            _secret_env("APP_SECRET_KEY", plan.names.s3_app_keys, credentials.SECRET_KEY),
        ],
        "readinessProbe": {
            "exec": {"command": ["test", "-e", f"{RUN_DIR}/provisioned"]},
            "periodSeconds": 5,
        },
        "resources": {"requests": {"cpu": "10m", "memory": "48Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": common.container_security_context(),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "run", "mountPath": RUN_DIR},
        ],
    }
    pod_annotations = {
        common.CONFIG_HASH_ANNOTATION: common.content_hash(config),
    }
    claim = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": server.size}},
    }
    if server.storage_class_name:
        claim["storageClassName"] = server.storage_class_name
    claim_meta: common.Obj = {"name": names.DATA_VOLUME, "labels": selector}
    if server.retain:  # the PVC outlives the profile, and says so
        claim_meta["annotations"] = {object_storage.RETAIN_ANNOTATION: "true"}
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(base),
        "spec": {
            "serviceName": base,
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": common.labels(plan, component=COMPONENT, name=APP_NAME),
                    "annotations": pod_annotations,
                },
                "spec": common.pod_spec(
                    uid=versitygw.RUN_AS,
                    selector=selector,
                    grace_seconds=30,
                    init_containers=[prepare],
                    containers=[gateway, agent],
                    volumes=[
                        {"name": "config", "configMap": {"name": plan.names.s3_config}},
                        {"name": "run", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                        {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                ),
            },
            "volumeClaimTemplates": [{"metadata": claim_meta, "spec": claim}],
            "persistentVolumeClaimRetentionPolicy": {
                "whenDeleted": "Retain" if server.retain else "Delete",
                "whenScaled": "Retain",
            },
        },
    }
    secrets = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(secret_name),
            "type": "Opaque",
            "data": common.secret_data(
                {credentials.ACCESS_KEY: access, credentials.SECRET_KEY: secret}
            ),
        }
        for secret_name, access, secret in (
            (plan.names.s3_root_keys, keys.root_access_key, keys.root_secret_key),
            (plan.names.s3_app_keys, keys.app_access_key, keys.app_secret_key),
        )
    ]
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta(plan.names.s3_config),
        "data": {CONFIG_FILE: config},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(base),
        "spec": {
            "selector": selector,
            "ports": [{"name": "s3", "port": versitygw.S3_PORT, "targetPort": "s3"}],
        },
    }
    peers = common.client_peers(plan, app_pod_selector)
    if server.public is not None:
        # browsers come through the ingress controller's pods
        namespace = server.public.ingress_namespace
        peers.append(
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
        )
    network_policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta(base),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"port": versitygw.S3_PORT}]}],
        },
    }
    # a pair made anew rolls the pod, so the agent sets the new app secret
    revision.stamp(statefulset, revision.server_keys(plan, keys))
    objects = [*secrets, config_map, statefulset, service, network_policy]
    if server.public is not None:
        objects.append(_ingress(plan, server.public, meta(base)))
    return objects


def _ingress(
    plan: planner.Plan, public: v1alpha1.BuiltinPublic, metadata: common.Obj
) -> common.Obj:
    """The public host to the server's Service. The Host header reaches the server
    unchanged, so the SigV4 signatures of URLs presigned for it verify."""
    spec: common.Obj = {
        "rules": [
            {
                "host": public.host,
                "http": {
                    "paths": [
                        {
                            "path": "/",
                            "pathType": "Prefix",
                            "backend": {
                                "service": {
                                    "name": plan.names.s3_server,
                                    "port": {"number": versitygw.S3_PORT},
                                }
                            },
                        }
                    ]
                },
            }
        ]
    }
    if public.ingress_class_name:
        spec["ingressClassName"] = public.ingress_class_name
    if public.tls_secret_name:
        spec["tls"] = [{"hosts": [public.host], "secretName": public.tls_secret_name}]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": metadata,
        "spec": spec,
    }
