"""``headroom plan`` and ``headroom render`` on the examples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from headroom import cli
from headroom.api import v1alpha1
from headroom.builders import desired
from headroom.planning import planner

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_plan_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(EXAMPLES / "shop.yaml")]) == 0
    out = capsys.readouterr().out
    assert "client demand       100" in out
    assert "server connections  87 of 89" in out
    assert "database metrics    postgres_exporter on 1 server (3 connections each" in out


def test_plan_exits_1_with_admission_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(EXAMPLES / "gym-session.yaml")]) == 1
    err = capsys.readouterr().err
    assert "spec.app.capacity: app ceiling 20 pods x 5 connections per pod" in err
    assert "100 session connections > 89 available" in err


def test_render_outputs_every_child(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(EXAMPLES / "shop.yaml"), "--app-selector", "app=web"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ConfigMap/shop-alert-rules",
        "ConfigMap/shop-dashboard",
        "ConfigMap/shop-pooler-config",
        "ConfigMap/shop-pooler-state",
        "Deployment/shop-pg-metrics",
        "Deployment/shop-pooler",
        "HorizontalPodAutoscaler/shop-app",
        "NetworkPolicy/shop-pg-metrics",
        "NetworkPolicy/shop-pooler",
        "PodDisruptionBudget/shop-app",
        "PodDisruptionBudget/shop-pooler",
        "Role/shop-pooler",
        "RoleBinding/shop-pooler",
        "Secret/shop-binding",
        "Secret/shop-pooler-auth",
        "Service/shop-pooler-rw",
        "ServiceAccount/shop-pooler",
    ]
    assert all("ownerReferences" not in d["metadata"] for d in docs)


APP = """---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shop-web, namespace: default}
spec:
  selector: {matchLabels: {app: shop-web, tier: web}}
  template:
    metadata: {labels: {app: shop-web, tier: web}}
    spec: {containers: [{name: web, image: registry.example/web:1}]}
"""


def _policies(out: str) -> dict[str, Any]:
    return {
        d["metadata"]["name"]: d for d in yaml.safe_load_all(out) if d["kind"] == "NetworkPolicy"
    }


def test_render_takes_the_app_selector_from_its_deployment_as_the_operator_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scaled = (EXAMPLES / "shop-scaled.yaml").read_text()
    together = tmp_path / "together.yaml"
    together.write_text(scaled + APP)
    assert cli.main(["render", str(together)]) == 0
    from_file = _policies(capsys.readouterr().out)
    app = tmp_path / "app.yaml"
    app.write_text(APP)
    assert cli.main(["render", str(EXAMPLES / "shop-scaled.yaml"), "--with", str(app)]) == 0
    from_with = _policies(capsys.readouterr().out)
    flag = ["--app-selector", "app=shop-web,tier=web"]
    assert cli.main(["render", str(EXAMPLES / "shop-scaled.yaml"), *flag]) == 0
    from_flag = _policies(capsys.readouterr().out)
    # the operator: the same builders with the Deployment's spec.selector
    body = yaml.safe_load(scaled)
    planned = planner.plan(v1alpha1.parse_profile(body))
    creds = cli.placeholder_credentials(v1alpha1.parse_profile(body), planned)
    operator = {
        key.split("/", 1)[1]: obj
        for key, obj in desired.build(
            planned, creds, app_pod_selector={"matchLabels": {"app": "shop-web", "tier": "web"}}
        ).items()
        if key.startswith("NetworkPolicy/")
    }
    assert from_file == from_with == from_flag == operator
    # every policy in front of something the binding names admits the app's pods
    served = {"shop-pooler", "shop-redis-cache", "shop-redis-jobs"}
    assert set(operator) == served | {"shop-pg-metrics"}
    app_pods = {"podSelector": {"matchLabels": {"app": "shop-web", "tier": "web"}}}
    for name in served:
        peers = [peer for rule in operator[name]["spec"]["ingress"] for peer in rule["from"]]
        assert app_pods in peers
    # the database exporter's admits only the scrapers (the profile's namespace)
    exporter = operator["shop-pg-metrics"]["spec"]["ingress"]
    assert exporter == [{"from": [{"podSelector": {}}], "ports": [{"port": 9187}]}]


def test_render_refuses_policies_that_would_cut_the_app_off(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["render", str(EXAMPLES / "shop.yaml")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the NetworkPolicies need the pod selector of Deployment default/shop-web" in err
    assert "--app-selector" in err
    # --rules renders no NetworkPolicy, so it needs no selector
    assert cli.main(["render", "--rules", str(EXAMPLES / "shop.yaml")]) == 0


@pytest.mark.parametrize("bad", ["app", "app=", "=web", "app=a b", "a b=c", "app=web,"])
def test_a_bad_app_selector_is_refused(bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(EXAMPLES / "shop.yaml"), "--app-selector", bad]) == 1
    assert capsys.readouterr().err.startswith("error: --app-selector: ")


def test_render_refuses_impossible_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(EXAMPLES / "gym-session.yaml")]) == 1
    assert "session connections" in capsys.readouterr().err


def test_plan_shows_redis_queues_and_autoscaling(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(EXAMPLES / "shop-scaled.yaml")]) == 0
    rows = dict(
        line.split("  ", 1) for line in capsys.readouterr().out.splitlines() if "  " in line
    )
    rows = {label.strip(): value.strip() for label, value in rows.items()}
    assert rows["redis cache"].startswith("cache, allkeys-lru, maxmemory 384Mi of 512Mi")
    assert rows["redis jobs"].startswith("queue, noeviction, maxmemory 192Mi of 256Mi")
    assert rows["redis jobs"].endswith("PVC 2Gi")
    assert "HPA on 70% CPU (KEDA absent)" in rows["queue emails"]
    assert rows["app autoscaling"].startswith("HPA 2..10 at 50% CPU")


def test_plan_with_keda_scales_queues_on_backlog(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--keda", str(EXAMPLES / "chat-ha.yaml")]) == 0
    out = capsys.readouterr().out
    assert "queue push          push:pending on redis push; workers 1..8, KEDA on backlog" in out
    assert "sentinel: 1 master + 1 replica, 3 sentinels, writes need 1 replica, PVC 1Gi" in out


PROFILE = (EXAMPLES / "shop.yaml").read_text()


@pytest.mark.parametrize(
    ("case", "text", "needle"),
    [
        (
            "malformed-yaml",
            "kind: ScalingProfile\nspec: [a\n",
            "not valid YAML at line 3, column 1",
        ),
        ("tab-indented", "kind: ScalingProfile\n\tspec: {}\n", "not valid YAML at line 2"),
        ("duplicate-key", PROFILE + "  pooler: {}\n", "key 'pooler' is given twice"),
        (
            "no-profile",
            "apiVersion: v1\nkind: ConfigMap\n",
            "no document with kind: ScalingProfile",
        ),
        ("empty-file", "", "no document with kind: ScalingProfile"),
        ("list-not-a-profile", "- 1\n- 2\n", "no document with kind: ScalingProfile"),
        (
            "integer-as-string",
            PROFILE.replace("max: 10}", 'max: "10"}'),
            "spec.app.replicas.max: Input should be a valid integer",
        ),
        (
            "boolean-as-string",
            PROFILE.replace("maxConnections: 100", 'maxConnections: 100\n    readLimits: "false"'),
            "spec.database.readLimits: Input should be a valid boolean",
        ),
        ("no-spec", "kind: ScalingProfile\nmetadata: {name: x}\n", "spec: Field required"),
    ],
)
@pytest.mark.parametrize("command", ["plan", "render"])
def test_bad_input_is_one_line_naming_the_problem_and_exit_1(
    command: str,
    case: str,
    text: str,
    needle: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / f"{case}.yaml"
    path.write_text(text)
    assert cli.main([command, str(path)]) == 1, case
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert needle in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["plan", "render"])
def test_a_missing_file_is_one_line_and_exit_1(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.yaml"
    assert cli.main([command, str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {missing}: cannot read: No such file or directory\n"


# --- several profiles on one server --------------------------------------------------

READER = """\
apiVersion: headroom.dev/v1alpha1
kind: ScalingProfile
metadata: {{name: {name}, namespace: gym}}
spec:
  app: {{deployment: {name}, replicas: {{min: 2, max: 10}}}}
  database:
    host: {primary}
    name: gym
    credentialsSecret: {{name: db}}
    readReplicas:
      mode: external
      hosts: [{{host: ep-read-1.example.tech}}]
"""


def test_plan_plans_several_documents_as_the_operator_does_on_shared_servers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two apps on their own primaries read from the same replica: it is
    divided between their read pools, whichever document comes first."""
    path = tmp_path / "two.yaml"
    first, second = (READER.format(name=n, primary=f"db-{n}") for n in ("first", "second"))
    path.write_text(first + "---\n" + second)
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("profile ") == 2  # both planned, in order
    # 100 - 3 superuser - 2 x (5 direct + 4 lag probes + 3 postgres_exporter) = 73:
    # 3 read-pooler pods x 12 each
    assert out.count("share                    36 on ep-read-1.example.tech:5432 (weight 1)") == 2
    assert "beside                   gym/second holds 48 on ep-read-1.example.tech:5432" in out
    path.write_text(second + "---\n" + first)
    assert cli.main(["plan", str(path)]) == 0
    assert capsys.readouterr().out.count("share                    36 on ep-read") == 2


def test_plan_ranks_documents_read_back_by_their_creation_time_as_the_pass_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two session-mode apps whose sessions do not fit together: without a
    creation time (one apply: the same second) the name decides, as in the
    pass; read back from the cluster, the older keeps its minimum, as in the
    pass, though its name comes later."""
    session = (
        (EXAMPLES / "shop.yaml")
        .read_text()
        .replace("poolMode: transaction", "poolMode: session")
        .replace("poolSizePerPod: 10", "poolSizePerPod: 11")
        .replace("max: 10}", "max: 5}")
    )
    assert "poolMode: session" in session

    def doc(name: str, created: str = "") -> str:
        text = session.replace("name: shop\n", f"name: {name}\n", 1)
        if created:
            text = text.replace(
                f"name: {name}\n", f"name: {name}\n  creationTimestamp: {created}\n", 1
            )
        return text

    path = tmp_path / "two.yaml"
    path.write_text(doc("b-old") + "---\n" + doc("a-new"))
    assert cli.main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "hold default/a-new 92 (session mode" in err, err
    path.write_text(
        doc("b-old", "2026-01-01T00:00:00Z") + "---\n" + doc("a-new", "2026-01-01T00:00:05Z")
    )
    assert cli.main(["plan", str(path)]) == 1
    err = capsys.readouterr().err
    assert "hold default/b-old 92 (session mode" in err, err


def test_plan_with_names_the_profiles_already_on_the_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "shop.yaml"
    existing.write_text((EXAMPLES / "shop.yaml").read_text())
    newcomer = tmp_path / "admin.yaml"
    newcomer.write_text(
        (EXAMPLES / "shop.yaml")
        .read_text()
        .replace("name: shop\n", "name: admin\n", 1)
        .replace("max: 10}", "max: 2}")
    )
    assert "name: admin" in newcomer.read_text()
    # shop alone plans 87 of 89; beside it, both get a share by weight of
    # 100 - 3 superuser - 2 x (5 direct + 3 postgres_exporter) = 81
    assert cli.main(["plan", str(newcomer), "--with", str(existing)]) == 0
    out = capsys.readouterr().out
    assert "profile             default/admin" in out
    assert "beside              default/shop holds 50 on shop-db.default.svc:5432" in out
    assert "share               39 on shop-db.default.svc:5432 (weight 1)" in out
    # in session mode its 55 sessions (28 per pod, 3 at peak: 84, and 8 it keeps) do
    # not fit beside shop's minimum (3, and 8 it keeps) in 97: refused, naming shop
    session = newcomer.read_text().replace("poolMode: transaction", "poolMode: session")
    session = session.replace("poolSizePerPod: 10", "poolSizePerPod: 11")
    newcomer.write_text(session.replace("max: 2}", "max: 5}"))
    assert cli.main(["plan", str(newcomer), "--with", str(existing)]) == 1
    err = capsys.readouterr().err
    assert "the guaranteed minimums on shop-db.default.svc:5432 do not fit" in err, err
    assert "default/shop 11 (transaction mode: 1 server connection per pooler pod" in err
    assert "this profile needs 92 (session mode: 55 sessions" in err
    assert cli.main(["plan", str(newcomer)]) == 0
    capsys.readouterr()
    # and a profile given twice is an input error, not a plan
    assert cli.main(["plan", str(existing), "--with", str(existing)]) == 1
    assert "is given twice" in capsys.readouterr().err
