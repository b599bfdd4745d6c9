"""Connection budget, table-driven with the seeds' numbers."""

from __future__ import annotations

import pytest

from headroom.api import v1alpha1
from headroom.planning import admission, connection_budget, live_limits, planner
from tests import profiles


def _plan(**overrides: object) -> planner.Plan:
    return planner.plan(v1alpha1.parse_profile(profiles.base(**overrides)))


@pytest.mark.parametrize(
    ("case", "overrides", "expect"),
    [
        (
            # seed 002: 10 Cloud Run instances x 10 pooled connections = 100 vs ~100.
            "seed-002-transaction",
            {"app.replicas.max": 10, "app.poolSizePerPod": 10},
            {
                "client_demand": 100,
                # 100 - 3 superuser - 5 default reserve - 3 for postgres_exporter
                "available": 89,
                # 2 pooler pods + 1 during a rollout
                "pooler_pods_at_peak": 3,
                "max_db_connections": 29,
                "server_connections": 87,
                "max_client_conn": 105,
                "margin": 2,
            },
        ),
        (
            # seed 002's fix: pool max 5 per instance.
            "seed-002-pool-5",
            {"app.replicas.max": 10, "app.poolSizePerPod": 5},
            {"client_demand": 50, "default_pool_size": 27, "reserve_pool_size": 2},
        ),
        (
            # seed 003: 2,560-7,100 connections against 100-200 Postgres.
            "seed-003-7100-through-pooler",
            {"app.replicas.max": 710, "app.poolSizePerPod": 10, "database.maxConnections": 200},
            {
                "client_demand": 7100,
                "available": 189,
                "max_db_connections": 63,
                "server_connections": 189,
                "max_client_conn": 7105,
            },
        ),
        (
            # seed 004: small tiers with 20-50 connections.
            "seed-004-small-tier",
            {"database.maxConnections": 25, "app.replicas.max": 4, "app.poolSizePerPod": 5},
            {
                "available": 14,
                "max_db_connections": 4,
                "reserve_pool_size": 0,
                "default_pool_size": 4,
                "server_connections": 12,
                "margin": 2,
            },
        ),
        (
            # one pooler pod surges a second during a rollout: both must fit.
            "single-instance-counts-surge",
            {"pooler.instances": 1},
            {"pooler_pods_at_peak": 2, "max_db_connections": 44, "server_connections": 88},
        ),
        (
            # other clients (migrations, admin) keep their share.
            "other-reserved",
            {"database.reservedConnections": 17},
            # 3 superuser + 17 + 3 for postgres_exporter
            {"reserved": 23, "available": 77, "max_db_connections": 25},
        ),
        (
            # tiny demand: no more server connections than clients can use.
            "demand-caps-pool",
            {"app.replicas.max": 2, "app.poolSizePerPod": 3},
            {"client_demand": 6, "default_pool_size": 6, "max_db_connections": 8},
        ),
        (
            "session-mode-fits",
            # 2 pods x 29 hold the 50 sessions; 3 x 29 fit during a rollout
            {"pooler.poolMode": "session", "app.replicas.max": 5, "app.poolSizePerPod": 10},
            {"client_demand": 50, "reserve_pool_size": 0, "default_pool_size": 29},
        ),
        (
            "pinned-values-honoured",
            {
                "pooler.parameters": {
                    "default_pool_size": "20",
                    "reserve_pool_size": "2",
                    "max_client_conn": "500",
                }
            },
            {
                "default_pool_size": 20,
                "reserve_pool_size": 2,
                "max_db_connections": 22,
                "max_client_conn": 500,
            },
        ),
    ],
)
def test_budget_table(case: str, overrides: dict[str, object], expect: dict[str, int]) -> None:
    planned = _plan(**overrides)
    assert planned.ok, f"{case}: {planned.problem_text()}"
    for key, value in expect.items():
        assert getattr(planned.budget, key) == value, f"{case}: {key}"
    b = planned.budget
    assert b.server_connections <= b.available
    assert b.max_client_conn >= b.client_demand


def test_seed_002_session_mode_is_the_outage() -> None:
    planned = _plan(
        **{"app.replicas.max": 10, "app.poolSizePerPod": 10, "pooler.poolMode": "session"}
    )
    assert not planned.ok
    assert "100 session connections > 89 available" in planned.problem_text()


def test_seed_003_session_mode_rejected_with_numbers() -> None:
    planned = _plan(
        **{
            "app.replicas.max": 710,
            "app.poolSizePerPod": 10,
            "database.maxConnections": 200,
            "pooler.poolMode": "session",
        }
    )
    assert [p.field for p in planned.problems] == ["spec.app.replicas.max"]
    assert "7100 session connections > 189 available" in planned.problem_text()


def test_session_mode_single_pooler_cannot_hold_demand() -> None:
    planned = _plan(
        **{
            "pooler.poolMode": "session",
            "pooler.instances": 1,
            "app.replicas.max": 8,
            "app.poolSizePerPod": 10,
        }
    )
    assert [p.field for p in planned.problems] == ["spec.pooler.instances"]
    assert "1 pooler pods x 44 server connections = 44 < 80" in planned.problem_text()


def test_session_mode_with_a_pinned_max_db_below_the_pool_is_refused() -> None:
    # 2 pods x max_db 10 serve 20 of the 50 sessions; 30 would queue until
    # query_wait_timeout.
    planned = _plan(
        **{
            "pooler.poolMode": "session",
            "app.replicas.max": 10,
            "app.poolSizePerPod": 5,
            "pooler.parameters": {"default_pool_size": "60", "max_db_connections": "10"},
        }
    )
    assert [p.field for p in planned.problems] == ["spec.pooler.parameters.max_db_connections"]
    assert "2 pooler pods x 10 server connections = 20 < 50 session connections" in (
        planned.problem_text()
    )
    assert "max_db_connections 10 caps default_pool_size 60" in planned.problem_text()


def test_capacity_derives_the_ceiling() -> None:
    body = profiles.base()
    del body["spec"]["app"]["replicas"]
    body["spec"]["app"]["capacity"] = {"targetConcurrentUsers": 2001, "usersPerPod": 100}
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert (planned.app.min_replicas, planned.app.max_replicas) == (2, 21)
    assert planned.budget.client_demand == 21 * 5


def test_plan_settings_reflect_the_budget() -> None:
    planned = _plan()
    s = planned.pooler.settings
    assert s["default_pool_size"] == str(planned.budget.default_pool_size)
    assert s["max_db_connections"] == str(planned.budget.max_db_connections)
    assert s["max_client_conn"] == str(planned.budget.max_client_conn)
    assert s["pool_mode"] == "transaction"
    assert s["max_prepared_statements"] == "200"  # the default 1.26, transaction mode
    old = _plan(**{"pooler.image": "registry.example/pgbouncer:1.18.0"})
    assert "max_prepared_statements" not in old.pooler.settings


@pytest.mark.parametrize(
    ("image", "version", "expected"),
    [
        ("ghcr.io/cloudnative-pg/pgbouncer:1.24.0", None, (1, 24)),
        ("registry.example:5000/team/pgbouncer:v1.21.0-p2", None, (1, 21)),
        ("registry.example/pgbouncer:1.18", None, (1, 18)),
        ("registry.example/pgbouncer:1.23.1@sha256:" + "a" * 64, None, (1, 23)),
        ("registry.example/pgbouncer:stable", "1.22", (1, 22)),
        ("registry.example:5000/pgbouncer", "1.20", (1, 20)),
        ("registry.example/pgbouncer:1.24.1", "1.24", (1, 24)),
    ],
)
def test_pgbouncer_version_comes_from_the_tag_or_the_spec(
    image: str, version: str | None, expected: tuple[int, int]
) -> None:
    overrides: dict[str, object] = {"pooler.image": image}
    if version:
        overrides["pooler.version"] = version
    assert _plan(**overrides).pooler.version == expected


@pytest.mark.parametrize(
    ("image", "version", "field", "needle"),
    [
        ("registry.example/pgbouncer:latest", None, "spec.pooler.version", "required"),
        ("registry.example/pgbouncer@sha256:" + "b" * 64, None, "spec.pooler.version", "required"),
        ("registry.example/pgbouncer:1.24.1", "1.18", "spec.pooler.version", "disagrees"),
        ("registry.example/pgbouncer:1.17.0", None, "spec.pooler.image", "not supported"),
    ],
)
def test_an_unknowable_or_contradicted_version_is_rejected(
    image: str, version: str | None, field: str, needle: str
) -> None:
    body = profiles.base(**{"pooler.image": image})
    if version:
        body["spec"]["pooler"]["version"] = version
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert [p.field for p in planned.problems] == [field]
    assert needle in planned.problem_text()


@pytest.mark.parametrize(
    ("case_id", "overrides", "needle"), profiles.BAD, ids=[c[0] for c in profiles.BAD]
)
def test_bad_profiles_are_rejected_naming_the_field(
    case_id: str, overrides: dict[str, object], needle: str
) -> None:
    message = admission.review(profiles.bad(case_id))
    assert message is not None, case_id
    assert needle in message


def test_good_profile_passes_admission() -> None:
    assert admission.review(profiles.base()) is None


def test_problem_str_names_field() -> None:
    assert str(connection_budget.Problem("spec.x", "too big")) == "spec.x: too big"


@pytest.mark.parametrize(
    ("live", "field", "needle"),
    [
        # seed 004: a small managed tier allows 20-50 connections, not the declared 100
        (
            planner.PrimaryLimits(max_connections=50, superuser_reserved_connections=3),
            "spec.database.maxConnections",
            "reports max_connections 50 - superuser_reserved_connections 3 - 5 reserved "
            "- 3 for postgres_exporter = 39 available, but the plan opens 87 server connections",
        ),
        (
            planner.PrimaryLimits(
                max_connections=100, superuser_reserved_connections=3, reserved_connections=5
            ),
            "spec.database.superuserReservedConnections",
            "- reserved_connections 5 - 5 reserved - 3 for postgres_exporter = 84 available",
        ),
    ],
)
def test_real_limits_below_the_declared_ones_stop_the_plan(
    live: planner.PrimaryLimits, field: str, needle: str
) -> None:
    planned = planner.plan(v1alpha1.parse_profile(profiles.base()))
    problems = live_limits.primary_problems(planned, live)
    assert [p.field for p in problems] == [field]
    assert needle in "; ".join(str(p) for p in problems)


def test_real_limits_above_the_declared_ones_change_nothing() -> None:
    profile = v1alpha1.parse_profile(profiles.base())
    roomy = planner.PrimaryLimits(max_connections=500, superuser_reserved_connections=3)
    planned = planner.plan(profile)
    assert live_limits.primary_problems(planned, roomy) == []  # the declared limits still size it
