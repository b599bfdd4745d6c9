"""Read replicas -> the read side of the plan: which servers serve reads, and
the read budget every one of them must carry.

The read pooler (``<name>-pooler-ro``) sends each new server connection to any
replica in its host list, and a replica that lags or is lost leaves the list,
so when all but one are out the survivor carries the whole read pool. The
rule is therefore the primary's rule applied to the *smallest* replica:

``available = max_connections - superuser_reserved - reservedConnections -
lag probes`` (one per read-pooler pod at peak, one for the operator), and
every read-pooler pod at peak (``instances + 1`` during a rollout) opens at
most ``available // pods`` server connections. The client side is the app's
ceiling times ``readPoolSizePerPod`` plus the workers that read.

With ``whenAllLagging: primary`` the read pool falls back to the primary
itself when every replica is out, capped per read-pooler pod (the fallback
entry's own ``max_db_connections``) at ``primaryFallbackConnections`` in
total, which the primary keeps out of the write pool's budget; ``refuse``
keeps the primary for writes only.

Pure: called by :func:`headroom.planning.planner.plan`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from headroom.api import v1alpha1
from headroom.planning import connection_budget, load_sizing, names, servers

FIELD = "spec.database.readReplicas"
# Every standby Headroom runs listens here; its Service has no other port.
STANDBY_PORT = 5432
# The operator's own lag probe, beside one per read-pooler pod.
OPERATOR_PROBES = 1
# Stands in for the replicas of a section that names none (the plan has problems).
NO_REPLICA = "none"


@dataclass(frozen=True)
class Replica:
    """One server the read pool may send reads to."""

    name: str  # stable: "replica-0", "standby-1", "cnpg-ro"
    host: str
    port: int
    max_connections: int
    field: str  # the spec field that declares it, for messages
    server: str = ""  # planning.servers key when other profiles may use it too


@dataclass(frozen=True)
class CnpgCluster:
    """What Headroom read from a CloudNativePG Cluster (never written)."""

    name: str
    instances: int  # the primary and its replicas
    max_connections: int | None  # spec.postgresql.parameters.max_connections, if set


def cnpg_cluster(obj: dict[str, object]) -> CnpgCluster:
    """A Cluster object -> the facts the planner uses (CNPG's default
    max_connections is Postgres' 100 when the Cluster sets none)."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    postgresql = spec.get("postgresql") if isinstance(spec.get("postgresql"), dict) else {}
    parameters = (postgresql or {}).get("parameters") or {}
    raw = parameters.get("max_connections") if isinstance(parameters, dict) else None
    try:
        max_connections = int(str(raw)) if raw is not None else None
    except ValueError:
        max_connections = None
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    instances = spec.get("instances")
    return CnpgCluster(
        name=str(metadata.get("name", "")),
        instances=instances if isinstance(instances, int) else 1,
        max_connections=max_connections,
    )


@dataclass(frozen=True)
class StandbyPlan:
    """The hot standbys of mode streaming."""

    standbys: int
    image: str
    max_connections: int
    replication_secret: v1alpha1.SecretKeyRef
    storage: v1alpha1.StandbyStorage
    requests: dict[str, str]
    limits: dict[str, str]


@dataclass(frozen=True)
class ReadPlan:
    mode: str
    replicas: tuple[Replica, ...]
    port: int  # shared by every replica (PgBouncer's host list has one port)
    instances: int
    max_lag_seconds: int
    max_lag_bytes: int | None
    poll_seconds: int
    when_all_lagging: str
    pool_size_per_pod: int
    budget: connection_budget.ConnectionBudget
    smallest: Replica
    standby: StandbyPlan | None = None
    cnpg_cluster: str | None = None
    # mode cnpg with CloudNativePG installed: both poolers are CNPG Pooler objects
    cnpg_poolers: bool = False
    cnpg_instances: int | None = None  # of the Cluster, when it was read
    # whenAllLagging primary: server connections per read-pooler pod on the
    # primary while every replica is out (0: refuse)
    fallback_per_pod: int = 0
    # what the read pool asks of each replica other profiles may list too
    demands: tuple[connection_budget.Demand, ...] = ()
    # what the profile's postgres_exporter holds on each replica (0: none runs)
    exporter_connections: int = 0

    @property
    def lag_probes(self) -> int:
        return self.budget.pooler_pods_at_peak + OPERATOR_PROBES

    def opened_on_replicas(self) -> dict[str, int]:
        """Server key -> what this profile may open on each replica others may
        share: the whole read pool (any one replica may carry it), its lag
        probes and the replica's exporter."""
        each = self.budget.server_connections + self.lag_probes + self.exporter_connections
        return {r.server: each for r in self.replicas if r.server}

    @property
    def fallback_connections(self) -> int:
        """Server connections the read pool may open on the primary when every
        replica is out, over every read-pooler pod at peak."""
        return self.fallback_per_pod * self.budget.pooler_pods_at_peak


def _replicas(
    rr: v1alpha1.ReadReplicas,
    *,
    db: v1alpha1.Database,
    profile: str,
    namespace: str,
    cluster: CnpgCluster | None,
) -> tuple[list[Replica], list[connection_budget.Problem]]:
    problems: list[connection_budget.Problem] = []
    replicas: list[Replica] = []
    keys = servers.replicas(namespace, db)
    sections = {"external": rr.hosts is not None, "cnpg": rr.cnpg, "streaming": rr.streaming}
    for mode, present in sections.items():
        name = "hosts" if mode == "external" else mode
        if (mode == rr.mode) != bool(present):
            problems.append(
                connection_budget.Problem(
                    f"{FIELD}.{name}",
                    f"is required with mode {mode}, and only then (mode is {rr.mode})",
                )
            )
    if rr.mode == "external" and rr.hosts:
        seen: dict[tuple[str, int], int] = {}
        primary = (db.host.lower().rstrip("."), db.port)
        for index, replica in enumerate(rr.hosts):
            where = f"{FIELD}.hosts[{index}]"
            address = (replica.host.lower().rstrip("."), replica.port)
            if address in seen:
                problems.append(
                    connection_budget.Problem(
                        f"{where}.host",
                        f"{replica.host}:{replica.port} is listed twice "
                        f"(also hosts[{seen[address]}])",
                    )
                )
                continue
            seen[address] = index
            if address == primary:
                problems.append(
                    connection_budget.Problem(
                        f"{where}.host",
                        f"{replica.host}:{replica.port} is the primary (spec.database.host)",
                    )
                )
            replicas.append(
                Replica(
                    name=f"replica-{index}",
                    host=replica.host,
                    port=replica.port,
                    max_connections=replica.max_connections or db.max_connections,
                    field=f"{where}.maxConnections"
                    if replica.max_connections
                    else "spec.database.maxConnections",
                    server=keys[f"replica-{index}"],
                )
            )
        ports = sorted({r.port for r in rr.hosts})
        if len(ports) > 1:
            index = next(i for i, r in enumerate(rr.hosts) if r.port != rr.hosts[0].port)
            problems.append(
                connection_budget.Problem(
                    f"{FIELD}.hosts[{index}].port",
                    f"{rr.hosts[index].port} differs from hosts[0].port {rr.hosts[0].port}: "
                    "the read pool's host list takes one port for every replica (PgBouncer); "
                    "put replicas on other ports behind one port, or list only one port's",
                )
            )
    elif rr.mode == "streaming" and rr.streaming:
        st = rr.streaming
        max_connections = st.max_connections or db.max_connections
        if max_connections < db.max_connections:
            problems.append(
                connection_budget.Problem(
                    f"{FIELD}.streaming.maxConnections",
                    f"{max_connections} is below spec.database.maxConnections "
                    f"{db.max_connections}: Postgres refuses to run a hot standby with a lower "
                    "max_connections than its primary's",
                )
            )
        replicas = [
            Replica(
                name=f"standby-{ordinal}",
                host=names.ChildNames(profile, namespace).standby_host(ordinal),
                port=STANDBY_PORT,
                max_connections=max_connections,
                field=f"{FIELD}.streaming.maxConnections"
                if st.max_connections
                else "spec.database.maxConnections",
            )
            for ordinal in range(st.standbys)
        ]
    elif rr.mode == "cnpg" and rr.cnpg:
        name = rr.cnpg.cluster
        if db.host.split(".", 1)[0] != names.cnpg_rw_service(name):
            problems.append(
                connection_budget.Problem(
                    "spec.database.host",
                    f"{db.host!r} is not the Cluster's read/write Service: with "
                    f"{FIELD}.cnpg.cluster {name} it is {name}-rw (or {name}-rw.{namespace}.svc)",
                )
            )
        live = cluster.max_connections if cluster is not None else None
        if live is not None and live < db.max_connections:
            problems.append(
                connection_budget.Problem(
                    "spec.database.maxConnections",
                    f"{db.max_connections} is above the max_connections {live} of CNPG "
                    f"Cluster {name} (spec.postgresql.parameters)",
                )
            )
        # CloudNativePG's -ro Service spreads connections over its ready replicas.
        replicas = [
            Replica(
                name="cnpg-ro",
                host=names.cnpg_ro_host(name, namespace),
                port=STANDBY_PORT,
                max_connections=live or db.max_connections,
                field=f"Cluster {name} max_connections" if live else "spec.database.maxConnections",
                server=keys["cnpg-ro"],
            )
        ]
    return replicas, problems


def read_plan(
    profile: v1alpha1.ScalingProfile,
    *,
    primary_available: int,
    app_max_pods: int,
    cnpg: bool = False,
    cnpg_cluster: CnpgCluster | None = None,
    app_field: str,
    queues: tuple[tuple[int, v1alpha1.Queue, int], ...],
    session_mode: bool,
    grants: Mapping[str, connection_budget.Grant] | None = None,
    exporter_connections: int = 0,
    load: load_sizing.Load | None = None,
) -> tuple[ReadPlan | None, list[connection_budget.Problem]]:
    """The read side of ``profile``; None when it declares no read replicas.
    ``primary_available``: what the primary has for the poolers (the default
    fallback share is a tenth of it). ``queues``: (index, queue, its worker
    ceiling) for the workers that read. ``grants``: the read pool's share of
    each replica it shares with other profiles; the read budget fits the
    replica that leaves it the least. ``exporter_connections``: what
    postgres_exporter holds on each replica (0: none runs there). ``load``:
    the reads of spec.load (readSecondsPerRequest), which size the read pool as
    the write pool is sized (the workers' read pools at their whole ceiling)."""
    rr = profile.spec.database.read_replicas
    if rr is None:
        return None, []
    db = profile.spec.database
    replicas, problems = _replicas(
        rr, db=db, profile=profile.name, namespace=profile.namespace, cluster=cnpg_cluster
    )
    if not replicas:
        replicas = [
            Replica(
                NO_REPLICA, db.host, db.port, db.max_connections, "spec.database.maxConnections"
            )
        ]
    given_grants = grants or {}
    granted = {r.name: given_grants[r.server] for r in replicas if r.server in given_grants}
    probes = rr.pooler.instances + connection_budget.ROLLOUT_EXTRA_PODS + OPERATOR_PROBES
    fixed = rr.reserved_connections + probes + exporter_connections
    exporter_text = (
        f" and {exporter_connections} for postgres_exporter" if exporter_connections else ""
    )
    clients = (
        connection_budget.ClientGroup(
            label="app",
            field=app_field,
            max_pods=app_max_pods,
            connections_per_pod=rr.read_pool_size_per_pod,
            pool_field=f"{FIELD}.readPoolSizePerPod",
        ),
        *(
            connection_budget.ClientGroup(
                label=f"worker {queue.name}",
                field=f"spec.queues[{index}].replicas.max",
                max_pods=ceiling,
                connections_per_pod=queue.database_read_pool_size,
                pool_field=f"spec.queues[{index}].databaseReadPoolSize",
            )
            for index, queue, ceiling in queues
            if queue.database_read_pool_size
        ),
    )

    def given_on(replica: Replica) -> connection_budget.BudgetInput:
        grant = granted.get(replica.name)
        where = "each replica" if len(replicas) > 1 else "the replica"
        return connection_budget.BudgetInput(
            max_connections=replica.max_connections,
            superuser_reserved=db.superuser_reserved_connections,
            other_reserved=fixed,
            pooler_instances=rr.pooler.instances,
            session_mode=session_mode,
            clients=clients,
            pinned={},
            shared=grant.others if grant else (),
            profile=f"{profile.namespace}/{profile.name}",
            pooler_field=f"{FIELD}.pooler",
            server=f"{where} ({replica.host}:{replica.port}, {replica.field}; any one "
            "replica must carry the whole read pool when the others are out)",
            reserved_label=f"kept for direct use ({FIELD}.reservedConnections "
            f"{rr.reserved_connections}) and {probes} lag probes{exporter_text}",
            load=load,
            undeclared_load_connections=sum(
                ceiling * queue.database_read_pool_size for _, queue, ceiling in queues
            ),
        )

    pool, problems_of_range = connection_budget.pool_range(given_on(replicas[0]))
    problems += problems_of_range

    def room(replica: Replica) -> int:
        """What the read pool has on ``replica``: its share where others list
        it too, else the replica's room (whole connections per pod)."""
        grant = granted.get(replica.name)
        if grant is not None:
            return pool.minimum if grant.refusal else grant.connections
        alone = replica.max_connections - db.superuser_reserved_connections - fixed
        return alone // pool.step * pool.step

    smallest = min(replicas, key=lambda r: (room(r), r.max_connections, r.name))
    given = given_on(smallest)
    if granted:
        mine = granted.get(smallest.name)
        text = mine.text if mine else f"the room {smallest.host}:{smallest.port} leaves it"
        given = dataclasses.replace(given, share=room(smallest), share_text=text)
    problems += [
        connection_budget.Problem(grant.refusal_field, grant.refusal)
        for grant in granted.values()
        if grant.refusal
    ]
    budget, budget_problems = connection_budget.compute(given)
    demands = tuple(
        connection_budget.Demand(
            server=r.server,
            max_connections=r.max_connections,
            superuser_reserved=db.superuser_reserved_connections,
            max_connections_field=r.field,
            fixed=fixed,
            fixed_text=f"{rr.reserved_connections} kept for direct use "
            f"({FIELD}.reservedConnections) and {probes} lag probes{exporter_text}",
            pool=pool,
        )
        for r in replicas
        if r.server
    )
    problems += budget_problems
    pods = budget.pooler_pods_at_peak
    fallback = 0
    # CNPG's own read pooler has no fallback: its -ro Service is all it knows
    if rr.when_all_lagging == "primary" and not (cnpg and rr.mode == "cnpg"):
        total = rr.primary_fallback_connections or max(pods, primary_available // 10)
        fallback = max(1, total // pods)
        if rr.primary_fallback_connections is not None:
            problems += _fallback_problems(
                total,
                pods=pods,
                instances=rr.pooler.instances,
                per_pod=budget.max_db_connections,
                primary_available=primary_available,
            )
    return (
        ReadPlan(
            mode=rr.mode,
            replicas=tuple(replicas),
            port=replicas[0].port,
            instances=rr.pooler.instances,
            max_lag_seconds=rr.max_lag_seconds,
            max_lag_bytes=rr.max_lag_bytes,
            poll_seconds=rr.poll_seconds,
            when_all_lagging=rr.when_all_lagging,
            pool_size_per_pod=rr.read_pool_size_per_pod,
            budget=budget,
            smallest=smallest,
            standby=_standby_plan(rr, db=db),
            cnpg_cluster=rr.cnpg.cluster if rr.cnpg else None,
            cnpg_poolers=cnpg and rr.mode == "cnpg",
            cnpg_instances=cnpg_cluster.instances if cnpg_cluster else None,
            fallback_per_pod=min(fallback, budget.max_db_connections),
            demands=demands,
            exporter_connections=exporter_connections,
        ),
        problems,
    )


def _fallback_problems(
    total: int, *, pods: int, instances: int, per_pod: int, primary_available: int
) -> list[connection_budget.Problem]:
    """A declared fallback share the read pool can use and the primary can give:
    never cut to fit without a word."""
    field = f"{FIELD}.primaryFallbackConnections"
    if total < pods:
        return [
            connection_budget.Problem(
                field,
                f"{total} is fewer than the {pods} read-pooler pods at peak "
                f"({FIELD}.pooler.instances {instances} + 1): each needs one",
            )
        ]
    if total > pods * per_pod:
        return [
            connection_budget.Problem(
                field,
                f"{total} is more than the read pool can open on the primary: {pods} "
                f"read-pooler pods at peak x {per_pod} server connections each (its "
                f"max_db_connections) = {pods * per_pod}; at most {pods * per_pod}",
            )
        ]
    if total > primary_available // 2:
        return [
            connection_budget.Problem(
                field,
                f"{total} is more than half of the {primary_available} connections the primary "
                "has for the poolers (spec.database.maxConnections - reserved - other "
                f"profiles'): the write pool keeps at least half; at most {primary_available // 2}",
            )
        ]
    return []


def _standby_plan(rr: v1alpha1.ReadReplicas, *, db: v1alpha1.Database) -> StandbyPlan | None:
    st = rr.streaming
    if rr.mode != "streaming" or st is None:
        return None
    return StandbyPlan(
        standbys=st.standbys,
        image=st.image,
        max_connections=max(st.max_connections or db.max_connections, db.max_connections),
        replication_secret=st.replication_secret,
        storage=st.storage,
        requests=dict(st.resources.requests),
        limits=dict(st.resources.limits),
    )
