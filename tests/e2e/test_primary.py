"""The operator checks the limits a profile declares against the primary itself.

A real Postgres 15 runs on 127.0.0.1 with max_connections 20 (a small managed
tier, seed 004); the operator, which runs on this machine, connects to it with
the app's credentials. A profile that declares 100 passes admission (the
webhook trusts the declaration) but is never applied; once it declares the
real limit it becomes Ready.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import kube
import operator_process
import pytest
from apps import app_deployment, credentials
from tests import profiles
from tests.conformance import servers

NAME = "tiny"
USER, PASSWORD = "shop_app", "p@ss:w/rd"  # what apps.credentials() holds


@pytest.fixture(scope="module")
def primary() -> Iterator[servers.Postgres]:
    try:
        tools = servers.find_tools()
    except servers.ToolsMissingError as err:
        if os.environ.get("CI"):
            pytest.fail(f"Postgres is needed on CI: {err}")
        pytest.skip(f"needs Postgres 15: {err}")
    server = servers.Postgres(tools, max_connections=20, superuser_reserved_connections=3)
    try:
        server.start()
        server.create_role(USER, PASSWORD)
        server.admin().rows(f"CREATE DATABASE shop OWNER {servers.quote_ident(USER)}")
        yield server
    finally:
        server.stop()


def _profile(namespace: str, port: int, max_connections: int) -> dict[str, object]:
    return profiles.base(
        name=NAME,
        namespace=namespace,
        **{
            "database.host": servers.HOST,
            "database.port": port,
            "database.sslMode": "disable",
            "database.maxConnections": max_connections,
            "app.replicas": {"min": 1, "max": 3},
        },
    )


def _conditions(kubectl: kube.Kubectl, namespace: str) -> dict[str, dict[str, str]]:
    sp = kube.get_json(kubectl, "scalingprofile", NAME, "-n", namespace)
    return {c["type"]: c for c in sp.get("status", {}).get("conditions", [])}


def test_declared_limits_above_the_primary_are_refused_until_corrected(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    primary: servers.Postgres,
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace, primary.port, 100), namespace=namespace)

    def refused() -> dict[str, str] | None:
        budget = _conditions(kubectl, namespace).get("ConnectionBudget")
        return budget if budget and budget["reason"] == "BudgetExceeded" else None

    budget = kube.wait_for(refused, timeout=60, what="ConnectionBudget=False from the real limits")
    assert budget["message"].startswith(
        "spec.database.maxConnections: the primary reports max_connections 20 - "
        "superuser_reserved_connections 3 - 5 reserved - 3 for postgres_exporter = 9 available"
    ), budget["message"]
    conditions = _conditions(kubectl, namespace)
    assert conditions["PrimaryLimits"]["status"] == "True"
    assert conditions["Ready"]["status"] == "False"
    # nothing half-applied: the pooler was never created
    assert not kube.exists(kubectl, "deployment", f"{NAME}-pooler", "-n", namespace)

    kube.apply(kubectl, _profile(namespace, primary.port, 20), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=90s"
    )
    conditions = _conditions(kubectl, namespace)
    assert conditions["ConnectionBudget"]["status"] == "True"
    assert "reports max_connections 20" in conditions["PrimaryLimits"]["message"]
    assert PASSWORD not in str(conditions)


def test_an_unreachable_primary_is_reported_and_does_not_block(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    # the usual test profile: its Service db does not resolve here
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    body = profiles.base(name=NAME, namespace=namespace)
    kube.apply(kubectl, body, namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=90s"
    )
    limits = _conditions(kubectl, namespace)["PrimaryLimits"]
    assert (limits["status"], limits["reason"]) == ("False", "PrimaryUnreachable")
    assert "db:5432" in limits["message"]
