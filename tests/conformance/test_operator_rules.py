"""The chart's alerts on the operator itself (charts/headroom/files/operator-rules.yaml)
in Debian's promtool: the file passes `promtool check rules`, and each alert fires
on a breaching series and stays silent on a healthy one (`promtool test rules`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.conformance

RULES = (
    Path(__file__).resolve().parents[2] / "charts" / "headroom" / "files" / "operator-rules.yaml"
)


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is not installed (Debian package prometheus)", pytrace=False)
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def _run(promtool: str, *args: str, cwd: Path) -> str:
    done = subprocess.run(
        [promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _alert(
    name: str, at: str, series: list[dict[str, str]], fires: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": fires}],
    }


def _ready(profile: str, status: str, values: str, pod: str = "headroom-0") -> dict[str, str]:
    labels = f'namespace="shop",profile="{profile}",condition="Ready",status="{status}",pod="{pod}"'
    return {"series": f"headroom_profile_condition{{{labels}}}", "values": values}


def _not_ready_description(profile: str) -> str:
    return (
        "Its Ready condition has been False for 15 minutes. "
        f"`kubectl describe scalingprofile -n shop {profile}` names the component and the "
        "reason (budget, pooler, cache, workers...)."
    )


def test_operator_rules_pass_promtool_check(promtool: str, tmp_path: Path) -> None:
    out = _run(promtool, "check", "rules", str(RULES), cwd=tmp_path)
    assert "4 rules found" in out


def test_each_operator_alert_fires_on_breach_and_not_when_healthy(
    promtool: str, tmp_path: Path
) -> None:
    shutil.copyfile(RULES, tmp_path / "rules.yaml")
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tests = [
        # two replicas export the same False: one alert, not two
        _alert(
            "HeadroomProfileNotReady",
            "20m",
            [_ready("web", "False", "1x30"), _ready("web", "False", "1x30", pod="headroom-1")],
            [
                {
                    "exp_labels": {"severity": "warning", "namespace": "shop", "profile": "web"},
                    "exp_annotations": {
                        "summary": "ScalingProfile shop/web is not Ready",
                        "description": _not_ready_description("web"),
                    },
                }
            ],
        ),
        # Ready again after 10 minutes of False: under `for`, silent
        _alert("HeadroomProfileNotReady", "20m", [_ready("api", "False", "1x10 0x20")], []),
        _alert("HeadroomProfileNotReady", "20m", [_ready("api", "True", "1x30")], []),
        _alert(
            "HeadroomNoLeader",
            "10m",
            [{"series": 'headroom_leader{pod="headroom-0"}', "values": "0x20"}],
            [
                {
                    "exp_labels": {"severity": "critical"},
                    "exp_annotations": rules["HeadroomNoLeader"]["annotations"],
                }
            ],
        ),
        _alert(
            "HeadroomNoLeader",
            "10m",
            [
                {"series": 'headroom_leader{pod="headroom-0"}', "values": "0x20"},
                {"series": 'headroom_leader{pod="headroom-1"}', "values": "1x20"},
            ],
            [],
        ),
        _alert(
            "HeadroomReconcileFailing",
            "30m",
            [{"series": 'headroom_passes_total{result="failed"}', "values": "0+6x40"}],
            [
                {
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {
                        "summary": "Headroom reconcile passes keep failing",
                        "description": "100m failed passes per second for 15 minutes. "
                        "headroom_reconcile_errors_total says why; the operator log names "
                        "the profile.",
                    },
                }
            ],
        ),
        _alert(
            "HeadroomReconcileFailing",
            "30m",
            [{"series": 'headroom_passes_total{result="failed"}', "values": "3x40"}],
            [],
        ),
        _alert(
            "HeadroomQueueBacklog",
            "20m",
            [{"series": 'headroom_queue_depth{pod="headroom-0"}', "values": "150x30"}],
            [
                {
                    "exp_labels": {"severity": "warning"},
                    "exp_annotations": {
                        "summary": "Headroom's work queue does not drain",
                        "description": "150 profiles have waited for a pass for 10 minutes; "
                        "changes reach their children late. Raise the operator's CPU or its "
                        "worker count.",
                    },
                }
            ],
        ),
        _alert(
            "HeadroomQueueBacklog",
            "20m",
            [{"series": 'headroom_queue_depth{pod="headroom-0"}', "values": "150x5 3x25"}],
            [],
        ),
    ]
    (tmp_path / "tests.yaml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests})
    )
    out = _run(promtool, "test", "rules", "tests.yaml", cwd=tmp_path)
    assert "SUCCESS" in out
