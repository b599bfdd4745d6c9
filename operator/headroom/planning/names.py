"""The one home of every name and host of what a profile owns.

Every child object's name, the in-cluster host of every Service Headroom runs,
the replication slots its standbys use on the primary, the hosts of the
CloudNativePG Services it points the pools at, and the labels that mark a
child as Headroom's are decided here and nowhere else. :class:`ChildNames`
answers for one profile (``plan.names`` in builders, the reconcile pass, the
observers and the probes; ``ChildNames.of(profile)`` where there is no plan
yet); its ``*_long_names`` give the planner the names a user-chosen part ends
up in, so a profile whose children could not be created is refused at
admission, naming the field. Pure.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Protocol

# A Service name is a DNS label; so is any label value.
DNS_LABEL_MAX = 63
# A StatefulSet's pods carry controller-revision-hash=<name>-<10-char hash>, a
# label value, so the StatefulSet name itself must stay within 52 characters.
STATEFULSET_NAME_MAX = 52
# Every child carries both labels (builders.common); the operator's caches see
# only objects that carry them.
MANAGED_BY = "headroom"
PROFILE_LABEL = "headroom.dev/profile"
# The port of both poolers' Services (what the binding's URLs name).
POOLER_SERVICE_PORT = 5432
# The volumeClaimTemplate of the StatefulSets that keep data (Redis, the S3
# server): their PVCs are data-<statefulset>-<ordinal>.
DATA_VOLUME = "data"
# Replication slots Headroom makes on a primary start with this.
SLOT_PREFIX = "headroom_"
# The database server a profile writes to, among those whose metrics it reads.
PRIMARY_SERVER = "primary"
_SLOT = re.compile(r"^[a-z0-9_]{1,63}$")  # Postgres: lower case, digits, underscore


class _Profile(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def namespace(self) -> str: ...


@dataclass(frozen=True)
class LongName:
    name: str
    what: str  # e.g. "Service", for the message
    limit: int

    @property
    def too_long(self) -> bool:
        return len(self.name) > self.limit


def service_host(service: str, namespace: str) -> str:
    """The in-cluster DNS name of a Service."""
    return f"{service}.{namespace}.svc"


def selector_labels(profile: str, *, component: str, app_name: str) -> dict[str, str]:
    """Labels a workload selects its pods by; stable for the life of the object."""
    return {
        "app.kubernetes.io/name": app_name,
        "app.kubernetes.io/instance": profile,
        "app.kubernetes.io/component": component,
    }


def labels(profile: str, *, app_deployment: str, component: str, app_name: str) -> dict[str, str]:
    """The standard labels of every child, and the two that mark it as ours."""
    result = {
        **selector_labels(profile, component=component, app_name=app_name),
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": app_deployment,
        PROFILE_LABEL: profile,
    }
    if len(app_deployment) > DNS_LABEL_MAX:
        # a Deployment name may be longer than a label value can be
        del result["app.kubernetes.io/part-of"]
    return result


def resolved_host(host: str, namespace: str) -> str:
    """A host the profile names (its primary), as a pod in ``namespace`` resolves
    it: a short name is a Service of that namespace."""
    return host if "." in host else service_host(host, namespace)


@dataclass(frozen=True)
class ChildNames:
    """The names of one profile's children (``profile``: its metadata.name)."""

    profile: str
    namespace: str

    @classmethod
    def of(cls, profile: _Profile) -> ChildNames:
        return cls(profile.name, profile.namespace)

    # -- the write pooler (PgBouncer): Deployment, PDB and NetworkPolicy share a name

    @property
    def pooler(self) -> str:
        return f"{self.profile}-pooler"

    @property
    def pooler_config(self) -> str:
        return f"{self.profile}-pooler-config"

    @property
    def pooler_auth(self) -> str:
        return f"{self.profile}-pooler-auth"

    @property
    def pooler_state(self) -> str:
        """The ConfigMap each write pooler pod's agent reports what it runs into
        (a key per pod: the config it loaded, its server connections)."""
        return f"{self.profile}-pooler-state"

    @property
    def pooler_agent(self) -> str:
        """The ServiceAccount, Role and RoleBinding of the write pooler's agent
        (it reads the pooler's ConfigMap and writes its own report)."""
        return self.pooler

    @property
    def pooler_service(self) -> str:
        """The read/write endpoint (also the CloudNativePG Pooler's name)."""
        return f"{self.profile}-pooler-rw"

    @property
    def pooler_host(self) -> str:
        return service_host(self.pooler_service, self.namespace)

    @property
    def pooler_endpoint(self) -> str:
        return f"{self.pooler_host}:{POOLER_SERVICE_PORT}"

    # -- the read pooler (read replicas): Deployment and Service share a name

    @property
    def read_pooler(self) -> str:
        return f"{self.profile}-pooler-ro"

    @property
    def read_pooler_config(self) -> str:
        return f"{self.profile}-pooler-ro-config"

    @property
    def read_pooler_auth(self) -> str:
        return f"{self.profile}-pooler-ro-auth"

    @property
    def read_pooler_state(self) -> str:
        """The ConfigMap each read pooler pod's agent reports what it runs into
        (as :attr:`pooler_state` for the write pooler)."""
        return f"{self.profile}-pooler-ro-state"

    @property
    def read_pooler_agent(self) -> str:
        """The ServiceAccount, Role and RoleBinding of the read pooler's agent
        (it reads the read pooler's ConfigMap and writes its own report)."""
        return self.read_pooler

    @property
    def read_pooler_service(self) -> str:
        """The read endpoint (also the CloudNativePG read Pooler's name)."""
        return self.read_pooler

    @property
    def read_pooler_host(self) -> str:
        return service_host(self.read_pooler_service, self.namespace)

    @property
    def read_pooler_endpoint(self) -> str:
        return f"{self.read_pooler_host}:{POOLER_SERVICE_PORT}"

    # -- the hot standbys (readReplicas mode streaming)

    @property
    def standbys(self) -> str:
        """The standbys' StatefulSet and headless Service."""
        return f"{self.profile}-standby"

    @property
    def standby_config(self) -> str:
        return f"{self.standbys}-config"

    def standby_host(self, ordinal: int) -> str:
        """The stable DNS name of standby ``ordinal`` (its StatefulSet pod)."""
        return f"{self.standbys}-{ordinal}.{service_host(self.standbys, self.namespace)}"

    def slot(self, ordinal: int) -> str:
        """The physical replication slot of standby ``ordinal`` on the primary."""
        name = f"{SLOT_PREFIX}{self.profile.replace('-', '_')}_{ordinal}"
        if not _SLOT.match(name):
            raise ValueError(f"slot name {name!r} is not a Postgres slot name (a-z, 0-9, _; 63)")
        return name

    @property
    def slot_prefix(self) -> str:
        """``headroom_<profile>_<namespace hash>_``: the slots of this profile's
        standbys (ordinal appended), distinct for same-named profiles of two
        namespaces on one primary, and within Postgres' 63 characters."""
        digest = hashlib.sha256(self.namespace.encode()).hexdigest()[:6]
        return f"{SLOT_PREFIX}{self.profile.replace('-', '_')}_{digest}_"

    # -- the binding and the app's autoscaling

    @property
    def binding(self) -> str:
        """The Secret the app consumes (servicebinding.io)."""
        return f"{self.profile}-binding"

    @property
    def app_autoscaler(self) -> str:
        """The app's HPA and PDB (also its PodMonitor)."""
        return f"{self.profile}-app"

    # -- Redis, per instance

    def redis(self, instance: str) -> str:
        """The Redis StatefulSet, its client Service, PDB and NetworkPolicy."""
        return f"{self.profile}-redis-{instance}"

    def redis_headless(self, instance: str) -> str:
        return f"{self.redis(instance)}-headless"

    def redis_config(self, instance: str) -> str:
        return f"{self.redis(instance)}-config"

    def redis_auth(self, instance: str) -> str:
        return f"{self.redis(instance)}-auth"

    def redis_agent(self, instance: str) -> str:
        """The ServiceAccount, Role and RoleBinding of the Redis pods' agent
        (it reads and watches the instance's ConfigMap, nothing else)."""
        return self.redis(instance)

    def redis_host(self, instance: str) -> str:
        return service_host(self.redis(instance), self.namespace)

    def redis_headless_host(self, instance: str) -> str:
        """The domain of the Redis pods' own names."""
        return service_host(self.redis_headless(instance), self.namespace)

    def redis_pod_host(self, instance: str, ordinal: int) -> str:
        return f"{self.redis(instance)}-{ordinal}.{self.redis_headless_host(instance)}"

    def redis_data_claim(self, instance: str, ordinal: int) -> str:
        """The PVC of Redis pod ``ordinal`` (persistence)."""
        return f"{DATA_VOLUME}-{self.redis(instance)}-{ordinal}"

    def sentinel(self, instance: str) -> str:
        """The Sentinel StatefulSet, its client Service, PDB and NetworkPolicy."""
        return f"{self.redis(instance)}-sentinel"

    def sentinel_headless(self, instance: str) -> str:
        return f"{self.sentinel(instance)}-headless"

    def sentinel_headless_host(self, instance: str) -> str:
        """The domain of the Sentinel pods' own names."""
        return service_host(self.sentinel_headless(instance), self.namespace)

    def sentinel_pod_host(self, instance: str, ordinal: int) -> str:
        return f"{self.sentinel(instance)}-{ordinal}.{self.sentinel_headless_host(instance)}"

    # -- queue workers, per queue

    def worker(self, queue: str) -> str:
        """The worker Deployment, its HPA or ScaledObject (KEDA puts this name in a label)."""
        return f"{self.profile}-worker-{queue}"

    def worker_binding(self, queue: str) -> str:
        """The binding Secret the queue's workers consume (their own numbers)."""
        return f"{self.worker(queue)}-binding"

    def worker_trigger_auth(self, queue: str) -> str:
        """KEDA's TriggerAuthentication of the queue's Redis."""
        return f"{self.worker(queue)}-redis"

    # -- object storage

    def bucket_claim(self, bucket: str) -> str:
        """BucketClaim and BucketAccess of a COSI bucket."""
        return f"{self.profile}-{bucket}"

    def bucket_access_secret(self, bucket: str) -> str:
        """The Secret a COSI driver writes the bucket's credentials into."""
        return f"{self.profile}-bucket-{bucket}"

    def bucket_binding(self, bucket: str) -> str:
        """The bucket's own servicebinding.io ``type: s3`` Secret."""
        return f"{self.profile}-binding-{bucket}"

    @property
    def s3_server(self) -> str:
        """The builtin S3 server's StatefulSet, Service and NetworkPolicy."""
        return f"{self.profile}-s3"

    @property
    def s3_server_host(self) -> str:
        return service_host(self.s3_server, self.namespace)

    @property
    def s3_root_keys(self) -> str:
        return f"{self.profile}-s3-root"

    @property
    def s3_app_keys(self) -> str:
        return f"{self.profile}-s3-app"

    @property
    def s3_config(self) -> str:
        return f"{self.profile}-s3-config"

    # -- the database servers' own metrics

    def pg_metrics(self, server: str) -> str:
        """postgres_exporter of one database server (PRIMARY_SERVER, or a
        replica's name: replica-0, standby-1, cnpg-ro): its Deployment,
        NetworkPolicy and PodMonitor. With CloudNativePG's metrics, the
        PodMonitor of the Cluster's pods has the primary's name."""
        base = f"{self.profile}-pg-metrics"
        return base if server == PRIMARY_SERVER else f"{base}-{server}"

    # -- monitoring

    @property
    def alert_rules(self) -> str:
        """The rule-file ConfigMap (no prometheus-operator)."""
        return f"{self.profile}-alert-rules"

    @property
    def alert_rules_key(self) -> str:
        """The rule file's key in that ConfigMap: unique across profiles, as many
        ConfigMaps may be mounted into one rules directory."""
        return f"{self.namespace}-{self.profile}.rules.yaml"

    @property
    def prometheus_rule(self) -> str:
        return f"{self.profile}-alerts"

    @property
    def app_pod_monitor(self) -> str:
        return f"{self.profile}-app"

    @property
    def dashboard(self) -> str:
        return f"{self.profile}-dashboard"

    # -- what the planner checks

    def redis_long_names(self, instance: str, *, sentinel: bool) -> list[LongName]:
        names = [
            LongName(self.redis(instance), "StatefulSet", STATEFULSET_NAME_MAX),
            LongName(self.redis_headless(instance), "Service", DNS_LABEL_MAX),
        ]
        if sentinel:
            names += [
                LongName(self.sentinel(instance), "StatefulSet", STATEFULSET_NAME_MAX),
                LongName(self.sentinel_headless(instance), "Service", DNS_LABEL_MAX),
            ]
        return names

    def worker_long_names(self, queue: str) -> list[LongName]:
        return [LongName(self.worker(queue), "ScaledObject", DNS_LABEL_MAX)]


# -- what CloudNativePG names (a Cluster's Services), for readReplicas mode cnpg


def cnpg_rw_service(cluster: str) -> str:
    return f"{cluster}-rw"


def cnpg_ro_host(cluster: str, namespace: str) -> str:
    return service_host(f"{cluster}-ro", namespace)
