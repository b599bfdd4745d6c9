"""The operator's JSON logs (HEADROOM_LOG_FORMAT=json, the session's operator
runs with it): every line one object with the stable keys, a pass says which
profile, phase, trigger, result and duration, and no secret value is ever in
them, not even when a pass fails on the profile's own credentials."""

from __future__ import annotations

import json
from typing import Any

import kube
import operator_process
from apps import app_deployment, credentials
from tests import profiles

from headroom import logs

# what apps.credentials() holds, and what a bad Secret below holds
PASSWORD = "p@ss:w/rd"
BAD_PASSWORD = "line\nbreak-s3cr3t"
BASE_KEYS = ["time", "level", "logger", "message"]


def _lines(op: operator_process.OperatorProcess) -> list[dict[str, Any]]:
    text = op.log_path.read_text(errors="replace")
    parsed = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"operator log line {number} is not JSON: {line[:200]}") from None
    return parsed


def test_json_log_lines_have_stable_keys_and_no_secret(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    assert operator.env.get("HEADROOM_LOG_FORMAT") == "json"
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, profiles.base(name="logged", namespace=namespace), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", "scalingprofile/logged", "-n", namespace,
        "--timeout=120s",
    )  # fmt: skip
    # a second profile whose credentials the operator refuses (a newline in the password)
    bad = credentials(namespace)
    bad["metadata"]["name"] = "bad-credentials"
    bad["stringData"]["password"] = BAD_PASSWORD
    kube.apply(kubectl, bad)
    refused = profiles.base(
        name="refused",
        namespace=namespace,
        **{"database.credentialsSecret": {"name": "bad-credentials"}, "database.host": "db-2"},
    )
    kube.apply(kubectl, refused, namespace=namespace)

    def stalled() -> bool:
        sp = kube.get_json(kubectl, "scalingprofile", "refused", "-n", namespace)
        return kube.condition(sp, "Stalled") == "True"

    kube.wait_for(stalled, timeout=60, what="the profile with unusable credentials to stall")

    def pass_lines() -> list[dict[str, Any]]:
        return [
            line
            for line in _lines(operator)
            if line.get("namespace") == namespace and line.get("phase") == "pass"
        ]

    lines = kube.wait_for(pass_lines, timeout=30, what="pass lines of the test's profiles")
    for line in _lines(operator):
        assert list(line)[:4] == BASE_KEYS, line
        assert set(line) <= {*BASE_KEYS, *logs.KEYS, "exception"}, line
        text = json.dumps(line)
        assert PASSWORD not in text and "break-s3cr3t" not in text, line
    assert {line["result"] for line in lines} <= set(logs.RESULTS), lines
    logged = [line for line in lines if line["profile"] == "logged"]
    # its first pass may wait for the primary's limits; one of them created its children
    assert "applied" in {line["result"] for line in logged}, logged
    assert all(isinstance(line["duration"], float) and line["duration"] >= 0 for line in logged)
    assert all(line["trigger"] for line in logged)
