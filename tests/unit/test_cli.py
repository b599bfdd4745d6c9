"""``headroom plan`` and ``headroom render`` on the examples."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from headroom import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_plan_prints_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(EXAMPLES / "shop.yaml")]) == 0
    out = capsys.readouterr().out
    assert "client demand       100" in out
    assert "server connections  90 of 92" in out


def test_plan_exits_1_with_admission_message(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", str(EXAMPLES / "gym-session.yaml")]) == 1
    err = capsys.readouterr().err
    assert "spec.app.capacity: app ceiling 20 pods x 5 connections per pod" in err
    assert "100 session connections > 92 available" in err


def test_render_outputs_every_child(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["render", str(EXAMPLES / "shop.yaml")]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ConfigMap/shop-alert-rules",
        "ConfigMap/shop-dashboard",
        "ConfigMap/shop-pooler-config",
        "Deployment/shop-pooler",
        "HorizontalPodAutoscaler/shop-app",
        "NetworkPolicy/shop-pooler",
        "PodDisruptionBudget/shop-pooler",
        "Secret/shop-binding",
        "Secret/shop-pooler-auth",
        "Service/shop-pooler-rw",
    ]
    assert all("ownerReferences" not in d["metadata"] for d in docs)


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
