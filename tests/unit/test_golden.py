"""Golden YAML for every builder: the examples rendered with fixed inputs.

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
from headroom.planning import credentials, monitoring, read_replicas, storage
from headroom.planning import plan as plan_mod

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden"
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml"))
LOGIN = credentials.Login(username="app", password='p@ss w"rd', revision="42")
SERVER_CA_REVISION = "7"
# the values Headroom generates, fixed
REDIS_PASSWORDS = {
    "cache": "0123456789abcdef0123",
    "jobs": "fedcba9876543210fedc",
    "sessions": "00112233445566778899",
    "push": "99887766554433221100",
}
STATS_PASSWORD = "stats-pw"
AGENT_PASSWORD = "agent-pw"
# the builtin S3 server's keys: (access, secret) of root and of the app
S3_ROOT = ("0123456789abcdefroot", "root-secret-0123456789abcdef0123456789ab")
S3_APP = ("0123456789abcdef0app", "app-secret-0123456789abcdef0123456789abc")
# as a COSI driver would write them (seed 003) / the R2 Secret (seed 004)
BUCKETS = {
    name: storage.BucketCredentials(
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


def fixed_credentials(planned: plan_mod.Plan) -> credentials.Credentials:
    """The credentials of ``planned`` with every generated value fixed, as
    assembled for the reconcile pass (what Headroom keeps in its Secrets)."""
    names = planned.names
    kept = {
        (names.pooler_auth, credentials.STATS_PASSWORD_KEY): STATS_PASSWORD,
        (names.read_pooler_auth, credentials.AGENT_PASSWORD_KEY): AGENT_PASSWORD,
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
        buckets=BUCKETS,
    )


APP_SELECTOR = {"matchLabels": {"app": "web"}}


APP_SELECTOR = {"matchLabels": {"app": "web"}}
# The examples again with the engine they compose installed: KEDA for queues,
# CloudNativePG for a CNPG database.
CASES = [(p, False) for p in EXAMPLES] + [
    (p, True) for p in EXAMPLES if "queues:" in p.read_text() or "mode: cnpg" in p.read_text()
]
CNPG_CLUSTER = read_replicas.CnpgCluster(name="shop-pg", instances=3, max_connections=200)


def _render(example: Path, *, keda: bool) -> str:
    docs = []
    for body in yaml.safe_load_all(example.read_text()):
        body.setdefault("metadata", {})["uid"] = "11111111-2222-3333-4444-555555555555"
        profile = v1alpha1.parse_profile(body)
        planned = plan_mod.plan(
            profile,
            facts=plan_mod.Facts(
                keda=keda,
                cnpg=keda,
                cnpg_cluster=CNPG_CLUSTER if keda else None,
                cosi="v1alpha1",
            ),
        )
        if not planned.ok:
            docs.append({"problems": [str(p) for p in planned.problems]})
            continue
        docs.extend(
            desired.build(
                planned, fixed_credentials(planned), app_pod_selector=APP_SELECTOR
            ).values()
        )
    return yamlfmt.dump_all(docs)


@pytest.mark.parametrize(
    ("example", "keda"), CASES, ids=[p.stem + ("-keda" if k else "") for p, k in CASES]
)
def test_golden(example: Path, keda: bool) -> None:
    engine = ".keda" if "queues:" in example.read_text() else ".cnpg"
    golden = GOLDEN / f"{example.stem}{engine if keda else ''}.yaml"
    rendered = _render(example, keda=keda)
    if os.environ.get("HEADROOM_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"missing {golden}; run make golden"
    assert rendered == golden.read_text(), f"{example.name} differs from {golden}; make golden"


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
    body = yaml.safe_load(example.read_text())
    body["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    profile = v1alpha1.parse_profile(body)
    planned = plan_mod.plan(profile, facts=plan_mod.Facts(prometheus_operator=True))
    selection = monitoring.select(
        [PROMETHEUS],
        namespace=planned.namespace,
        namespace_labels={},
        own_labels=monitoring.own_labels(planned.name, app_deployment=planned.app.deployment),
    )
    planned = dataclasses.replace(
        planned, facts=dataclasses.replace(planned.facts, prometheus_selection=selection)
    )
    objects = desired.build(planned, fixed_credentials(planned), app_pod_selector=APP_SELECTOR)
    kinds = ("PrometheusRule", "PodMonitor", "ServiceMonitor")
    rendered = yamlfmt.dump_all([o for o in objects.values() if o["kind"] in kinds])
    golden = GOLDEN / "shop-scaled.monitoring.yaml"
    if os.environ.get("HEADROOM_UPDATE_GOLDEN"):
        golden.write_text(rendered)
    assert golden.exists(), f"missing {golden}; run make golden"
    assert rendered == golden.read_text(), f"{golden} differs; make golden"
