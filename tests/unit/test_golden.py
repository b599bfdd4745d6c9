"""Golden YAML of every builder: each example rendered with fixed inputs, one
file per component, under ``tests/golden/<example>/``; with an integration
installed, under ``tests/golden/<example>/<integration>/`` (``keda``, ``cnpg``,
``prometheus-operator``). A failure names the example, the integration and the
component; field-level intent is tested in the other unit tests.

Regenerate with ``make golden`` and review the diff.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
import yaml

from headroom import yamlfmt
from headroom.api import v1alpha1
from headroom.builders import desired
from headroom.planning import credentials, monitoring, object_storage, planner, read_plan

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
LOGIN = credentials.Login(username="app", password='p@ss w"rd', revision="42")
SERVER_CA_REVISION = "7"
# what the operator reads from spec.database.serverCASecret (never parsed by builders)
SERVER_CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBgolden\n-----END CERTIFICATE-----\n"
# the values Headroom generates, fixed
REDIS_PASSWORDS = {
    "cache": "0123456789abcdef0123",
    "jobs": "fedcba9876543210fedc",
    "sessions": "00112233445566778899",
    "push": "99887766554433221100",
    "quotas": "a1b2c3d4e5f6a7b8c9d0",
    "counters": "0f1e2d3c4b5a69788796",
    "limits": "5a5a5a5a5a5a5a5a5a5a",
}
STATS_PASSWORD = "stats-pw"
AGENT_PASSWORD = "agent-pw"
POOLER_AGENT_PASSWORD = "golden-pooler-agent-password"
# the builtin S3 server's keys: (access, secret) of root and of the app
S3_ROOT = ("0123456789abcdefroot", "root-secret-0123456789abcdef0123456789ab")
S3_APP = ("0123456789abcdef0app", "app-secret-0123456789abcdef0123456789abc")
# as a COSI driver would write them (seed 003) / the R2 Secret (seed 004)
BUCKETS = {
    name: object_storage.BucketCredentials(
        endpoint=endpoint,
        region=region,
        bucket=bucket,
        access_key_id=f"key-{name}",
        secret_access_key=f"secret-{name}",
        force_path_style=region != "auto",
    )
    for name, endpoint, region, bucket in (
        ("avatars", "https://objects.example.net", "us-east-1", "bc-0a1b2c3d-avatars"),
        ("meal-photos", "https://objects.example.net", "us-east-1", "bc-4e5f-meal-photos"),
        (
            "files",
            "https://0123456789abcdef0123456789abcdef.r2.cloudflarestorage.com",
            "auto",
            "space-kontext-files",
        ),
    )
}


def fixed_credentials(planned: planner.Plan) -> credentials.Credentials:
    """The credentials of ``planned`` with every generated value fixed, as
    assembled for the reconcile pass (what Headroom keeps in its Secrets)."""
    names = planned.names
    kept = {
        (names.pooler_auth, credentials.STATS_PASSWORD_KEY): STATS_PASSWORD,
        (names.read_pooler_auth, credentials.AGENT_PASSWORD_KEY): AGENT_PASSWORD,
        (names.pooler_auth, credentials.AGENT_PASSWORD_KEY): POOLER_AGENT_PASSWORD,
        (names.s3_root_keys, credentials.ACCESS_KEY): S3_ROOT[0],
        (names.s3_root_keys, credentials.SECRET_KEY): S3_ROOT[1],
        (names.s3_app_keys, credentials.ACCESS_KEY): S3_APP[0],
        (names.s3_app_keys, credentials.SECRET_KEY): S3_APP[1],
        **{
            (names.redis_auth(name), credentials.REDIS_PASSWORD_KEY): password
            for name, password in REDIS_PASSWORDS.items()
        },
    }

    def new(name: str, key: str) -> str:
        raise AssertionError(f"no fixed value for {key} of Secret {name}")

    return credentials.assemble(
        planned,
        login=LOGIN,
        kept=lambda name, key: kept.get((name, key)),
        new=new,
        server_ca_revision=SERVER_CA_REVISION,
        server_ca_pem=SERVER_CA_PEM,
        buckets=BUCKETS,
    )


APP_SELECTOR = {"matchLabels": {"app": "web"}}
CNPG_CLUSTER = read_plan.CnpgCluster(name="shop-pg", instances=3, max_connections=200)


# Goldens of one component each; components of a kind share a file.
_FILES = {"redis": "redis", "queue": "workers", "bucket": "buckets"}


def component_file(component: str) -> str:
    """``redis/cache`` -> ``redis.yaml``, ``queue/emails`` -> ``workers.yaml``."""
    return _FILES.get(component.split("/", 1)[0], component) + ".yaml"


def _integration(example: Path) -> str:
    return "keda" if "queues:" in example.read_text() else "cnpg"


def _plan(example: Path, facts: planner.Facts) -> planner.Plan:
    body = yaml.safe_load(example.read_text())
    body.setdefault("metadata", {})["uid"] = "11111111-2222-3333-4444-555555555555"
    return planner.plan(v1alpha1.parse_profile(body), facts=facts)


def render(planned: planner.Plan, *, kinds: tuple[str, ...] | None = None) -> dict[str, str]:
    """Golden file name -> its YAML (``problems.yaml`` for a refused profile)."""
    if not planned.ok:
        return {
            "problems.yaml": yamlfmt.dump_all([{"problems": [str(p) for p in planned.problems]}])
        }
    wanted = desired.build_parts(planned, fixed_credentials(planned), app_pod_selector=APP_SELECTOR)
    files: dict[str, list[dict[str, object]]] = {}
    for key, obj in wanted.objects.items():
        if kinds is None or obj["kind"] in kinds:
            files.setdefault(component_file(wanted.component_of[key]), []).append(obj)
    return {name: yamlfmt.dump_all(docs) for name, docs in files.items()}


def _check(folder: Path, rendered: dict[str, str]) -> None:
    """Every file of ``folder`` (not its subfolders) is what was rendered."""
    if os.environ.get("HEADROOM_UPDATE_GOLDEN"):
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.yaml"):
            if stale.name not in rendered:
                stale.unlink()
        for name, text in rendered.items():
            (folder / name).write_text(text)
    where = folder.relative_to(GOLDEN)
    present = sorted(p.name for p in folder.glob("*.yaml"))
    assert present == sorted(rendered), f"{where}: files differ; run make golden"
    for name, text in rendered.items():
        assert text == (folder / name).read_text(), f"{where}/{name} differs; run make golden"


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_golden(example: Path) -> None:
    planned = _plan(example, planner.Facts(cosi="v1alpha1"))
    _check(GOLDEN / example.stem, render(planned))


INTEGRATED = [p for p in EXAMPLES if "queues:" in p.read_text() or "mode: cnpg" in p.read_text()]


@pytest.mark.parametrize("example", INTEGRATED, ids=[p.stem for p in INTEGRATED])
def test_golden_with_keda_and_cloudnative_pg(example: Path) -> None:
    """The examples that compose one, with KEDA and CloudNativePG installed."""
    facts = planner.Facts(keda=True, cnpg=True, cnpg_cluster=CNPG_CLUSTER, cosi="v1alpha1")
    _check(GOLDEN / example.stem / _integration(example), render(_plan(example, facts)))


# What a cluster with prometheus-operator gets instead of the rule-file ConfigMap:
# a Prometheus that selects rules by role and monitors by release.
PROMETHEUS = {
    "metadata": {"name": "k8s", "namespace": "monitoring"},
    "spec": {
        "ruleSelector": {"matchLabels": {"role": "alert-rules"}},
        "ruleNamespaceSelector": {},
        "podMonitorSelector": {"matchLabels": {"release": "kps"}},
        "podMonitorNamespaceSelector": {},
        "serviceMonitorSelector": {"matchLabels": {"release": "kps"}},
        "serviceMonitorNamespaceSelector": {},
    },
}


def test_golden_prometheus_operator() -> None:
    example = ROOT / "examples" / "shop-scaled.yaml"
    planned = _plan(example, planner.Facts(prometheus_operator=True))
    selection = monitoring.select(
        [PROMETHEUS],
        namespace=planned.namespace,
        namespace_labels={},
        own_labels=monitoring.own_labels(planned.name, app_deployment=planned.app.deployment),
    )
    planned = dataclasses.replace(
        planned, facts=dataclasses.replace(planned.facts, prometheus_selection=selection)
    )
    kinds = ("PrometheusRule", "PodMonitor", "ServiceMonitor")
    _check(GOLDEN / example.stem / "prometheus-operator", render(planned, kinds=kinds))
