"""Queue workers: a Deployment per queue, scaled on the queue's backlog by a KEDA
ScaledObject when KEDA is installed, or on CPU by an HPA when it is not.

Pure. The worker Deployment never carries ``spec.replicas``: KEDA or the HPA
owns that field, and writing it would fight them on every pass. Workers read
their own binding as environment; with a database CA in it, its key is also
mounted where the binding's direct URL looks for it (binding.CA_FILE).
"""

from __future__ import annotations

from collections.abc import Mapping

from headroom.builders import binding, common, redis, revision
from headroom.planning import credentials, planner

COMPONENT = "worker"
RUN_AS = 65532
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}  # an HPA needs a CPU request


def pod_selector(plan: planner.Plan, queue: planner.QueuePlan) -> dict[str, str]:
    return {
        **common.selector_labels(plan, component=COMPONENT, name="worker"),
        "headroom.dev/queue": queue.name,
    }


def _meta(plan: planner.Plan, queue: planner.QueuePlan, name: str) -> common.Obj:
    meta = common.metadata(plan, name=name, component=COMPONENT, app_name="worker")
    meta["labels"]["headroom.dev/queue"] = queue.name
    return meta


def _deployment(
    plan: planner.Plan, queue: planner.QueuePlan, *, reads: Mapping[str, str]
) -> common.Obj:
    selector = pod_selector(plan, queue)
    container: common.Obj = {
        "name": "worker",
        "image": queue.image,
        # The queue's own binding: its pool sizes, its Redis, QUEUE_NAME/_PREFIX.
        "envFrom": [{"secretRef": {"name": plan.names.worker_binding(queue.name)}}],
        "resources": {
            "requests": {**DEFAULT_REQUESTS, **queue.requests},
            **({"limits": dict(queue.limits)} if queue.limits else {}),
        },
        "securityContext": common.container_security_context(),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],  # noqa: S108 - pod-local
    }
    volumes: list[common.Obj] = [{"name": "tmp", "emptyDir": {}}]
    if binding.carries_ca(plan) and queue.database_pool_size:
        key = plan.app.binding_keys.get(binding.CA_KEY, binding.CA_KEY)
        volumes.append(
            {
                "name": "database-ca",
                "secret": {
                    "secretName": plan.names.worker_binding(queue.name),
                    "items": [{"key": key, "path": "ca.crt"}],
                },
            }
        )
        container["volumeMounts"].append(
            {"name": "database-ca", "mountPath": binding.CA_DIR, "readOnly": True}
        )
    if queue.command:
        container["command"] = list(queue.command)
    if queue.args:
        container["args"] = list(queue.args)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(plan, queue, plan.names.worker(queue.name)),
        "spec": {
            # no replicas: the autoscaler owns them
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": {
                        **common.labels(plan, component=COMPONENT, name="worker"),
                        **selector,
                    },
                },
                "spec": common.pod_spec(
                    uid=RUN_AS,
                    selector=selector,
                    # scale-down must not kill jobs in flight
                    grace_seconds=queue.grace_seconds,
                    containers=[container],
                    volumes=volumes,
                ),
            },
        },
    }
    # The binding reaches the workers as environment, read once at start: any
    # change to it (a password, a pool size) rolls them.
    return revision.stamp(deployment, reads)


def _keda(plan: planner.Plan, queue: planner.QueuePlan) -> list[common.Obj]:
    target = plan.redis_named(queue.redis)
    secret = plan.names.redis_auth(target.name)
    metadata = {
        "listName": queue.list_name,
        "listLength": str(queue.backlog_per_worker),
        "activationListLength": str(queue.activation_backlog),
        "databaseIndex": "0",
    }
    auth_refs = [{"parameter": "password", "name": secret, "key": credentials.REDIS_PASSWORD_KEY}]
    if target.sentinel_replicas:
        trigger_type = "redis-sentinel"
        metadata |= {
            "addresses": f"{plan.names.redis_host(target.name)}:{planner.SENTINEL_PORT}",
            "sentinelMaster": redis.MASTER_SET,
        }
        auth_refs.append(
            {"parameter": "sentinelPassword", "name": secret, "key": credentials.REDIS_PASSWORD_KEY}
        )
    else:
        trigger_type = "redis"
        metadata["address"] = f"{plan.names.redis_host(target.name)}:{planner.REDIS_PORT}"
    trigger_auth = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _meta(plan, queue, plan.names.worker_trigger_auth(queue.name)),
        "spec": {"secretTargetRef": auth_refs},
    }
    scaled_object = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(plan, queue, plan.names.worker(queue.name)),
        "spec": {
            "scaleTargetRef": common.deployment_ref(plan.names.worker(queue.name)),
            "minReplicaCount": queue.min_replicas,
            "maxReplicaCount": queue.max_replicas,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": trigger_type,
                    "metadata": metadata,
                    "authenticationRef": {"name": plan.names.worker_trigger_auth(queue.name)},
                }
            ],
        },
    }
    return [trigger_auth, scaled_object]


def _hpa(plan: planner.Plan, queue: planner.QueuePlan) -> common.Obj:
    return common.cpu_hpa(
        metadata=_meta(plan, queue, plan.names.worker(queue.name)),
        deployment=plan.names.worker(queue.name),
        min_replicas=queue.min_replicas,
        max_replicas=queue.max_replicas,
        cpu_utilization=queue.cpu_utilization,
        behavior={"scaleDown": {"stabilizationWindowSeconds": 300}},
    )


def build(
    plan: planner.Plan, queue: planner.QueuePlan, *, reads: Mapping[str, str]
) -> list[common.Obj]:
    """``reads``: what the workers read from their binding, with revisions
    (:func:`headroom.builders.binding.worker_reads`)."""
    scaler = _keda(plan, queue) if queue.scaler == "keda" else [_hpa(plan, queue)]
    return [_deployment(plan, queue, reads=reads), *scaler]
