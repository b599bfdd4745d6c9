"""The read pool's membership rule (planning.membership), its config file and
the include file PgBouncer reads, table-tested with plain observations."""

from __future__ import annotations

import json
from typing import Any

import pydantic
import pytest

from headroom.planning import membership

OK = membership.Observed(lag_bytes=0, lag_seconds=0.0)


def _config(**changes: Any) -> membership.ReadPoolConfig:
    raw: dict[str, Any] = {
        "version": 1,
        "database": "shop",
        "dbname": "shop",
        "port": 5432,
        "replicas": [{"name": "r0", "host": "db-ro-0.example.com"}, {"name": "r1", "host": "h1"}],
        "primary": {"host": "shop-db.default.svc", "port": 5432},
        "fallback": {"host": "db.default.svc", "port": 5432, "maxDbConnections": 3},
        "maxLagSeconds": 30,
        "maxLagBytes": None,
        "pollSeconds": 5,
        "connectTimeoutSeconds": 3,
        "sslmode": "prefer",
        "output": "/run/headroom/readpool-databases.ini",
        "admin": {"host": "127.0.0.1", "port": 6432, "user": "headroom_agent"},
    }
    raw.update(changes)
    return membership.ReadPoolConfig.model_validate(raw)


def _lag(seconds: float, nbytes: int = 1000) -> membership.Observed:
    return membership.Observed(lag_bytes=nbytes, lag_seconds=seconds)


def test_the_config_file_round_trips_in_camel_case() -> None:
    config = _config()
    text = config.to_json()
    assert json.loads(text)["maxLagSeconds"] == 30
    assert json.loads(text)["fallback"] == {
        "host": "db.default.svc",
        "port": 5432,
        "maxDbConnections": 3,
    }
    assert membership.ReadPoolConfig.model_validate_json(text) == config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"replicas": [{"name": "r0", "host": "h1\n[pgbouncer]"}]}, "replicas"),
        ({"replicas": [{"name": "r0", "host": "h1 port=1"}]}, "replicas"),
        ({"replicas": []}, "replicas"),
        ({"replicas": [{"name": "r0", "host": "a"}, {"name": "r1", "host": "a"}]}, "hosts"),
        ({"replicas": [{"name": "r0", "host": "a"}, {"name": "r0", "host": "b"}]}, "names"),
        ({"maxLagSeconds": 0}, "maxLagSeconds"),
        ({"maxLagBytes": -1}, "maxLagBytes"),
        ({"database": "shop = host=evil"}, "database"),
        ({"fallback": {"host": "x;y", "port": 5432}}, "fallback"),
        ({"port": 70000}, "port"),
        ({"version": 2}, "version"),
        ({"surprise": 1}, "surprise"),
        ({"output": "relative/path"}, "output"),
    ],
)
def test_bad_config_is_refused_naming_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=field):
        _config(**changes)


def test_a_unix_socket_directory_is_a_host() -> None:
    config = _config(replicas=[{"name": "r0", "host": "/run/pg/r0"}])
    assert config.replicas[0].host == "/run/pg/r0"


# (observation, member before (None: first decision), member after, reason contains)
RULES = [
    (OK, None, True, "within maxLagSeconds 30"),
    (_lag(29.9), None, True, "within"),
    (_lag(30.1), None, False, "over maxLagSeconds 30"),
    (_lag(30.1), True, False, "over maxLagSeconds 30"),
    (
        membership.Observed.unreachable("OperationalError: refused"),
        True,
        False,
        "unreachable: Oper",
    ),
    (membership.Observed(in_recovery=False, lag_bytes=0, lag_seconds=0.0), True, False, "promoted"),
    (_lag(float("inf")), True, False, "nothing replayed yet"),
    # hysteresis: out until within half the bound, in until over the bound
    (_lag(20.0), False, False, "back only within 15 s"),
    (_lag(15.0), False, True, "caught up"),
    (_lag(20.0), True, True, "within"),
    (OK, False, True, "caught up"),
    # the primary could not be read: nobody moves
    (membership.Observed(), True, True, "lag unknown"),
    (membership.Observed(), False, False, "kept out"),
    (membership.Observed(), None, True, "lag unknown"),
    (membership.Observed(in_recovery=False), None, False, "promoted"),
]


@pytest.mark.parametrize(("seen", "before", "after", "reason"), RULES)
def test_membership_rule(
    seen: membership.Observed, before: bool | None, after: bool, reason: str
) -> None:
    previous = None if before is None else {"r0": before, "r1": True}
    found = membership.decide(_config(), observed={"r0": seen, "r1": OK}, previous=previous)
    verdict = found.verdicts[0]
    assert (verdict.name, verdict.member) == ("r0", after)
    assert reason in verdict.reason
    assert verdict.changed == (before is not None and before != after)
    assert found.target == "replicas"  # r1 carries the reads


@pytest.mark.parametrize(
    ("nbytes", "before", "after"),
    [(2_000_001, True, False), (2_000_000, True, True), (1_500_000, False, False),
     (1_000_000, False, True)],
)  # fmt: skip
def test_a_byte_bound_applies_beside_the_seconds(nbytes: int, before: bool, after: bool) -> None:
    config = _config(maxLagBytes=2_000_000)
    found = membership.decide(
        config, observed={"r0": _lag(1.0, nbytes), "r1": OK}, previous={"r0": before, "r1": True}
    )
    assert found.verdicts[0].member is after


def test_a_replica_at_the_bound_does_not_flap() -> None:
    config = _config()
    previous: dict[str, bool] | None = None
    history = []
    for seconds in (5, 31, 29, 31, 29, 16, 14, 29, 31):
        found = membership.decide(
            config, observed={"r0": _lag(seconds), "r1": OK}, previous=previous
        )
        previous = found.previous()
        history.append(found.verdicts[0].member)
    assert history == [True, False, False, False, False, False, True, True, False]


def test_each_change_is_one_line_with_its_reason() -> None:
    config = _config()
    found = membership.decide(
        config,
        observed={"r0": _lag(45.0), "r1": OK},
        previous={"r0": True, "r1": True},
    )
    assert found.changes == ("replica r0 leaves: lag 45.0 s, 1000 bytes: over maxLagSeconds 30",)
    assert found.members == ("r1",)
    steady = membership.decide(
        config, observed={"r0": _lag(45.0), "r1": OK}, previous=found.previous()
    )
    assert steady.changes == ()


def test_every_replica_out_falls_back_to_the_primary_and_comes_back() -> None:
    config = _config()
    down = membership.Observed.unreachable("timeout")
    found = membership.decide(
        config, observed={"r0": down, "r1": _lag(99.0)}, previous={"r0": True, "r1": True}
    )
    assert found.target == "fallback" and found.members == ()
    assert found.changes[-1] == (
        "every replica is out: reads go to the primary db.default.svc:5432"
    )
    back = membership.decide(config, observed={"r0": down, "r1": OK}, previous=found.previous())
    assert back.target == "replicas" and back.members == ("r1",)
    assert back.changes == ("replica r1 joins: lag 0.0 s, 0 bytes: caught up (within half the "
                            "bound)", "reads go to the replicas again")  # fmt: skip


def test_every_replica_out_without_fallback_refuses_reads() -> None:
    config = _config(fallback=None)
    found = membership.decide(config, observed={}, previous={"r0": True, "r1": False})
    assert found.target == "none"
    assert [v.reason for v in found.verdicts] == ["not probed", "not probed"]
    assert found.changes[-1] == ("every replica is out and there is no fallback: reads are refused")


def test_the_include_file_lists_the_members_in_config_order() -> None:
    config = _config()
    text = membership.render_databases(config, ["r1", "r0"])
    assert text.splitlines()[1:] == [
        "[databases]",
        "shop = host=db-ro-0.example.com,h1 port=5432 dbname=shop",
    ]
    assert membership.render_databases(config, ["r1"]).splitlines()[-1] == (
        "shop = host=h1 port=5432 dbname=shop"
    )


def test_the_include_file_points_at_the_fallback_or_has_no_entry() -> None:
    assert membership.render_databases(_config(), []).splitlines()[-1] == (
        "shop = host=db.default.svc port=5432 dbname=shop max_db_connections=3"
    )
    refused = membership.render_databases(_config(fallback=None), [])
    assert [line for line in refused.splitlines() if not line.startswith(";")] == ["[databases]"]


def test_the_renderer_refuses_a_host_that_bypassed_validation() -> None:
    config = _config()
    evil = membership.Replica.model_construct(name="r0", host="h\n[pgbouncer]\nadmin_users = x")
    forged = config.model_copy(update={"replicas": (evil,)})
    with pytest.raises(ValueError, match="not allowed"):
        membership.render_databases(forged, ["r0"])
