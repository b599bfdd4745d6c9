"""REST resources: what a kind's URL path is, and the built-in Kubernetes
kinds the client knows without a discovery request.

Generic: the operator's own kind and the kinds of the engines it composes are
declared by the caller (:mod:`headroom.reconcile.watches`) and registered with
the client; whether a custom kind is served is learned from its CRD.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True)
class Resource:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{self.group}"

    def path(self, *, namespace: str | None = None, name: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name, safe='')}"
        return base


CONFIG_MAP = Resource("v1", "ConfigMap", "configmaps")
SECRET = Resource("v1", "Secret", "secrets")
SERVICE = Resource("v1", "Service", "services")
EVENT = Resource("v1", "Event", "events")
DEPLOYMENT = Resource("apps/v1", "Deployment", "deployments")
STATEFUL_SET = Resource("apps/v1", "StatefulSet", "statefulsets")
PDB = Resource("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets")
NETWORK_POLICY = Resource("networking.k8s.io/v1", "NetworkPolicy", "networkpolicies")
INGRESS = Resource("networking.k8s.io/v1", "Ingress", "ingresses")
HPA = Resource("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers")
LEASE = Resource("coordination.k8s.io/v1", "Lease", "leases")
PVC = Resource("v1", "PersistentVolumeClaim", "persistentvolumeclaims")
STORAGE_CLASS = Resource("storage.k8s.io/v1", "StorageClass", "storageclasses", False)
CRD = Resource(
    "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
)
VALIDATING_WEBHOOK = Resource(
    "admissionregistration.k8s.io/v1",
    "ValidatingWebhookConfiguration",
    "validatingwebhookconfigurations",
    False,
)
NAMESPACE = Resource("v1", "Namespace", "namespaces", False)
POD = Resource("v1", "Pod", "pods")
SERVICE_ACCOUNT = Resource("v1", "ServiceAccount", "serviceaccounts")
ROLE = Resource("rbac.authorization.k8s.io/v1", "Role", "roles")
ROLE_BINDING = Resource("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings")

BUILTIN: tuple[Resource, ...] = (
    CONFIG_MAP,
    SECRET,
    SERVICE,
    EVENT,
    DEPLOYMENT,
    STATEFUL_SET,
    PDB,
    NETWORK_POLICY,
    INGRESS,
    HPA,
    LEASE,
    PVC,
    STORAGE_CLASS,
    NAMESPACE,
    POD,
    SERVICE_ACCOUNT,
    ROLE,
    ROLE_BINDING,
    CRD,
    VALIDATING_WEBHOOK,
)
