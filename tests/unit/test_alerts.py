"""The alert rules, monitors and dashboard built from the plan, and which
Prometheus would select them. Pure: plain profiles in, dicts out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from headroom.api import v1alpha1
from headroom.builders import alert_rules, dashboard, desired
from headroom.planning import credentials, monitoring, planner
from headroom.reconcile import observe
from tests import profiles

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CREDS = credentials.Credentials(
    username="app",
    password="pw",
    stats_password="stats",
    revision="1",
    redis_passwords={"cache": "0123456789abcdef0123", "jobs": "fedcba9876543210fedc"},
)


def _plan(body: dict[str, Any], **facts: Any) -> planner.Plan:
    body.setdefault("metadata", {})["uid"] = "uid-1"
    planned = planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(**facts))
    assert planned.ok, planned.problem_text()
    return planned


def _scaled(**facts: Any) -> planner.Plan:
    return _plan(yaml.safe_load((EXAMPLES / "shop-scaled.yaml").read_text()), **facts)


def rules_by_name(planned: planner.Plan) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for group in alert_rules.rule_groups(planned):
        for rule in group["rules"]:
            found.setdefault(rule["alert"], []).append(rule)
    return found


def test_pool_thresholds_are_shares_of_the_planned_max_db_connections() -> None:
    planned = _scaled()
    assert planned.budget.max_db_connections == 29
    rules = rules_by_name(planned)
    (high,) = rules["HeadroomPoolerConnectionsHigh"]
    (critical,) = rules["HeadroomPoolerConnectionsCritical"]
    assert high["expr"].endswith(">= 15")  # 50% of 29, rounded up (seed 004)
    assert critical["expr"].endswith(">= 27") and critical["labels"]["severity"] == "critical"
    assert "max_db_connections 29" in high["annotations"]["description"]
    assert "spec.database.maxConnections" in high["annotations"]["runbook"]


def test_primary_alert_compares_the_poolers_sum_with_max_connections_minus_reserved() -> None:
    rules = rules_by_name(_scaled())
    (high,) = rules["HeadroomPrimaryConnectionsHigh"]
    assert high["expr"].startswith("sum by (namespace) (pgbouncer_databases_current_connections")
    # 50% of 100 - 3 superuser - 5 direct - 3 postgres_exporter = 89
    assert high["expr"].endswith(">= 45")
    assert "max_connections 100 - reserved 11 = 89" in high["annotations"]["description"]


def test_every_rule_is_filtered_to_the_profile_and_labelled_with_it() -> None:
    body = yaml.safe_load((EXAMPLES / "shop-scaled.yaml").read_text())
    body["metadata"]["namespace"] = "tenant-a"
    body["spec"]["alerts"] = {"labels": {"team": "shop"}}
    rules = [r for rs in rules_by_name(_plan(body)).values() for r in rs]
    assert len(rules) > 15
    for rule in rules:
        assert rule["expr"].count('namespace="tenant-a"') >= 1, rule["alert"]
        assert rule["labels"]["namespace"] == "tenant-a"
        assert rule["labels"]["profile"] == "shop"
        assert rule["labels"]["team"] == "shop"
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}
        # only the profile's own objects: a pod or HPA name of this profile
        assert 'pod=~"shop-' in rule["expr"] or 'horizontalpodautoscaler="' in rule["expr"]


def test_queue_backlog_alert_uses_the_workers_ceiling_and_the_exporter_key() -> None:
    planned = _scaled()
    (backlog,) = rules_by_name(planned)["HeadroomQueueBacklogHigh"]
    assert 'key="bull:emails:wait"' in backlog["expr"]
    assert backlog["expr"].endswith("> 500")  # replicas.max 20 x backlogPerWorker 25
    assert backlog["for"] == "10m"
    # the redis exporter of the queue instance exports that list's length
    pod = desired.build(planned, CREDS)["StatefulSet/shop-redis-jobs"]["spec"]["template"]
    exporter = next(c for c in pod["spec"]["containers"] if c["name"] == "exporter")
    keys = {e["name"]: e.get("value") for e in exporter["env"]}
    assert keys["REDIS_EXPORTER_CHECK_SINGLE_KEYS"] == "db0=bull:emails:wait"


def test_workers_at_max_names_the_hpa_that_scales_them() -> None:
    hpa = rules_by_name(_scaled())["HeadroomWorkersAtMax"][0]["expr"]
    assert 'horizontalpodautoscaler="shop-worker-emails"' in hpa
    assert "kube_horizontalpodautoscaler_spec_max_replicas" in hpa
    keda = rules_by_name(_scaled(keda=True))["HeadroomWorkersAtMax"][0]["expr"]
    assert 'horizontalpodautoscaler="keda-hpa-shop-worker-emails"' in keda


def test_evictions_on_a_queue_instance_are_critical_at_once() -> None:
    rules = rules_by_name(_scaled())
    (queue,) = rules["HeadroomQueueRedisEvicting"]
    assert queue["labels"] == queue["labels"] | {"severity": "critical", "redis": "jobs"}
    assert "for" not in queue
    (cache,) = rules["HeadroomRedisEvicting"]
    assert cache["labels"]["severity"] == "warning" and cache["labels"]["redis"] == "cache"
    # a hit rate only for the cache instance (seed 000: > 80%)
    (hit,) = rules["HeadroomRedisHitRateLow"]
    assert hit["labels"]["redis"] == "cache" and hit["expr"].endswith("< 0.8")


def test_app_rules_use_the_declared_histogram_and_seed_thresholds() -> None:
    body = profiles.base()
    body["spec"]["alerts"] = {
        "app": {
            "p95LatencySeconds": 3,  # seed 003
            "metrics": {"histogram": "http_request_duration_seconds", "statusLabel": "code"},
        }
    }
    rules = rules_by_name(_plan(body))
    latency = rules["HeadroomAppLatencyHigh"][0]["expr"]
    assert latency.startswith("histogram_quantile(0.95, sum by (namespace, le) (rate(")
    assert "http_request_duration_seconds_bucket" in latency and latency.endswith("> 3")
    errors = rules["HeadroomAppErrorRatioHigh"][0]["expr"]
    assert 'code=~"5.."' in errors and errors.endswith("> 0.001")
    assert rules["HeadroomAppMemoryHigh"][0]["expr"].endswith("> 2000000000")
    assert rules["HeadroomAppCPUHigh"][0]["expr"].endswith("> 50")


def test_default_histogram_is_opentelemetry_semconv() -> None:
    rules = rules_by_name(_plan(profiles.base()))
    errors = rules["HeadroomAppErrorRatioHigh"][0]["expr"]
    assert "http_server_request_duration_seconds_count" in errors
    assert 'http_response_status_code=~"5.."' in errors


def test_a_dotted_deployment_name_is_escaped_in_the_pod_pattern() -> None:
    body = profiles.base(**{"app.deployment": "web.v2"})
    cpu = rules_by_name(_plan(body))["HeadroomAppCPUHigh"][0]["expr"]
    assert 'pod=~"web\\\\.v2-[a-z0-9]+-[a-z0-9]+"' in cpu


@pytest.mark.parametrize(
    ("group", "gone"),
    [
        ("pooler", "HeadroomPoolerConnectionsHigh"),
        ("database", "HeadroomPrimaryConnectionsHigh"),
        ("cache", "HeadroomRedisHitRateLow"),
        ("queues", "HeadroomQueueBacklogHigh"),
        ("app", "HeadroomAppCPUHigh"),
    ],
)
def test_a_group_switch_removes_only_that_group(group: str, gone: str) -> None:
    body = yaml.safe_load((EXAMPLES / "shop-scaled.yaml").read_text())
    before = set(rules_by_name(_plan(body)))
    body["spec"]["alerts"] = {group: {"enabled": False}}
    after = set(rules_by_name(_plan(body)))
    assert gone in before and gone not in after
    assert after < before


def test_for_and_severity_come_from_the_group() -> None:
    body = profiles.base()
    body["spec"]["alerts"] = {"pooler": {"for": "2m", "severity": "critical"}}
    rules = rules_by_name(_plan(body))
    (waiting,) = rules["HeadroomPoolerClientsWaiting"]
    assert waiting["for"] == "2m" and waiting["labels"]["severity"] == "critical"


def test_alerts_off_renders_nothing_and_no_condition() -> None:
    body = profiles.base()
    body["spec"]["alerts"] = {"enabled": False}
    planned = _plan(body)
    objects = desired.build(planned, CREDS)
    assert not [k for k in objects if "alert" in k or "dashboard" in k]
    assert observe.alerts_selected(planned, []) is None


def test_without_prometheus_operator_a_rule_file_configmap_and_a_condition_saying_so() -> None:
    planned = _plan(profiles.base())
    objects = desired.build(planned, CREDS)
    rules = objects["ConfigMap/shop-alert-rules"]
    groups = yaml.safe_load(rules["data"]["default-shop.rules.yaml"])["groups"]
    assert groups == alert_rules.rule_groups(planned)
    assert not [k for k in objects if k.split("/")[0] in ("PrometheusRule", "PodMonitor")]
    condition = observe.alerts_selected(planned, [])
    assert condition is not None
    assert (condition.status, condition.reason) == ("False", "NoPrometheusOperator")
    assert "ConfigMap shop-alert-rules" in condition.message


def test_query_time_baseline_compares_each_pool_with_its_own_last_day() -> None:
    body = yaml.safe_load((EXAMPLES / "gym-neon-reads.yaml").read_text())
    body["spec"]["alerts"] = {
        "pooler": {
            "queryTimeBaselineFactor": 1.0000001,
            "queryTimeFloorSeconds": 0.25,
            "write": {"queryTimeBaselineFactor": 4, "queryTimeFloorSeconds": 0.5},
        }
    }
    planned = _plan(body)
    by_pool = rules_by_name(planned)["HeadroomPoolerQueryTimeAboveBaseline"]
    pools = {r["labels"]["pool"]: r for r in by_pool}
    assert set(pools) == {"rw", "ro"}
    # the write pooler's own settings over the group's
    assert "> 4.0 * (" in pools["rw"]["expr"] and pools["rw"]["expr"].endswith(") > 0.5")
    assert "4x" in pools["rw"]["annotations"]["summary"]
    expr = pools["ro"]["expr"]
    recent, _, floor = expr.rpartition(" and ")
    # the model's exact factor, against the same ratio over the baseline window
    assert "> 1.0000001 * (" in recent
    assert recent.count("[5m]") == 2 and recent.count("[1d]") == 2
    assert floor.endswith("[5m]))) > 0.25")
    assert f'pod=~"{planned.name}-pooler-ro-[a-z0-9]+-[a-z0-9]+"' in expr
    # both exporter namings: v0.10's pgbouncer_stats_*, v0.11's pgbouncer_stats_totals_*
    assert '__name__=~"pgbouncer_stats_(totals_)?queries_duration_seconds_total"' in expr
    assert '__name__=~"pgbouncer_stats_(totals_)?queries_pooled_total"' in expr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("queryTimeBaselineFactor", 1),
        ("queryTimeBaselineFactor", 101),
        ("queryTimeFloorSeconds", 0),
        ("write.queryTimeBaselineFactor", 0.5),
    ],
)
def test_query_time_settings_out_of_range_are_refused_naming_the_field(
    field: str, value: float
) -> None:
    body = profiles.base()
    side, _, name = field.rpartition(".")
    body["spec"]["alerts"] = {"pooler": {side: {name: value}} if side else {name: value}}
    body.setdefault("metadata", {})["uid"] = "uid-1"
    with pytest.raises(ValueError, match=name):
        v1alpha1.parse_profile(body)


def test_cnpg_poolers_get_no_pgbouncer_rules() -> None:
    body = yaml.safe_load((EXAMPLES / "shop-cnpg.yaml").read_text())
    from headroom.planning import read_plan

    cluster = read_plan.CnpgCluster(name="shop-pg", instances=3, max_connections=200)
    rules = rules_by_name(_plan(body, cnpg=True, cnpg_cluster=cluster))
    assert not [r for r in rules if r.startswith("HeadroomPooler")]
    assert "HeadroomPrimaryConnectionsHigh" not in rules


def test_read_pool_gets_its_own_pool_alerts() -> None:
    body = yaml.safe_load((EXAMPLES / "gym-neon-reads.yaml").read_text())
    planned = _plan(body)
    pools = {
        r["labels"]["pool"]: r for r in rules_by_name(planned)["HeadroomPoolerConnectionsHigh"]
    }
    assert set(pools) == {"rw", "ro"}
    assert f'pod=~"{planned.name}-pooler-ro-[a-z0-9]+-[a-z0-9]+"' in pools["ro"]["expr"]


# -- prometheus-operator delivery -------------------------------------------------


def _prometheus(name: str = "k8s", namespace: str = "monitoring", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


OWN = {"app.kubernetes.io/managed-by": "headroom"}


def test_selection_copies_match_labels_and_names_the_prometheus() -> None:
    prom = _prometheus(
        ruleSelector={"matchLabels": {"role": "alert-rules"}},
        ruleNamespaceSelector={},
        podMonitorSelector={"matchLabels": {"release": "kps"}},
        podMonitorNamespaceSelector={},
        serviceMonitorSelector={
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["a", "b"]}]
        },
        serviceMonitorNamespaceSelector={"matchLabels": {"monitored": "yes"}},
    )
    found = monitoring.select(
        [prom], namespace="shop", namespace_labels={"monitored": "yes"}, own_labels=OWN
    )
    assert found.labels("PrometheusRule") == {"role": "alert-rules"}
    assert found.labels("PodMonitor") == {"release": "kps"}
    assert found.labels("ServiceMonitor") == {"team": "a"}
    assert all(p.prometheus == "monitoring/k8s" for p in found.picks)


def test_selection_null_selectors_select_nothing_and_own_namespace_only() -> None:
    nothing = _prometheus(ruleNamespaceSelector={})  # no ruleSelector: selects no rules
    found = monitoring.select([nothing], namespace="shop", namespace_labels={}, own_labels=OWN)
    assert not found.pick("PrometheusRule").selected
    assert "no ruleSelector" in found.pick("PrometheusRule").why_not[0]
    own_ns = _prometheus(ruleSelector={})  # null namespace selector: its own namespace only
    found = monitoring.select([own_ns], namespace="shop", namespace_labels={}, own_labels=OWN)
    assert "does not admit namespace shop" in found.pick("PrometheusRule").why_not[0]
    found = monitoring.select([own_ns], namespace="monitoring", namespace_labels={}, own_labels=OWN)
    assert found.pick("PrometheusRule").selected and found.labels("PrometheusRule") == {}


def test_selection_never_overrides_headroom_labels() -> None:
    prom = _prometheus(
        ruleSelector={"matchLabels": {"app.kubernetes.io/managed-by": "helm"}},
        ruleNamespaceSelector={},
    )
    found = monitoring.select([prom], namespace="shop", namespace_labels={}, own_labels=OWN)
    assert not found.pick("PrometheusRule").selected
    assert "cannot match" in found.pick("PrometheusRule").why_not[0]


def test_selection_takes_the_first_prometheus_that_admits_the_namespace() -> None:
    other = _prometheus("a", "team-b", ruleSelector={}, ruleNamespaceSelector=None)
    chosen = _prometheus("b", "monitoring", ruleSelector={"matchLabels": {"x": "1"}})
    chosen["spec"]["ruleNamespaceSelector"] = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["shop"]}
        ]
    }
    del other["spec"]["ruleNamespaceSelector"]
    found = monitoring.select(
        [other, chosen], namespace="shop", namespace_labels={}, own_labels=OWN
    )
    pick = found.pick("PrometheusRule")
    assert pick.prometheus == "monitoring/b" and dict(pick.labels) == {"x": "1"}


def _selected_plan() -> planner.Plan:
    planned = _scaled()
    prom = _prometheus(
        ruleSelector={"matchLabels": {"role": "alert-rules"}},
        ruleNamespaceSelector={},
        podMonitorSelector={"matchLabels": {"release": "kps"}},
        podMonitorNamespaceSelector={},
        serviceMonitorSelector={"matchLabels": {"release": "kps"}},
        serviceMonitorNamespaceSelector={},
    )
    selection = monitoring.select(
        [prom],
        namespace=planned.namespace,
        namespace_labels={},
        own_labels=monitoring.own_labels(planned.name, app_deployment=planned.app.deployment),
    )
    facts = dataclasses.replace(
        planned.facts, prometheus_operator=True, prometheus_selection=selection
    )
    return dataclasses.replace(planned, facts=facts)


def test_with_prometheus_operator_rules_and_monitors_carry_the_selected_labels() -> None:
    planned = _selected_plan()
    objects = desired.build(planned, CREDS, app_pod_selector={"matchLabels": {"app": "web"}})
    rule = objects["PrometheusRule/shop-alerts"]
    assert rule["metadata"]["labels"]["role"] == "alert-rules"
    assert rule["spec"]["groups"] == alert_rules.rule_groups(planned)
    assert "ConfigMap/shop-alert-rules" not in objects
    pooler = objects["ServiceMonitor/shop-pooler-rw"]
    assert pooler["metadata"]["labels"]["release"] == "kps"
    assert pooler["spec"]["endpoints"][0]["port"] == "metrics"
    # the Service it selects carries the port and the labels
    service = objects["Service/shop-pooler-rw"]
    assert (
        pooler["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert any(p["name"] == "metrics" and p["port"] == 9127 for p in service["spec"]["ports"])
    redis_monitor = objects["PodMonitor/shop-redis-jobs"]
    pod = objects["StatefulSet/shop-redis-jobs"]["spec"]["template"]
    assert (
        redis_monitor["spec"]["selector"]["matchLabels"].items()
        <= pod["metadata"]["labels"].items()
    )
    app = objects["PodMonitor/shop-app"]
    assert app["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    assert app["spec"]["podMetricsEndpoints"][0]["portNumber"] == 9464
    condition = observe.alerts_selected(
        planned, [k for k in objects if "Monitor" in k or "Rule" in k]
    )
    assert condition is not None and condition.status == "True"
    assert (
        "PrometheusRule by Prometheus monitoring/k8s (labels role=alert-rules)" in condition.message
    )


def test_no_prometheus_or_none_selecting_is_a_false_condition() -> None:
    planned = _scaled(prometheus_operator=True)
    keys = ["PrometheusRule/shop-alerts"]
    condition = observe.alerts_selected(planned, keys)
    assert condition is not None and (condition.status, condition.reason) == (
        "False",
        "NoPrometheus",
    )
    selection = monitoring.select(
        [_prometheus(ruleSelector={"matchLabels": {"a": "b"}})],
        namespace="default",
        namespace_labels={},
        own_labels={},
    )
    facts = dataclasses.replace(planned.facts, prometheus_selection=selection)
    condition = observe.alerts_selected(dataclasses.replace(planned, facts=facts), keys)
    assert condition is not None and (condition.status, condition.reason) == (
        "False",
        "NotSelected",
    )
    assert "ruleNamespaceSelector does not admit namespace default" in condition.message


def test_dashboard_is_a_sidecar_configmap_with_the_plan_numbers() -> None:
    planned = _scaled()
    (configmap,) = dashboard.build(planned)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    model = json.loads(next(iter(configmap["data"].values())))
    titles = [p["title"] for p in model["panels"]]
    assert titles[0] == "Primary connections: budget vs held"
    assert "Redis cache: hit rate" in titles and "Queue emails: backlog" in titles
    exprs = [t["expr"] for p in model["panels"] for t in p["targets"]]
    assert "vector(89)" in exprs and "vector(500)" in exprs
    assert any("kube_horizontalpodautoscaler_status_current_replicas" in e for e in exprs)


def test_labels_are_carried_while_the_namespace_is_not_admitted() -> None:
    prom = _prometheus(
        ruleSelector={"matchLabels": {"role": "rules"}},
        ruleNamespaceSelector={"matchLabels": {"monitoring": "on"}},
    )
    found = monitoring.select([prom], namespace="shop", namespace_labels={}, own_labels=OWN)
    pick = found.pick("PrometheusRule")
    assert not pick.selected and dict(pick.labels) == {"role": "rules"}
    found = monitoring.select(
        [prom], namespace="shop", namespace_labels={"monitoring": "on"}, own_labels=OWN
    )
    assert found.pick("PrometheusRule").selected


def test_replica_lag_alert_reads_the_operators_condition_gauge() -> None:
    body = yaml.safe_load((EXAMPLES / "shop-standbys.yaml").read_text())
    planned = _plan(body)
    (lagging,) = rules_by_name(planned)["HeadroomReadReplicaLagging"]
    assert 'condition="ReadReplicasInPool", status="False"' in lagging["expr"]
    assert f'profile="{planned.name}"' in lagging["expr"]
    assert planned.read is not None
    assert f"maxLagSeconds {planned.read.max_lag_seconds}" in lagging["annotations"]["description"]
    # where the operator does not measure the replicas (readLimits false) there is no verdict
    body["spec"]["database"]["readLimits"] = False
    assert "HeadroomReadReplicaLagging" not in rules_by_name(_plan(body))
