"""ScalingProfile ``headroom.dev/v1alpha1``: the one schema, one module per
section of the spec.

Everything that reads a profile (the reconcile pass, the admission webhook, the
CLI) parses it with :func:`parse_profile`; the CRD is generated from these
models by :mod:`headroom.api.crd`. Field descriptions become ``kubectl explain``
text; ``x-kubernetes-validations`` carry the cross-field rules the API server
can check itself (CEL), the rest is enforced by the planner through the webhook.

Where things are: :mod:`.profile` (the object, its identity, ``parse_profile``),
:mod:`.app`, :mod:`.database` and :mod:`.read_replicas`, :mod:`.pooler`,
:mod:`.cache`, :mod:`.queues`, :mod:`.autoscaling`, :mod:`.network`,
:mod:`.storage`, :mod:`.alerts` (one per spec section); :mod:`.images` (every
default image), :mod:`.pods` (resources, volumes), :mod:`.references` (Secret
references) and :mod:`.schema` (base model, patterns, CEL helpers). Callers
use the names re-exported here: ``v1alpha1.parse_profile``, ``v1alpha1.Pooler``.
"""

from __future__ import annotations

from headroom.api.v1alpha1.alerts import (
    DURATION,
    PROM_LABEL,
    RESERVED_ALERT_LABELS,
    URL_PATH,
    Alerts,
    AppAlerts,
    AppMetrics,
    CacheAlerts,
    DatabaseAlerts,
    Duration,
    LabelValue,
    PoolerAlerts,
    QueueAlerts,
    Severity,
)
from headroom.api.v1alpha1.app import (
    CAPACITY_MIN_MESSAGE,
    App,
    Capacity,
    ReplicaRange,
)
from headroom.api.v1alpha1.autoscaling import (
    Autoscaling,
)
from headroom.api.v1alpha1.cache import (
    MIN_REDIS_MEMORY,
    Cache,
    CacheInstance,
    Persistence,
    Sentinel,
)
from headroom.api.v1alpha1.database import (
    DEFAULT_RESERVED_CONNECTIONS,
    Database,
)
from headroom.api.v1alpha1.images import (
    AGENT_IMAGE,
    PGBOUNCER_EXPORTER_IMAGE,
    PGBOUNCER_IMAGE,
    POSTGRES_IMAGE,
    REDIS_EXPORTER_IMAGE,
    REDIS_IMAGE,
    VERSITYGW_IMAGE,
)
from headroom.api.v1alpha1.network import (
    Network,
)
from headroom.api.v1alpha1.pods import (
    Resources,
)
from headroom.api.v1alpha1.pooler import (
    PGBOUNCER_VERSION,
    Pooler,
)
from headroom.api.v1alpha1.profile import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    ProfileError,
    ScalingProfile,
    ScalingProfileSpec,
    field_path,
    format_validation_error,
    parse_profile,
)
from headroom.api.v1alpha1.queues import (
    REDIS_KEY,
    Queue,
    WorkerReplicas,
)
from headroom.api.v1alpha1.read_replicas import (
    READ_REPLICAS_MAX,
    CnpgReplicas,
    ReadPooler,
    ReadReplicas,
    ReplicaHost,
    StandbyStorage,
    StreamingReplicas,
)
from headroom.api.v1alpha1.references import (
    CASecretRef,
    SecretKeyRef,
)
from headroom.api.v1alpha1.schema import (
    DNS_LABEL,
    DNS_SUBDOMAIN,
    ENV_NAME,
    HOST,
    IMAGE,
    NAME_MAX,
    PG_IDENTIFIER,
    SECRET_KEY,
    SECRET_KEY_MAX,
    SHORT_NAME,
    SHORT_NAME_MAX,
    ConfigKey,
    ConfigValue,
    Quantity,
    ResourceName,
)
from headroom.api.v1alpha1.storage import (
    BUCKET_NAME,
    BUCKET_PROVIDERS,
    CORS_ORIGIN,
    DEFAULT_MAX_UPLOAD_BYTES,
    ENDPOINT,
    HTTP_HEADER,
    MAX_UPLOAD_BYTES,
    REGION,
    Bucket,
    BucketCors,
    BucketCredentialsRef,
    BucketName,
    BuiltinBucket,
    BuiltinPublic,
    BuiltinVolume,
    CosiBucket,
    HttpMethod,
    S3Bucket,
    Storage,
    bucket_name_problem,
    env_name,
)

__all__ = [
    "AGENT_IMAGE",
    "API_VERSION",
    "BUCKET_NAME",
    "BUCKET_PROVIDERS",
    "CAPACITY_MIN_MESSAGE",
    "CORS_ORIGIN",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_RESERVED_CONNECTIONS",
    "DNS_LABEL",
    "DNS_SUBDOMAIN",
    "DURATION",
    "ENDPOINT",
    "ENV_NAME",
    "GROUP",
    "HOST",
    "HTTP_HEADER",
    "IMAGE",
    "KIND",
    "MAX_UPLOAD_BYTES",
    "MIN_REDIS_MEMORY",
    "NAME_MAX",
    "PGBOUNCER_EXPORTER_IMAGE",
    "PGBOUNCER_IMAGE",
    "PGBOUNCER_VERSION",
    "PG_IDENTIFIER",
    "PLURAL",
    "POSTGRES_IMAGE",
    "PROM_LABEL",
    "READ_REPLICAS_MAX",
    "REDIS_EXPORTER_IMAGE",
    "REDIS_IMAGE",
    "REDIS_KEY",
    "REGION",
    "RESERVED_ALERT_LABELS",
    "SECRET_KEY",
    "SECRET_KEY_MAX",
    "SHORT_NAME",
    "SHORT_NAMES",
    "SHORT_NAME_MAX",
    "SINGULAR",
    "URL_PATH",
    "VERSION",
    "VERSITYGW_IMAGE",
    "Alerts",
    "App",
    "AppAlerts",
    "AppMetrics",
    "Autoscaling",
    "Bucket",
    "BucketCors",
    "BucketCredentialsRef",
    "BucketName",
    "BuiltinBucket",
    "BuiltinPublic",
    "BuiltinVolume",
    "CASecretRef",
    "Cache",
    "CacheAlerts",
    "CacheInstance",
    "Capacity",
    "CnpgReplicas",
    "ConfigKey",
    "ConfigValue",
    "CosiBucket",
    "Database",
    "DatabaseAlerts",
    "Duration",
    "HttpMethod",
    "LabelValue",
    "Network",
    "Persistence",
    "Pooler",
    "PoolerAlerts",
    "ProfileError",
    "Quantity",
    "Queue",
    "QueueAlerts",
    "ReadPooler",
    "ReadReplicas",
    "ReplicaHost",
    "ReplicaRange",
    "ResourceName",
    "Resources",
    "S3Bucket",
    "ScalingProfile",
    "ScalingProfileSpec",
    "SecretKeyRef",
    "Sentinel",
    "Severity",
    "StandbyStorage",
    "Storage",
    "StreamingReplicas",
    "WorkerReplicas",
    "bucket_name_problem",
    "env_name",
    "field_path",
    "format_validation_error",
    "parse_profile",
]
