"""Verdicts that do not depend on timing: several profiles on one Postgres
server, created, changed and deleted in any order, with passes in any order
and the operator restarted anywhere, end where a fresh operator on the same
stored objects would: it changes nothing, and the shares are those the
stored objects give; at every step, what the poolers run fits the server.
The pass runs without admission here (as when two changes are admitted at
the same moment), the hardest case for the rule.

Driven by Hypothesis through the reconcile pass on the fake cluster of
tests/unit/fake_cluster.py; the share table is rebuilt from the stored
profiles on a restart, as the runtime's informer does.
"""

from __future__ import annotations

import contextlib
import copy
import io
import itertools
import re
import tempfile
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from headroom import cli
from headroom.planning import admission, agentfile, pooler_state, server_shares
from headroom.reconcile import reconciler, telemetry
from headroom.runtime import share_table
from tests import profiles
from tests.fuzzing.settings import fuzz_settings
from tests.unit import fake_cluster, passes

SERVER = "db.default.svc:5432"
CAPACITY = 100 - 3  # max_connections - superuser-reserved of every variant
NAMES = ("a", "b", "c")
# two profiles created in the same second are ordered by name, never by arrival
CREATED = ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:05Z")
VARIANTS: dict[str, dict[str, Any]] = {
    "transaction": {},
    "weight-2": {"database.share": {"weight": 2}},
    "capped": {"database.share": {"maximum": 12}},
    "minimum-30": {"database.share": {"minimum": 30}},
    # beside a running transaction-mode profile's half, more than the server holds
    "minimum-54": {"database.share": {"minimum": 54}},
    "pinned": {"pooler.parameters": {"max_db_connections": "4"}},
    # 20 sessions over 2 pooler pods: 10 per pod, 3 pods at peak = 30
    "sessions": {"pooler.poolMode": "session", "app.replicas": {"min": 1, "max": 4}},
    # 60 sessions: 90, beside anything else more than the server holds
    "sessions-60": {
        "pooler.poolMode": "session",
        "app.replicas": {"min": 1, "max": 6},
        "app.poolSizePerPod": 10,
    },
}


@dataclass(frozen=True)
class Op:
    verb: str  # create, update, delete, pass, restart, upgrade, report (the agents')
    name: str = ""
    variant: str = ""
    created: str = ""


def _ops() -> st.SearchStrategy[Op]:
    names, variants = st.sampled_from(NAMES), st.sampled_from(sorted(VARIANTS))
    return st.one_of(
        st.builds(Op, st.just("create"), names, variants, st.sampled_from(CREATED)),
        st.builds(Op, st.just("update"), names, variants),
        st.builds(Op, st.just("delete"), names),
        st.builds(Op, st.just("pass"), names),
        st.just(Op("restart")),
        st.just(Op("upgrade")),
        st.builds(Op, st.just("report"), names),
    )


class World:
    """One cluster, one operator: what the API server stores and what runs."""

    def __init__(self, objects: dict[fake_cluster.Key, fake_cluster.Obj] | None = None) -> None:
        self.cluster = fake_cluster.FakeCluster()
        self._uids = itertools.count(1)
        if objects is None:
            self.cluster.put(
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": "default"},
                    "spec": {"selector": {"matchLabels": {"app": "web"}}},
                }
            )
            self.cluster.put(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "db-credentials", "namespace": "default"},
                    "data": {"username": "c2hvcF9hcHA=", "password": "czNjcmV0"},
                }
            )
        else:
            self.cluster.objects = copy.deepcopy(objects)
        self.restart()

    def restart(self) -> None:
        """A new operator process: a new share table from the stored profiles,
        a new pass engine (nothing remembered)."""
        self.cluster.shared = share_table.SharedBudgets(children=self.cluster.children)
        for key in self.profile_keys():
            self.cluster.shared.update(key, self.cluster.profile("default", key.split("/")[1]))
        self.engine = reconciler.Reconciler(self.cluster, telemetry.Metrics())

    def profile_keys(self) -> list[str]:
        return sorted(
            f"default/{name}" for kind, _, name in self.cluster.objects if kind == "ScalingProfile"
        )

    def apply(self, op: Op) -> None:
        stored = self.cluster.profile("default", op.name) if op.name else None
        if op.verb == "create" and stored is None:
            body = profiles.base(name=op.name, **VARIANTS[op.variant])
            body["metadata"].update(
                uid=f"{op.name}-uid-{next(self._uids)}",
                generation=1,
                creationTimestamp=op.created,
            )
            self.cluster.put(body)
        elif op.verb == "update" and stored is not None:
            spec = profiles.base(name=op.name, **VARIANTS[op.variant])["spec"]
            if spec != stored["spec"]:
                stored["spec"] = spec
                stored["metadata"]["generation"] += 1
                self.cluster.put(stored)
        elif op.verb == "delete" and stored is not None:
            uid = stored["metadata"]["uid"]
            del self.cluster.objects[("ScalingProfile", "default", op.name)]
            for key, obj in list(self.cluster.objects.items()):  # the garbage collector
                if any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences") or []):
                    del self.cluster.objects[key]
            self.cluster.shared.update(f"default/{op.name}", None)
        elif op.verb == "pass" and stored is not None:
            passes.run(self.engine, f"default/{op.name}")
        elif op.verb == "restart":
            self.restart()
        elif op.verb == "report":
            self.report(op.name)
        elif op.verb == "upgrade":
            # the previous release: statuses that say nothing of what the
            # poolers hold, read by a new operator; the poolers run as they were
            for key in self.profile_keys():
                body = self.cluster.objects[("ScalingProfile", "default", key.split("/")[1])]
                budget = (body.get("status") or {}).get("budget") or {}
                budget.pop("held", None)
                budget.pop("heldGeneration", None)
                (body.get("status") or {}).pop("converged", None)
            self.restart()

    def running(self, runs: dict[str, int]) -> int:
        """Server connections the poolers may open at peak (3 pods), the 5
        direct connections each binding hands out and the 3 each
        postgres_exporter holds."""
        return sum(3 * size + 5 + 3 for size in runs.values())

    def report(self, name: str) -> None:
        """What the agents of ``name``'s pooler pods do once they have loaded
        its pgbouncer.ini: each writes its entry into the state ConfigMap (the
        pool within the new limit), as somebody else's write."""
        config = self.cluster.find("ConfigMap", f"{name}-pooler-config")
        state = self.cluster.find("ConfigMap", f"{name}-pooler-state")
        deployment = self.cluster.find("Deployment", f"{name}-pooler")
        if config is None or state is None or deployment is None:
            return
        ini = config["data"]["pgbouncer.ini"]
        entry = pooler_state.Entry(
            config=agentfile.content_hash(ini),
            max_db_connections=_max_db(ini),
            server_connections=0,
            at="2026-01-01T00:00:00Z",
        )
        pods = deployment["spec"]["replicas"]
        data = {f"{name}-pooler-{i}": entry.text() for i in range(pods)}
        if (state.get("data") or {}) != data:
            self.cluster.put({**state, "data": data})

    def settle(self, rounds: int = 8, *, check: bool = False) -> None:
        """Passes of every profile until a round writes nothing (``check``:
        what runs fits the server after every pass); the agents report what
        their pods loaded before each round."""
        for _ in range(rounds):
            before = len(self.cluster.writes())
            for key in self.profile_keys():
                self.report(key.split("/")[1])
            for key in self.profile_keys():
                passes.run(self.engine, key)
                if check:
                    runs = self.pool_sizes()
                    assert self.running(runs) <= CAPACITY, (key, runs, self.budgets())
            if len(self.cluster.writes()) == before:
                return
        raise AssertionError(f"no fixpoint after {rounds} rounds: {self.cluster.writes()[-12:]}")

    def budgets(self) -> dict[str, dict[str, Any]]:
        found = {}
        for key in self.profile_keys():
            body = self.cluster.profile("default", key.split("/")[1])
            assert body is not None
            status = body.get("status") or {}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            found[key] = {
                "budget": conditions["ConnectionBudget"]["status"],
                "share": (status.get("budget") or {}).get("serverConnections"),
                "held": server_shares.held_of(body)[0].get(SERVER, 0),
            }
        return found

    def counted(self) -> dict[str, int]:
        """What the share table counts every profile at (what runs, else its status)."""
        return {
            peer.key: peer.held.get(SERVER, 0)
            for peer in self.cluster.shared.table().get(SERVER, [])
            if peer.held.get(SERVER, 0)
        }

    def pool_sizes(self) -> dict[str, int]:
        """What every pooler pod may open (what runs): the limit of its config,
        or the larger one a pod still runs until it has loaded it (its last
        report at another config)."""
        found = {}
        for key in self.profile_keys():
            name = key.split("/")[1]
            config = self.cluster.find("ConfigMap", f"{name}-pooler-config")
            if config is None:
                continue
            ini = config["data"]["pgbouncer.ini"]
            state = self.cluster.find("ConfigMap", f"{name}-pooler-state") or {}
            stale = [
                entry.max_db_connections
                for entry in pooler_state.entries(state.get("data")).values()
                if entry.config != agentfile.content_hash(ini)
            ]
            found[key] = max([_max_db(ini), *stale])
        return found


def _plan_read_back(world: World) -> dict[str, tuple[bool, int | None]]:
    """``headroom plan`` of every stored profile, as ``kubectl get -o yaml``
    gives them: profile -> (its verdict, its pool's server connections)."""
    bodies = [world.cluster.profile("default", k.split("/")[1]) for k in world.profile_keys()]
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(yaml.safe_dump_all(bodies))
        file.flush()
        # one stream: a refused plan's error follows its own block
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            cli.main(["plan", file.name])
    found = {}
    for block in re.split(r"\n(?=profile )", printed.getvalue()):
        key = re.search(r"^profile +(\S+)$", block, re.M)
        pooled = re.search(r"^server connections +(\d+) of", block, re.M)
        assert key is not None, block
        found[key[1]] = ("\nerror: " not in block, int(pooled[1]) if pooled else None)
    return found


def _max_db(ini: str) -> int:
    return next(
        int(line.split("=")[1])
        for line in ini.splitlines()
        if line.startswith("max_db_connections")
    )


@given(ops=st.lists(_ops(), max_size=10))
@example(  # the flip: two created in the same second, a restart between passes
    ops=[
        Op("create", "b", "sessions-60", CREATED[0]),
        Op("create", "a", "sessions-60", CREATED[1]),
        Op("pass", "b"),
        Op("restart"),
        Op("pass", "a"),
    ]
)
@example(  # a running profile's change that no longer fits beside a newer one
    ops=[
        Op("create", "a", "transaction", CREATED[0]),
        Op("pass", "a"),
        Op("create", "b", "sessions", CREATED[2]),
        Op("pass", "b"),
        Op("update", "a", "sessions-60"),
        Op("restart"),
        Op("delete", "b"),
    ]
)
@example(  # the same without a restart: the verdict comes from the stored status
    ops=[
        Op("create", "b", "transaction", CREATED[0]),
        Op("pass", "b"),
        Op("create", "a", "sessions", CREATED[2]),
        Op("pass", "a"),
        Op("update", "b", "sessions-60"),
    ]
)
@example(  # an upgrade: what runs is counted though no status says it
    ops=[
        Op("create", "a", "transaction", CREATED[0]),
        Op("pass", "a"),
        Op("upgrade"),
        Op("create", "b", "weight-2", CREATED[2]),
        Op("pass", "b"),
        Op("pass", "a"),
        Op("pass", "b"),
    ]
)
@example(  # a pool grows only once the pods of the one that shrank have confirmed it
    ops=[
        Op("create", "a", "transaction", CREATED[0]),
        Op("pass", "a"),
        Op("report", "a"),
        Op("create", "b", "weight-2", CREATED[2]),
        Op("pass", "a"),
        Op("pass", "b"),
        Op("pass", "b"),
        Op("report", "a"),
        Op("pass", "a"),
        Op("pass", "b"),
    ]
)
@example(  # two changes admitted at once, each beside the other's running plan
    ops=[
        Op("create", "a", "transaction", CREATED[0]),
        Op("create", "b", "transaction", CREATED[1]),
        Op("pass", "a"),
        Op("pass", "b"),
        Op("update", "a", "minimum-54"),
        Op("update", "b", "minimum-30"),
        Op("pass", "a"),
        Op("pass", "b"),
    ]
)
@fuzz_settings(short=30)
def test_any_order_ends_where_a_fresh_operator_on_the_same_objects_would(ops: list[Op]) -> None:
    world = World()
    for op in ops:
        world.apply(op)
        # at every step, what the poolers run fits the server
        runs = world.pool_sizes()
        assert world.running(runs) <= CAPACITY, (op, runs, world.budgets())
    world.settle(check=True)
    ended = world.budgets()

    # a fresh operator on the same stored objects changes nothing
    fresh = World(world.cluster.objects)
    writes = len(fresh.cluster.writes())
    for key in fresh.profile_keys():
        passes.run(fresh.engine, key)
    assert fresh.cluster.writes()[writes:] == [], ended
    assert fresh.budgets() == ended

    # what runs is what is counted, refused or not: every pooler's pool at
    # its 3 pods at peak, the 5 direct connections its binding hands out and
    # the 3 its postgres_exporter holds; and what the status says it holds,
    # where it says (a refused one after an upgrade has no word of it)
    runs = world.pool_sizes()
    assert world.running(runs) <= CAPACITY, (runs, ended)
    at_peak = {k: 3 * size + 5 + 3 for k, size in runs.items()}
    assert at_peak == world.counted() == fresh.counted(), (runs, ended)
    assert {k: b["held"] for k, b in ended.items() if b["held"]}.items() <= at_peak.items()
    # the ones it accepts at their shares, the refused at what they ran before
    for key, b in ended.items():
        if b["budget"] == "True":
            assert b["share"] is not None and b["held"] >= b["share"], (key, ended)

    # headroom plan over the stored profiles read back (their creation times and
    # statuses) ranks and divides as the pass did, where every status says what
    # its poolers hold (after an upgrade a refused one's status does not)
    if ended and all(b["held"] for b in ended.values()):
        assert _plan_read_back(world) == {
            k: (b["budget"] == "True", b["share"]) for k, b in ended.items()
        }, ended

    # admission gives the verdict the pass gives: a newcomer of each kind is
    # refused at admission exactly when, let in anyway, its first passes refuse it
    table = world.cluster.shared
    for variant in ("transaction", "minimum-30", "sessions-60"):
        body = profiles.base(name="new", **VARIANTS[variant])
        message = admission.review(
            body, beside=lambda servers, key: share_table.beside(table.table(), servers, key)
        )
        late = World(world.cluster.objects)
        late.apply(Op("create", "new", variant, "2026-01-01T00:00:09Z"))
        late.settle()
        verdict = late.budgets()["default/new"]["budget"]
        assert (message is None) == (verdict == "True"), (variant, message, late.budgets())

    # with nothing refused, history leaves no trace: the same specs, created at
    # the same times in one go, get the same shares and the same pooler sizes
    if all(b["budget"] == "True" for b in ended.values()):
        again = World()
        for key in world.profile_keys():
            body = world.cluster.profile("default", key.split("/")[1])
            assert body is not None
            body.pop("status", None)
            body["metadata"] = {
                k: body["metadata"][k]
                for k in ("name", "namespace", "uid", "generation", "creationTimestamp")
            }
            again.cluster.put(body)
        again.settle()
        assert {k: b["share"] for k, b in again.budgets().items()} == {
            k: b["share"] for k, b in ended.items()
        }
        assert again.pool_sizes() == world.pool_sizes()


def test_of_two_changes_admitted_at_once_the_one_that_fits_beside_the_other_goes_ahead() -> None:
    """a and b run halves of the server; a's change (a minimum of 54) and b's (30)
    are each admitted beside the other's running plan, and do not fit together.
    The pass refuses one and counts it at what its poolers run: b's change fits
    beside a's running half, a's does not beside b's, so b goes ahead whatever
    their ranks (a first: created in the same second, by name), not both refused."""
    world = World()
    for op in (
        Op("create", "a", "transaction", CREATED[0]),
        Op("create", "b", "transaction", CREATED[1]),
    ):
        world.apply(op)
    world.settle(check=True)
    table = world.cluster.shared
    beside = lambda servers, key: share_table.beside(table.table(), servers, key)  # noqa: E731
    for name, variant in (("a", "minimum-54"), ("b", "minimum-30")):
        body = profiles.base(name=name, **VARIANTS[variant])
        old = world.cluster.profile("default", name)
        assert admission.review(body, beside=beside, old=old) is None, name
    world.apply(Op("update", "a", "minimum-54"))
    world.apply(Op("update", "b", "minimum-30"))
    world.settle(check=True)
    ended = world.budgets()
    assert ended["default/b"]["budget"] == "True", ended
    assert ended["default/a"]["budget"] == "False", ended
    body = world.cluster.profile("default", "a")
    assert body is not None
    (budget,) = [c for c in body["status"]["conditions"] if c["type"] == "ConnectionBudget"]
    assert "default/b 38 (spec.database.share.minimum 30" in budget["message"], budget
