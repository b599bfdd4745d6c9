"""ScalingProfile ``status``: written by the reconcile pass, shown by kubectl.

Kept as pydantic models so the CRD's status schema is generated like the spec's.
Nothing secret ever lands here: only sizes, names and conditions.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

# metav1.Condition's bounds; the reconcile pass cuts longer messages to fit.
TYPE_MAX = 316
REASON_MAX = 1024
MESSAGE_MAX = 32768
# host (253) + ".<namespace>.svc" + ":<port>", and "<namespace>/<name>".
ADDRESS_MAX = 512


class _Status(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class Condition(_Status):
    """Kubernetes-style condition (metav1.Condition)."""

    type: str = Field(max_length=TYPE_MAX, description="Ready, PoolerReady, ConnectionBudget, ...")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(max_length=REASON_MAX, description="One CamelCase word.")
    message: str = Field(default="", max_length=MESSAGE_MAX, description="For humans.")
    observed_generation: int = Field(default=0, ge=0)
    last_transition_time: str = Field(
        max_length=64, description="RFC 3339 time the status last changed."
    )


class SharedProfile(_Status):
    """Another profile whose pooler opens connections on the same server."""

    profile: str = Field(max_length=ADDRESS_MAX, description="namespace/name")
    server_connections: int


class HeldConnections(_Status):
    """What the poolers of the last applied plan may open on one server."""

    server: str = Field(max_length=ADDRESS_MAX, description="host:port of the server.")
    connections: int
    pooled: int | None = Field(
        default=None,
        ge=0,
        description="Of which its poolers' (max_db_connections x pods at the rollout peak); "
        "the rest it keeps (direct connections, probes, read fallback). While the pooler "
        "objects exist, the shares count them as they run instead.",
    )


class ReadBudgetStatus(_Status):
    """The read budget: the read pool against the smallest replica (any one
    replica must carry all of it when the others are out)."""

    mode: str = Field(max_length=16, description="external, cnpg or streaming.")
    replicas: int = Field(description="Replicas the read pool may use.")
    smallest: str = Field(
        max_length=ADDRESS_MAX, description="host:port of the replica the budget is sized to."
    )
    max_connections: int
    reserved: int = Field(description="superuser + reservedConnections + lag probes.")
    available: int
    client_demand: int = Field(description="Read connections every client could open at peak.")
    pooler_pods_at_peak: int
    default_pool_size: int
    max_db_connections: int = Field(description="Server connections per read-pooler pod.")
    max_client_conn: int
    server_connections: int = Field(
        description="Most server connections the read pool opens, all on one replica if "
        "it is the only one left."
    )
    margin: int
    when_all_lagging: str = Field(max_length=16, description="primary or refuse.")
    shared_with: list[SharedProfile] = Field(
        default_factory=list,
        description="Older profiles that read from (or write to) the smallest replica too; "
        "available is what they leave.",
    )


LOAD_TEXT_MAX = 1024


class LoadStatus(_Status):
    """spec.load against the plan, as ``headroom plan`` says it (see docs/api.md)."""

    offered: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="The peak: rate x time = connections busy.",
    )
    target: str | None = Field(
        default=None, max_length=LOAD_TEXT_MAX, description="The accepted chance of waiting."
    )
    app_pool: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="The app pod's pool against the peak: its chance of waiting.",
    )
    pooler_pool: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="Each pooler pod's server pool against the peak: its chance of waiting.",
    )
    read_pool: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="The app pod's read pool and each read-pooler pod's against the "
        "declared reads (spec.load.readSecondsPerRequest): their chance of waiting.",
    )
    first_bottleneck: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="How far the peak may grow before each limit breaks, first first.",
    )
    workers: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="Each queue's worker slots against its declared jobs (spec.queues[].load).",
    )
    redis_memory: str | None = Field(
        default=None,
        max_length=LOAD_TEXT_MAX,
        description="Each queue instance's maxmemory against what its queues' jobs hold at "
        "peak (spec.queues[].load.redis); the others' maxmemory, not estimated.",
    )


class BudgetStatus(_Status):
    """The connection budget the planner computed (see docs/api.md)."""

    summary: str = Field(
        max_length=64, description="'<server connections>/<available>' for kubectl get."
    )
    max_connections: int
    reserved: int = Field(description="superuser + other reserved connections.")
    available: int = Field(description="maxConnections minus every reservation.")
    app_pods_max: int
    client_connections_per_pod: int
    client_demand: int = Field(description="Connections every client could open at peak.")
    pooler_pods_at_peak: int = Field(description="Pooler pods during a rolling update.")
    default_pool_size: int
    reserve_pool_size: int
    max_db_connections: int = Field(description="Server connections per pooler pod.")
    max_client_conn: int = Field(description="Client connections per pooler pod.")
    server_connections: int = Field(description="Most server connections all pooler pods open.")
    margin: int = Field(description="available - serverConnections.")
    server: str = Field(
        default="", max_length=ADDRESS_MAX, description="host:port of the Postgres server."
    )
    shared_with: list[SharedProfile] = Field(
        default_factory=list,
        description="The other profiles on the same server and what each holds there; "
        "available is this profile's share.",
    )
    read_fallback: int = Field(
        default=0,
        description="Connections kept on the primary for the read pool when every replica "
        "is out (whenAllLagging: primary); not available to the write pool.",
    )
    read: ReadBudgetStatus | None = Field(default=None, description="The read side.")
    load: LoadStatus | None = Field(
        default=None, description="spec.load: the pools against the declared peak."
    )
    planned_since: str = Field(
        default="",
        max_length=40,
        description="When Headroom first planned this profile (RFC 3339, microseconds).",
    )
    held: list[HeldConnections] = Field(
        default_factory=list,
        max_length=64,
        description="What the last applied plan may open on each server (its poolers at "
        "the rollout peak, direct connections, lag probes, read fallback): while a change "
        "is refused it keeps running so, and is counted so in the shares of every other "
        "profile there.",
    )
    held_generation: int = Field(
        default=0, ge=0, description="The generation whose plan was last applied."
    )


class PoolerStatus(_Status):
    endpoint: str = Field(
        default="",
        max_length=ADDRESS_MAX,
        description="host:port of the read/write pooler Service.",
    )
    instances: int = 0
    ready_instances: int = 0


class BindingStatus(_Status):
    name: str = Field(
        max_length=253, description="Secret with the app's connection settings (servicebinding.io)."
    )


class ReadReplicaStatus(_Status):
    """One read replica as the operator last measured it (the read-pool agent
    in each read-pooler pod decides the data path on its own, every pollSeconds)."""

    name: str = Field(max_length=63)
    host: str = Field(max_length=ADDRESS_MAX)
    in_pool: bool = Field(description="Takes reads (within the lag bound, reachable).")
    lag_seconds: float | None = Field(default=None, description="Replay lag, whole seconds.")
    lag_bytes: int | None = Field(default=None, description="WAL bytes behind the primary.")
    reason: str = Field(max_length=1024, description="Why it is in or out.")


class ConvergedStatus(_Status):
    """What the last pass that found nothing to change read: a restarted
    operator confirms the profile from it instead of a full pass, and passes
    it fully later (after the profiles that need it)."""

    fingerprint: str = Field(
        max_length=64,
        description="A hash of the spec's generation and the resourceVersions of the "
        "children, the inputs and the cluster facts that pass read.",
    )
    inputs: list[Annotated[str, Field(max_length=ADDRESS_MAX)]] = Field(
        default_factory=list,
        max_length=64,
        description="The objects that pass read besides its children (Kind/namespace/name).",
    )


# status.recommendations[].kind: what a recommendation says, stable for tools to match on
RecommendationKind = Literal[
    "RaiseServerPool",  # raise the write pooler's default_pool_size: it fits the budget
    "ServerPoolOverBudget",  # the load needs more server connections than the budget
    "LowerServerPool",  # the server pool is at least twice what the load needs
    "MaxConnectionsLimit",  # the server's max_connections is what limits: the plan needs more
    "LowerAppPool",  # the app's client pool is mostly idle: lower spec.app.poolSizePerPod
    # the read load needs more than the smallest replica's room: raise its max_connections
    "ReadPoolOverBudget",
    # the app's read pool is mostly idle: lower spec.database.readReplicas.readPoolSizePerPod
    "LowerAppReadPool",
]


class RecommendationStatus(_Status):
    """One change a pooler's own figures call for (see docs/api.md, Recommendations)."""

    kind: RecommendationKind = Field(
        description="What it says: RaiseServerPool, ServerPoolOverBudget, LowerServerPool, "
        "MaxConnectionsLimit or LowerAppPool (the write pooler's figures); ReadPoolOverBudget "
        "or LowerAppReadPool (the read pooler's)."
    )
    field: str = Field(max_length=256, description="The spec field to change.")
    current: int = Field(ge=0, description="Its value in the plan that runs.")
    recommended: int = Field(ge=0, description="The value the observed load calls for.")
    why: str = Field(max_length=LOAD_TEXT_MAX, description="The figures behind it, and the budget.")
    confidence: Literal["low", "medium", "high"] = Field(
        description="high: a measured wait the averages cannot explain, or averages over "
        "400+ transactions; medium: 25+; low: fewer."
    )


class TuningStatus(_Status):
    """What spec.pooler.autoTune applied, and when (for its bound on changes per hour)."""

    default_pool_size: int = Field(ge=1, description="The write pooler's tuned pool size.")
    changes: list[Annotated[str, Field(max_length=40)]] = Field(
        default_factory=list,
        max_length=12,
        description="When it changed within the hour before its last change (RFC 3339).",
    )
    why: str = Field(default="", max_length=LOAD_TEXT_MAX, description="The figures behind it.")


class ScalingProfileStatus(_Status):
    observed_generation: int = Field(default=0, ge=0)
    conditions: list[Condition] = Field(default_factory=list, max_length=64)
    budget: BudgetStatus | None = None
    pooler: PoolerStatus | None = None
    read_replicas: list[ReadReplicaStatus] | None = Field(
        default=None, max_length=16, description="The read replicas and their lag."
    )
    binding: BindingStatus | None = None
    recommendations: list[RecommendationStatus] | None = Field(
        default=None,
        max_length=8,
        description="What the poolers' own figures (their agents' reports) say to "
        "change, inside the budget; absent while there are none.",
    )
    tuning: TuningStatus | None = Field(
        default=None, description="spec.pooler.autoTune: the size it runs, absent when off."
    )
    converged: ConvergedStatus | None = None
