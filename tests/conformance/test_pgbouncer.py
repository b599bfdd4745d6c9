"""The pgbouncer.ini and auth file Headroom renders, run in PgBouncer in front of a
real Postgres 15 (max_connections 100, 3 reserved): Debian 12's 1.18, the oldest
release Headroom supports, and the default image's release (1.26, from Debian's
archive: hack/build-pgbouncer.sh).

These prove what the unit tests can only assume: that the rendered keys exist
in each release and mean what the planner thinks, that SCRAM logins work with
the rendered auth file, that the connection budget holds under 500 concurrent
clients, which the same Postgres refuses when they connect directly, and that
named prepared statements survive transaction pooling exactly where the binding
says they do (the default image's release, with the max_prepared_statements the
planner renders for it), not on 1.18.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import servers

from headroom.api import v1alpha1
from headroom.builders import binding, pgbouncer
from headroom.planning import connection_budget, pgbouncer_params, planner

pytestmark = pytest.mark.conformance

VERSION = "1.18"
# The default image's tag (1.26.0) and the major.minor it names.
DEFAULT_TAG = v1alpha1.PGBOUNCER_IMAGE.rsplit(":", 1)[1]
DEFAULT_VERSION = pgbouncer_params.parse_version(DEFAULT_TAG)
STATS_PASSWORD = "stats-secret-1"
# replicas.max 50 x poolSizePerPod 10 = 500 client connections at peak.
MAX_REPLICAS = 50
POOL_PER_POD = 10
CLIENTS = MAX_REPLICAS * POOL_PER_POD
PGBENCH_JOBS = 8
PGBENCH_TRANSACTIONS = 100  # per client: 50,000 in all


def make_plan(
    database: servers.AppDatabase | None,
    *,
    parameters: dict[str, str] | None = None,
    version: str = VERSION,
) -> planner.Plan:
    return servers.pooler_plan(
        name="conf",
        uid="conformance",
        # None: a plan that is never run (planner-only tests).
        port=database.port if database else 5432,
        dbname=database.name if database else "app",
        max_replicas=MAX_REPLICAS,
        pool_per_pod=POOL_PER_POD,
        max_connections=100,
        superuser_reserved_connections=3,
        version=version,
        parameters=parameters,
    )


def userlist_for(database: servers.AppDatabase, **more: str) -> str:
    return database.userlist(STATS_PASSWORD, **more)


def pgbench_500_clients(database: servers.AppDatabase, port: int) -> servers.PgbenchResult:
    """The 500 clients of the profile's peak, PGBENCH_TRANSACTIONS each, at ``port``."""
    return database.pgbench(
        port, clients=CLIENTS, jobs=PGBENCH_JOBS, transactions=PGBENCH_TRANSACTIONS
    )


def show_config(bouncer: servers.PgBouncer) -> dict[str, str]:
    rows = bouncer.show("CONFIG", user=planner.STATS_USER, password=STATS_PASSWORD)
    return {row["key"]: row["value"] for row in rows}


def assert_serves(bouncer: servers.PgBouncer, database: servers.AppDatabase) -> None:
    app = bouncer.psql(database.user, database.password, database.name)
    assert app.rows("SELECT current_user, count(*) FROM pgbench_branches") == [[database.user, "1"]]


def unknown_parameter_lines(bouncer: servers.PgBouncer) -> list[str]:
    return [line for line in bouncer.log_text().splitlines() if "unknown parameter" in line]


@dataclass(frozen=True)
class Release:
    """A PgBouncer release the tests run: the image tag a profile names for it and
    its binary (None: Debian's 1.18, start_pgbouncer's own)."""

    tag: str
    binary: Path | None

    @property
    def version(self) -> tuple[int, int]:
        return pgbouncer_params.parse_version(self.tag)


@pytest.fixture(params=["1.18", "default"])
def release(request: pytest.FixtureRequest) -> Release:
    """Debian 12's 1.18 (the oldest supported) or the default image's release."""
    if request.param == "1.18":
        return Release(VERSION, None)
    return Release(DEFAULT_TAG, request.getfixturevalue("default_pgbouncer"))


def test_the_default_release_is_the_default_images(default_pgbouncer: Path) -> None:
    assert servers.pgbouncer_version(default_pgbouncer) == DEFAULT_VERSION


# --- the rendered config ----------------------------------------------------------------


def test_rendered_config_runs_with_scram_auth_and_budget_sizes(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer, release: Release
) -> None:
    plan = make_plan(database, version=release.tag)
    assert plan.ok, plan.problem_text()
    budget = plan.budget
    assert budget.client_demand == CLIENTS
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), release.binary)

    # PgBouncer asks for SCRAM-SHA-256 (AuthenticationSASL), not md5 or a clear password.
    assert servers.startup_auth_request(bouncer.port, database.user, database.name) == (
        10,
        ["SCRAM-SHA-256"],
    )
    assert_serves(bouncer, database)
    # A client that can only do SCRAM-SHA-256 gets in with the right password ...
    probe = database.probe(bouncer.port, count=1)
    assert (probe.accepted, probe.refused) == (1, {})
    # ... and neither it nor psql does with a wrong one.
    probe = database.probe(bouncer.port, count=1, password="wrong")
    assert probe.accepted == 0
    assert list(probe.refused) == ["FATAL: SASL authentication failed"]
    wrong = bouncer.psql(database.user, "wrong", database.name).run("SELECT 1")
    assert wrong.returncode != 0
    assert "SASL authentication failed" in wrong.stderr
    assert "password authentication failed" in bouncer.log_text()

    # The admin console, as the stats user, shows the planner's sizes.
    config = show_config(bouncer)
    assert config["max_client_conn"] == str(budget.max_client_conn)
    assert config["default_pool_size"] == str(budget.default_pool_size)
    assert config["reserve_pool_size"] == str(budget.reserve_pool_size)
    assert config["max_db_connections"] == str(budget.max_db_connections)
    assert config["pool_mode"] == "transaction"
    assert config["auth_type"] == "scram-sha-256"
    assert config["listen_addr"] == servers.HOST
    # Every rendered setting was read as written, none ignored.
    assert {key: config.get(key) for key in plan.pooler.settings} == plan.pooler.settings
    assert unknown_parameter_lines(bouncer) == []
    assert int(config["max_client_conn"]) >= CLIENTS

    # stats_users may read but not administer.
    stats = bouncer.psql(planner.STATS_USER, STATS_PASSWORD, "pgbouncer")
    assert stats.rows("SHOW POOLS")
    pause = stats.run("PAUSE")
    assert pause.returncode != 0
    assert "admin access needed" in pause.stderr


# --- 500 clients: pooled vs direct ------------------------------------------------------


def test_500_clients_through_the_pooler_stay_within_the_budget(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer, release: Release
) -> None:
    plan = make_plan(database, version=release.tag)
    assert plan.ok, plan.problem_text()
    limit = plan.budget.max_db_connections
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), release.binary)
    database.wait_for_no_app_backends()

    with servers.Sampler(database.backends, interval=0.1) as seen:
        result = pgbench_500_clients(database, bouncer.port)

    report = f"{result.args}\n{result.output}"
    assert result.returncode == 0, report
    assert result.clients == CLIENTS, report
    assert result.processed == result.expected == CLIENTS * PGBENCH_TRANSACTIONS, report
    assert result.failed_transactions == 0, report
    assert result.connection_errors == [], report
    assert not result.aborted, report
    assert result.tps is not None and result.tps > 0, report
    # Server side: sampled every 0.1 s during the run, never above the budget.
    assert seen.errors == []
    assert len(seen.values) >= 5, seen.values
    # More than one server connection was used (the samples cover the busy
    # phase), yet never more than the budget: 500 clients shared them.
    assert 1 < seen.peak <= limit, f"peak {seen.peak} app backends, budget {limit}"
    pools = bouncer.show("POOLS", user=planner.STATS_USER, password=STATS_PASSWORD)
    app_pool = next(row for row in pools if row["database"] == database.name)
    servers_now = sum(int(app_pool[col]) for col in app_pool if col.startswith("sv_"))
    assert servers_now <= limit


def test_the_same_500_clients_directly_run_out_of_connection_slots(
    database: servers.AppDatabase,
) -> None:
    database.wait_for_no_app_backends()
    result = pgbench_500_clients(database, database.port)
    report = f"{result.args}\n{result.output}"
    assert result.returncode != 0, report
    assert result.slot_errors >= 1, report
    assert any("could not create connection for client" in e for e in result.connection_errors)
    assert result.tps is None, report  # pgbench gave up before running any transaction

    # How many of the 500 get in when they all connect at once: at most the
    # non-reserved slots, the rest are refused for lack of a slot.
    database.wait_for_no_app_backends()
    probe = database.probe(database.port, count=CLIENTS)
    available = database.server.max_connections - database.server.superuser_reserved_connections
    assert 1 <= probe.accepted <= available, probe
    assert probe.failed >= CLIENTS - available, probe
    for message in probe.refused:
        assert any(slot_error in message for slot_error in servers.SLOT_ERRORS), probe


# --- named prepared statements under transaction pooling -------------------------------

PREPARED_TRANSACTIONS = 20  # per client


def test_named_prepared_statements_survive_transaction_pooling_where_the_binding_says(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer, release: Release
) -> None:
    """pgbench -M prepared: each of the 500 clients prepares its statement by name
    (the extended protocol's Parse, as psycopg after prepare_threshold runs, Prisma
    and node-postgres' named queries do) once, then runs it in transactions that
    PgBouncer hands to whichever server connection is free. The default image's
    release keeps the statements (the max_prepared_statements the planner renders
    for it), so its binding says DATABASE_PREPARED_STATEMENTS=true and leaves
    Prisma's pgbouncer=true out; 1.18 loses them, and its binding says so."""
    plan = make_plan(database, version=release.tag)
    assert plan.ok, plan.problem_text()
    keeps = binding.keeps_prepared_statements(plan)
    assert keeps is (release.version >= (1, 21))
    assert ("max_prepared_statements" in plan.pooler.settings) is keeps
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), release.binary)
    database.wait_for_no_app_backends()

    with servers.Sampler(database.backends, interval=0.1) as seen:
        result = database.pgbench(
            bouncer.port,
            clients=CLIENTS,
            jobs=PGBENCH_JOBS,
            transactions=PREPARED_TRANSACTIONS,
            extra=("-S", "-M", "prepared"),
        )

    report = f"{result.args}\n{result.output}"
    if not keeps:
        # a transaction on another server connection than the one it was prepared on
        assert result.returncode != 0, report
        assert "does not exist" in result.output, report
        return
    assert result.returncode == 0, report
    assert result.processed == result.expected == CLIENTS * PREPARED_TRANSACTIONS, report
    assert result.failed_transactions == 0, report
    assert not result.aborted, report
    # 500 clients shared at most the budget's server connections, so their
    # statements moved between them: PgBouncer prepared them on the servers itself.
    assert 1 < seen.peak <= plan.budget.max_db_connections, seen.values
    stats = bouncer.show("STATS", user=planner.STATS_USER, password=STATS_PASSWORD)
    (app,) = [row for row in stats if row["database"] == database.name]
    assert int(app["total_client_parse_count"]) >= CLIENTS, app
    assert int(app["total_server_parse_count"]) >= seen.peak, app


# --- the parameter allowlist against PgBouncer 1.18 -------------------------------------


def sample_value(key: str, param: pgbouncer_params.Param) -> str:
    """A valid value for ``param``; sizing keys get values that fit the test budget."""
    if key == "max_client_conn":
        return str(CLIENTS + connection_budget.ADMIN_CLIENT_SLOTS + 95)  # must cover the demand
    if param.kind == "int":
        return str(min(max(param.low, 10), param.high))
    if param.kind == "bool":
        return "1"
    if param.kind == "enum":
        return param.choices[0]
    if param.kind == "idents":
        return "extra_float_digits"
    if param.kind == "text":
        return "SELECT 1"
    raise AssertionError(f"no sample for {key}: kind {param.kind!r}")


HAVE = pgbouncer_params.parse_version(VERSION)
KNOWN_TO_1_18 = sorted(k for k, p in pgbouncer_params.ALLOWED.items() if p.min_version <= HAVE)
NEWER_THAN_1_18 = sorted(k for k, p in pgbouncer_params.ALLOWED.items() if p.min_version > HAVE)


def test_allowlist_splits_by_version() -> None:
    assert len(KNOWN_TO_1_18) > 30
    assert NEWER_THAN_1_18  # otherwise the rejection test below tests nothing
    assert NEWER_INT_BOUNDS  # and the bounds test of the default release


@pytest.mark.parametrize("key", KNOWN_TO_1_18)
def test_allowlisted_parameter_is_accepted_by_pgbouncer_1_18(
    key: str, database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer
) -> None:
    value = sample_value(key, pgbouncer_params.ALLOWED[key])
    plan = make_plan(database, parameters={key: value})
    assert plan.ok, plan.problem_text()
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database))
    assert f"\n{key} = {value}\n" in bouncer.ini_text
    assert_serves(bouncer, database)
    # 1.18 refuses to start on an unknown key; SHOW CONFIG also proves it read the value.
    assert unknown_parameter_lines(bouncer) == []
    assert show_config(bouncer).get(key) == value


def known_to(version: tuple[int, int]) -> list[str]:
    return sorted(k for k, p in pgbouncer_params.ALLOWED.items() if p.min_version <= version)


def test_all_allowlisted_parameters_together(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer, release: Release
) -> None:
    """Every setting a profile may give for the release, at once, read as written."""
    keys = known_to(release.version)
    parameters = {key: sample_value(key, pgbouncer_params.ALLOWED[key]) for key in keys}
    plan = make_plan(database, parameters=parameters, version=release.tag)
    assert plan.ok, plan.problem_text()
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), release.binary)
    assert_serves(bouncer, database)
    assert unknown_parameter_lines(bouncer) == []
    config = show_config(bouncer)
    assert {key: config.get(key) for key in parameters} == parameters


# Every int setting's lowest and highest allowed value must start PgBouncer:
# the kernel caps some socket options (TCP_KEEPCNT <= 127, TCP_KEEPIDLE and
# TCP_KEEPINTVL <= 32767 s) and PgBouncer exits when it refuses one. The sizing
# keys and min_pool_size (at most the planned pool) are bounded by the budget.
INT_BOUNDS = [
    pytest.param(key, end, id=f"{key}-{end}")
    for key in KNOWN_TO_1_18
    if pgbouncer_params.ALLOWED[key].kind == "int"
    and key not in (*pgbouncer_params.SIZING_KEYS, "min_pool_size")
    for end in ("low", "high")
]


@pytest.mark.parametrize(("key", "end"), INT_BOUNDS)
def test_int_parameter_bounds_are_accepted_by_pgbouncer_1_18(
    key: str, end: str, database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer
) -> None:
    """The planner's low and high bound of every integer setting (sizing keys are
    bounded by the budget instead) start PgBouncer and are read as written."""
    param = pgbouncer_params.ALLOWED[key]
    value = str(param.low if end == "low" else param.high)
    plan = make_plan(database, parameters={key: value})
    assert plan.ok, plan.problem_text()
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database))
    assert_serves(bouncer, database)
    assert show_config(bouncer).get(key) == value


# The keys newer than 1.18 (which the tests above cannot start), at their bounds
# in the default image's release.
NEWER_INT_BOUNDS = [
    pytest.param(key, end, id=f"{key}-{end}")
    for key in known_to(DEFAULT_VERSION)
    if pgbouncer_params.ALLOWED[key].kind == "int" and key not in KNOWN_TO_1_18
    for end in ("low", "high")
]


@pytest.mark.parametrize(("key", "end"), NEWER_INT_BOUNDS)
def test_newer_int_parameter_bounds_are_accepted_by_the_default_release(
    key: str,
    end: str,
    database: servers.AppDatabase,
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
) -> None:
    param = pgbouncer_params.ALLOWED[key]
    value = str(param.low if end == "low" else param.high)
    plan = make_plan(database, parameters={key: value}, version=DEFAULT_TAG)
    assert plan.ok, plan.problem_text()
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), default_pgbouncer)
    assert_serves(bouncer, database)
    assert show_config(bouncer).get(key) == value


def test_min_pool_size_up_to_the_planned_pool_is_kept_by_pgbouncer(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer
) -> None:
    pool = make_plan(database).budget.default_pool_size
    over = make_plan(database, parameters={"min_pool_size": str(pool + 1)})
    assert [p.field for p in over.problems] == ["spec.pooler.parameters.min_pool_size"]
    plan = make_plan(database, parameters={"min_pool_size": str(pool)})
    assert plan.ok, plan.problem_text()
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database))
    assert_serves(bouncer, database)
    assert show_config(bouncer).get("min_pool_size") == str(pool)


@pytest.mark.parametrize("key", NEWER_THAN_1_18)
def test_newer_parameter_is_rejected_for_1_18(
    key: str, database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer
) -> None:
    param = pgbouncer_params.ALLOWED[key]
    value = sample_value(key, param)
    plan = make_plan(database, parameters={key: value})
    assert not plan.ok
    fields = [problem.field for problem in plan.problems]
    assert fields == [f"spec.pooler.parameters.{key}"], plan.problem_text()
    assert "needs PgBouncer >=" in plan.problems[0].message
    assert key not in plan.pooler.settings
    # The value itself is fine: the version it was introduced in accepts it.
    newer = make_plan(
        database, parameters={key: value}, version=".".join(map(str, param.min_version))
    )
    assert newer.ok, newer.problem_text()

    # And 1.18 really does not know the key: written in by hand, it stops PgBouncer.
    with pytest.raises(servers.ServerError, match=f"unknown parameter: pgbouncer/{key}"):
        start_pgbouncer(servers.ini_for(plan, extra=f"{key} = {value}\n"), userlist_for(database))


# --- injection --------------------------------------------------------------------------


QUOTED_USER = "quoted_user"
# A double quote (the auth file's quote character), a doubled one, spaces,
# a single quote, a backslash and comment characters.
QUOTED_PASSWORD = 'pa"ss "" wo\'rd \\ ;# end'


def test_userlist_password_with_quotes_round_trips(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer
) -> None:
    database.server.create_role(QUOTED_USER, QUOTED_PASSWORD)
    userlist = userlist_for(database, **{QUOTED_USER: QUOTED_PASSWORD})
    assert f'"{QUOTED_USER}" "pa""ss """" wo\'rd \\ ;# end"\n' in userlist
    plan = make_plan(database)
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist)

    # The client logs in to PgBouncer, and PgBouncer to Postgres, with that password.
    quoted = bouncer.psql(QUOTED_USER, QUOTED_PASSWORD, database.name)
    assert quoted.rows("SELECT current_user") == [[QUOTED_USER]]
    probe = database.probe(bouncer.port, count=1, user=QUOTED_USER, password=QUOTED_PASSWORD)
    assert probe.accepted == 1, probe
    # The password was not cut at a quote: its prefixes do not work.
    for prefix in ("pa", 'pa"ss ', QUOTED_PASSWORD[:-1]):
        refused = bouncer.psql(QUOTED_USER, prefix, database.name).run("SELECT 1")
        assert refused.returncode != 0
        assert "SASL authentication failed" in refused.stderr


# --- what RELOAD takes -------------------------------------------------------------------


def test_the_settings_that_need_a_restart_are_those_the_default_release_says(
    database: servers.AppDatabase, start_pgbouncer: servers.StartPgBouncer, default_pgbouncer: Path
) -> None:
    """planning.pgbouncer_params.RESTART_SETTINGS (what rolls the write pooler's pods)
    is what the default image's release marks not changeable on RELOAD: a
    release that changes the list fails here, naming the settings."""
    plan = make_plan(database, version=DEFAULT_TAG)
    bouncer = start_pgbouncer(servers.ini_for(plan), userlist_for(database), default_pgbouncer)
    rows = bouncer.show("CONFIG", user=planner.STATS_USER, password=STATS_PASSWORD)
    assert rows and {"key", "changeable"} <= set(rows[0]), rows[:1]
    refused = {row["key"] for row in rows if row["changeable"] == "no"}
    listed = pgbouncer_params.RESTART_SETTINGS
    assert refused == listed, (
        f"PgBouncer {DEFAULT_TAG} refuses on RELOAD {sorted(refused - listed)} beyond the "
        f"list, and takes {sorted(listed - refused)} on RELOAD"
    )
    # every setting the write pooler's pgbouncer.ini sets is one SHOW CONFIG knows,
    # so the split between reloaded and restart settings covers all of them
    rendered = pgbouncer_params.ini_settings(pgbouncer.render_ini(plan))
    assert set(rendered) <= {row["key"] for row in rows}, sorted(rendered)
