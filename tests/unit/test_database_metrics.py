"""The database servers' own metrics: where they come from (postgres_exporter
per server, or CloudNativePG's), what the exporters cost the budget, how they
run, the rules and conditions on them, and the per-instance, counters and
per-route settings beside them. Pure: profiles in, plans and dicts out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from headroom.api import conditions, v1alpha1
from headroom.builders import desired, postgres_metrics
from headroom.planning import credentials, database_metrics, planner, read_plan
from headroom.reconcile import live_checks, observe
from tests import profiles
from tests.unit import test_alerts, test_golden


def _plan(body: dict[str, Any], **facts: Any) -> planner.Plan:
    body.setdefault("metadata", {})["uid"] = "uid-1"
    return planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(**facts))


def _example(name: str, **facts: Any) -> planner.Plan:
    root = Path(__file__).resolve().parents[2]
    planned = _plan(yaml.safe_load((root / "examples" / f"{name}.yaml").read_text()), **facts)
    assert planned.ok, planned.problem_text()
    return planned


STANDBYS = {
    "database.readReplicas": {
        "mode": "streaming",
        "streaming": {"standbys": 2, "replicationSecret": {"name": "repl"}},
    }
}


# -- where the metrics come from, and what they cost --------------------------


def test_one_exporter_per_server_each_counted_in_that_servers_budget() -> None:
    planned = _plan(profiles.base(**STANDBYS))
    metrics = planned.database_metrics
    assert metrics is not None and metrics.source == database_metrics.EXPORTER
    assert [s.name for s in metrics.servers] == ["primary", "standby-0", "standby-1"]
    assert planned.exporter_connections == database_metrics.EXPORTER_CONNECTIONS == 3
    assert planned.read is not None and planned.read.exporter_connections == 3
    # the primary keeps 3 superuser + 5 direct + 3 for its exporter
    assert planned.budget.reserved == 11
    off = _plan(profiles.base(**STANDBYS, **{"database.metrics": {"enabled": False}}))
    assert off.database_metrics is None and off.exporter_connections == 0
    assert off.budget.reserved == 8
    assert off.read is not None and off.read.budget.available == planned.read.budget.available + 3
    assert (
        desired.build(off, test_golden.fixed_credentials(off))
        .keys()
        .isdisjoint({"Deployment/shop-pg-metrics", "NetworkPolicy/shop-pg-metrics"})
    )


def test_a_shared_server_counts_the_other_profiles_exporters() -> None:
    planned = _plan(profiles.base())
    (opened,) = planned.opened().values()
    assert opened == planned.budget.server_connections + 3


def test_cloudnative_pg_metrics_replace_the_exporter() -> None:
    body = profiles.base(
        **{
            "database.host": "shop-pg-rw",
            "database.readReplicas": {"mode": "cnpg", "cnpg": {"cluster": "shop-pg"}},
        }
    )
    cluster = read_plan.CnpgCluster(name="shop-pg", instances=3, max_connections=200)
    with_cnpg = _plan(body, cnpg=True, cnpg_cluster=cluster)
    metrics = with_cnpg.database_metrics
    assert metrics is not None and metrics.source == database_metrics.CNPG
    assert metrics.servers == () and with_cnpg.exporter_connections == 0
    objects = desired.build(with_cnpg, test_golden.fixed_credentials(with_cnpg))
    assert not [k for k in objects if "pg-metrics" in k and not k.startswith("ConfigMap")]
    rules = test_alerts.rules_by_name(with_cnpg)
    (connections,) = rules["HeadroomDatabaseConnectionsHigh"]
    assert (
        "cnpg_backends_total" in connections["expr"]
        and 'pod=~"shop-pg-[0-9]+"' in connections["expr"]
    )
    assert connections["expr"].endswith(">= 99")  # 50% of 200 - 3
    assert connections["labels"]["server"] == "shop-pg"
    assert "cnpg_pg_replication_lag" in rules["HeadroomReplicaLagHigh"][0]["expr"]
    assert "HeadroomStatementsSlow" not in rules  # CNPG's default queries have none
    # without CNPG: an exporter in front of the primary and the Cluster's -ro Service
    without = _plan(body)
    assert without.database_metrics is not None
    assert [s.name for s in without.database_metrics.servers] == ["primary", "cnpg-ro"]


# -- the exporter's pods ----------------------------------------------------------


def _exporter(planned: planner.Plan, server: str = "primary") -> dict[str, Any]:
    objects = postgres_metrics.build(planned, test_golden.fixed_credentials(planned))
    name = planned.names.pg_metrics(server)
    (found,) = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == name]
    return found


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("disable", "sslmode=disable"),
        # lib/pq has no prefer/allow: plain text, which works with and without TLS
        ("prefer", "sslmode=disable"),
        ("allow", "sslmode=disable"),
        ("require", "sslmode=require"),
    ],
)
def test_the_exporter_connects_with_an_sslmode_lib_pq_knows(mode: str, expected: str) -> None:
    planned = _plan(profiles.base(**{"database.sslMode": mode}))
    env = {
        e["name"]: e for e in _exporter(planned)["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["DATA_SOURCE_URI"]["value"] == f"db:5432/shop?{expected}"


def test_verify_full_mounts_the_servers_ca_and_names_it() -> None:
    planned = _plan(
        profiles.base(
            **{"database.sslMode": "verify-full", "database.serverCASecret": {"name": "db-ca"}}
        )
    )
    pod = _exporter(planned)["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    uri = env["DATA_SOURCE_URI"]["value"]
    assert uri.endswith(f"?sslmode=verify-full&sslrootcert={postgres_metrics.CA_DIR}/ca.crt")
    assert pod["spec"]["volumes"][0]["secret"]["secretName"] == "db-ca"
    assert "server-ca=" in pod["metadata"]["annotations"]["headroom.dev/inputs-revision"]


def test_the_login_stays_in_its_secret_and_the_pod_is_restricted() -> None:
    planned = _plan(profiles.base())
    deployment = _exporter(planned)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for key, secret_key in (("DATA_SOURCE_USER", "username"), ("DATA_SOURCE_PASS", "password")):
        assert env[key]["valueFrom"] == {
            "secretKeyRef": {"name": "db-credentials", "key": secret_key}
        }
    assert test_golden.LOGIN.password not in yaml.safe_dump(deployment)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # never two at once (each holds its connections), and probes that open none
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert "tcpSocket" in container["readinessProbe"]
    # the per-table collectors (a series per table) and the WAL directory's are off
    assert "--no-collector.stat_user_tables" in container["args"]
    assert "--collector.stat_statements" not in container["args"]


def test_a_monitoring_role_collects_statements_and_rolls_the_exporter_on_its_change() -> None:
    body = profiles.base(**{"database.metrics": {"credentialsSecret": {"name": "monitor"}}})
    planned = _plan(body)
    metrics = planned.database_metrics
    assert metrics is not None and metrics.statements
    creds = test_golden.fixed_credentials(planned)
    creds = credentials.Credentials(**{**creds.__dict__, "monitor_revision": "7"})
    (deployment,) = [o for o in postgres_metrics.build(planned, creds) if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "--collector.stat_statements" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["DATA_SOURCE_PASS"]["valueFrom"]["secretKeyRef"]["name"] == "monitor"
    revision = deployment["spec"]["template"]["metadata"]["annotations"]
    assert revision["headroom.dev/inputs-revision"] == "monitor-login=7"
    assert "HeadroomStatementsSlow" in test_alerts.rules_by_name(planned)


def test_the_network_policy_admits_only_the_scrapers() -> None:
    planned = _plan(profiles.base(**{"network.monitoringNamespace": "monitoring"}))
    (policy,) = [
        o
        for o in postgres_metrics.build(planned, test_golden.fixed_credentials(planned))
        if o["kind"] == "NetworkPolicy"
    ]
    assert policy["spec"]["ingress"] == [
        {
            "from": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
            "ports": [{"port": 9187}],
        }
    ]


# -- the rules ------------------------------------------------------------------


def test_the_servers_own_connections_warn_at_the_share_or_the_absolute_count() -> None:
    rules = test_alerts.rules_by_name(_plan(profiles.base()))
    (high,) = rules["HeadroomDatabaseConnectionsHigh"]
    assert high["expr"].startswith("sum by (namespace, pod) (pg_stat_database_numbackends{")
    assert high["expr"].endswith(">= 49")  # 50% of 100 - 3 superuser-reserved
    counted = _plan(
        profiles.base(
            **{"alerts.database": {"connectionsWarningCount": 50, "connectionsCriticalCount": 90}}
        )
    )
    counted_rules = test_alerts.rules_by_name(counted)
    assert counted_rules["HeadroomDatabaseConnectionsHigh"][0]["expr"].endswith(">= 50")
    assert counted_rules["HeadroomDatabaseConnectionsCritical"][0]["expr"].endswith(">= 90")
    # the poolers' own sum is still there, against the budget's available
    assert counted_rules["HeadroomPrimaryConnectionsHigh"][0]["expr"].endswith(">= 45")


def test_a_count_no_server_can_reach_is_refused_naming_the_field() -> None:
    planned = _plan(profiles.base(**{"alerts.database": {"connectionsWarningCount": 101}}))
    assert [p.field for p in planned.problems] == ["spec.alerts.database.connectionsWarningCount"]
    assert "above max_connections 100 of the primary server" in planned.problem_text()
    with pytest.raises(v1alpha1.ProfileError, match="connectionsWarningCount"):
        v1alpha1.parse_profile(
            profiles.base(
                **{
                    "alerts.database": {
                        "connectionsWarningCount": 60,
                        "connectionsCriticalCount": 50,
                    }
                }
            )
        )


def test_slow_queries_read_the_app_databases_active_client_sessions_without_for() -> None:
    planned = _plan(profiles.base(**STANDBYS, **{"alerts.database": {"slowQuerySeconds": 0.1}}))
    slow = test_alerts.rules_by_name(planned)["HeadroomQuerySlow"]
    assert [r["labels"]["server"] for r in slow] == ["primary", "standby-0", "standby-1"]
    for rule in slow:
        assert 'datname="shop", state="active", backend_type="client backend"' in rule["expr"]
        assert rule["expr"].endswith("> 0.1") and "for" not in rule
    (lag,) = [
        r
        for r in test_alerts.rules_by_name(planned)["HeadroomReplicaLagHigh"]
        if r["labels"]["server"] == "standby-0"
    ]
    assert lag["expr"].endswith("> 30")  # readReplicas.maxLagSeconds by default
    assert 'pod=~"shop-pg-metrics-standby-0-[a-z0-9]+-[a-z0-9]+"' in lag["expr"]


def test_the_query_rate_sums_every_server_of_the_profile() -> None:
    planned = _plan(profiles.base(**STANDBYS, **{"alerts.database": {"queryRatePerSecond": 100}}))
    (rate,) = test_alerts.rules_by_name(planned)["HeadroomDatabaseQueryRateHigh"]
    assert "shop-pg-metrics-[a-z0-9]+-[a-z0-9]+|shop-pg-metrics-standby-0" in rate["expr"]
    assert "pg_stat_database_xact_rollback" in rate["expr"] and rate["expr"].endswith("> 100")
    assert "HeadroomDatabaseQueryRateHigh" not in test_alerts.rules_by_name(_plan(profiles.base()))


def test_settings_that_cannot_apply_are_refused_naming_the_field() -> None:
    cases = {
        "spec.alerts.pooler.read": {"alerts.pooler": {"read": {"maxWaitSeconds": 2}}},
        "spec.alerts.database.replicaLagSeconds": {"alerts.database": {"replicaLagSeconds": 5}},
        "spec.alerts.cache.instances.nope": {
            "cache": {"instances": [{"name": "jobs", "use": "queue"}]},
            "alerts.cache": {"instances": {"nope": {"enabled": False}}},
        },
        "spec.alerts.cache.instances.jobs.hitRateMin": {
            "cache": {"instances": [{"name": "jobs", "use": "queue"}]},
            "alerts.cache": {"instances": {"jobs": {"hitRateMin": 0.5}}},
        },
        "spec.alerts.app.routes": {
            "alerts.app": {
                "metrics": {"enabled": False},
                "routes": [{"route": "/", "p95LatencySeconds": 1}],
            }
        },
    }
    for field, overrides in cases.items():
        planned = _plan(profiles.base(**overrides))
        assert [p.field for p in planned.problems] == [field], planned.problem_text()


# -- per pool, per instance, counters, routes ---------------------------------------


def test_each_pooler_and_instance_takes_its_own_settings_over_the_groups() -> None:
    body = profiles.base(
        **{
            "database.readReplicas": profiles.external_replicas({"host": "r1"}),
            "cache": {
                "instances": [
                    {"name": "cache", "use": "cache"},
                    {"name": "sessions", "use": "cache"},
                ]
            },
            "alerts.pooler": {"read": {"maxWaitSeconds": 3, "connectionsWarningPercent": 70}},
            "alerts.cache": {
                "instances": {
                    "cache": {"hitRateMin": 0.95, "evictions": False},
                    "sessions": {"enabled": False},
                }
            },
        }
    )
    rules = test_alerts.rules_by_name(_plan(body))
    waits = {r["labels"]["pool"]: r["expr"] for r in rules["HeadroomPoolerMaxWaitHigh"]}
    assert waits["rw"].endswith("> 1") and waits["ro"].endswith("> 3")
    (hit,) = rules["HeadroomRedisHitRateLow"]
    assert hit["labels"]["redis"] == "cache" and hit["expr"].endswith("< 0.95")
    assert "HeadroomRedisEvicting" not in rules  # cache: off; sessions: every alert off
    assert {r["labels"]["redis"] for r in rules["HeadroomRedisDown"]} == {"cache"}
    off = profiles.base(**{"alerts.pooler": {"write": {"enabled": False}}})
    assert "HeadroomPoolerConnectionsHigh" not in test_alerts.rules_by_name(_plan(off))
    with pytest.raises(v1alpha1.ProfileError, match=r"spec\.alerts\.pooler\.write"):
        v1alpha1.parse_profile(
            profiles.base(**{"alerts.pooler": {"write": {"connectionsWarningPercent": 95}}})
        )


def test_a_counters_instance_never_evicts_has_no_hit_rate_and_its_own_binding_key() -> None:
    body = profiles.base(
        **{
            "cache": {
                "instances": [
                    {"name": "cache", "use": "cache"},
                    {"name": "counters", "use": "counters", "persistence": {"size": "1Gi"}},
                ]
            }
        }
    )
    planned = _plan(body)
    assert planned.ok, planned.problem_text()
    assert planned.redis_named("counters").eviction_policy == "noeviction"
    rules = test_alerts.rules_by_name(planned)
    assert {r["labels"]["redis"] for r in rules["HeadroomRedisHitRateLow"]} == {"cache"}
    assert {r["labels"]["redis"] for r in rules["HeadroomRedisEvicting"]} == {"cache"}
    (evicting,) = rules["HeadroomCountersRedisEvicting"]
    assert evicting["labels"]["severity"] == "critical" and "for" not in evicting
    creds = test_golden.fixed_credentials(planned)
    data = profiles.secret_values(desired.build(planned, creds)["Secret/shop-binding"])
    assert data["REDIS_COUNTERS_URL"] == data["REDIS_COUNTERS_URL"] != data["REDIS_CACHE_URL"]
    assert data["REDIS_URL"] == data["REDIS_CACHE_URL"]  # never the counters when a cache is there
    alone = _plan(
        profiles.base(**{"cache": {"instances": [{"name": "limits", "use": "counters"}]}})
    )
    data = profiles.secret_values(
        desired.build(alone, test_golden.fixed_credentials(alone))["Secret/shop-binding"]
    )
    assert data["REDIS_URL"] == data["REDIS_COUNTERS_URL"] == data["REDIS_LIMITS_URL"]
    with pytest.raises(v1alpha1.ProfileError, match="evictionPolicy"):
        v1alpha1.parse_profile(
            profiles.base(
                **{
                    "cache": {
                        "instances": [
                            {"name": "c", "use": "counters", "evictionPolicy": "volatile-lru"}
                        ]
                    }
                }
            )
        )
    named = _plan(profiles.base(**{"cache": {"instances": [{"name": "counters", "use": "cache"}]}}))
    assert [p.field for p in named.problems] == ["spec.cache.instances[0].name"]


def test_route_targets_are_one_rule_on_the_route_label() -> None:
    body = profiles.base(
        **{
            "alerts.app": {
                "routes": [
                    {"route": "/week/[n]", "p95LatencySeconds": 0.1},
                    {"prefix": "/api.v1/", "p95LatencySeconds": 0.05},
                ]
            }
        }
    )
    (rule,) = test_alerts.rules_by_name(_plan(body))["HeadroomRouteLatencyHigh"]
    assert 'http_route="/week/[n]"' in rule["expr"] and rule["expr"].count(" or ") == 1
    assert 'http_route=~"/api\\\\.v1/.*"' in rule["expr"]
    assert "sum by (namespace, http_route, le)" in rule["expr"]
    with pytest.raises(v1alpha1.ProfileError, match="route"):
        v1alpha1.parse_profile(
            profiles.base(**{"alerts.app": {"routes": [{"route": '/a"b', "p95LatencySeconds": 1}]}})
        )
    with pytest.raises(v1alpha1.ProfileError, match="exactly one of"):
        v1alpha1.parse_profile(
            profiles.base(**{"alerts.app": {"routes": [{"p95LatencySeconds": 1}]}})
        )


# -- conditions -------------------------------------------------------------------


def test_statement_stats_says_why_there_are_none() -> None:
    plain = live_checks.statement_stats(_plan(profiles.base()), None)
    assert plain is not None and plain.reason == "NeedsMonitoringRole"
    monitored = _plan(
        profiles.base(**{"database.metrics": {"credentialsSecret": {"name": "monitor"}}})
    )
    limits = planner.PrimaryLimits(max_connections=100, superuser_reserved_connections=3)
    found = live_checks.statement_stats(monitored, limits)
    assert found is not None and (found.status, found.reason) == ("True", "Collected")
    missing = planner.PrimaryLimits(
        max_connections=100,
        superuser_reserved_connections=3,
        statements_missing='UndefinedTable: relation "pg_stat_statements" does not exist',
    )
    found = live_checks.statement_stats(monitored, missing)
    assert found is not None and found.reason == "ExtensionMissing"
    assert "CREATE EXTENSION pg_stat_statements" in found.message
    unread = live_checks.statement_stats(monitored, None)
    assert unread is not None and unread.status == "Unknown"
    off = _plan(profiles.base(**{"database.metrics": {"enabled": False}}))
    assert live_checks.statement_stats(off, None) is None
    assert conditions.STATEMENT_STATS in conditions.INFORMATIONAL


def test_database_metrics_condition_follows_the_exporters() -> None:
    planned = _plan(profiles.base(**STANDBYS))
    ready = {
        f"Deployment/{planned.names.pg_metrics(s)}": {
            "metadata": {"generation": 1},
            "spec": {"replicas": 1},
            "status": {"observedGeneration": 1, "readyReplicas": 1, "replicas": 1},
        }
        for s in ("primary", "standby-0", "standby-1")
    }
    found = {c.type: c for c in observe.components(planned, ready, app_found=True)}
    assert found["DatabaseMetrics"].reason == "ExportersReady"
    del ready["Deployment/shop-pg-metrics-standby-1"]
    found = {c.type: c for c in observe.components(planned, ready, app_found=True)}
    assert found["DatabaseMetrics"].status == "False"
    assert "shop-pg-metrics-standby-1 not applied" in found["DatabaseMetrics"].message
    missing = {
        c.type: c for c in observe.components(planned, ready, app_found=True, monitor_found=False)
    }
    assert missing["DatabaseMetrics"].reason == "MonitoringCredentialsNotFound"
