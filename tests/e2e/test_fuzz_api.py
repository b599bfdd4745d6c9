"""Fuzzed profiles (tests/fuzzing) through the real API server: a server-side
dry run of each against the CRD, compared with the model both ways (what one
refuses the other refuses), and what the API server would store (defaults
filled in, nulls pruned) plans exactly as what was sent. ``make fuzz`` runs
the same long (bench/fuzz.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fuzz_api
import kube
import pytest
from hypothesis import example, given
from tests import profiles
from tests.fuzzing import strategies
from tests.fuzzing.settings import fuzz_settings

CRD = Path(__file__).resolve().parents[2] / "crds" / "headroom.dev_scalingprofiles.yaml"


@pytest.fixture(scope="module")
def dry_run(kubectl: kube.Kubectl, kubeconfig: str) -> Iterator[fuzz_api.DryRun]:
    kube.install_crds(kubectl, [CRD])
    with kube.fresh_namespace(kubectl) as namespace:
        client = fuzz_api.DryRun(kubeconfig, namespace)
        try:
            yield client
        finally:
            client.close()


# Bodies the model and the CRD used to judge apart (issue 20).
_DISAGREED = [
    profiles.base(**{"alerts.app.memory": "-2G"}),
    profiles.base(**{"alerts.app.metrics": None}),
    profiles.base(**{"alerts.labels": {"team\n": "x"}}),
    profiles.base(**{"app.replicas": {"min": 5, "max": 2}}),
    profiles.base(**{"alerts.app.for": "5m1h"}),
    profiles.base(**{"alerts.app.for": "300y"}),
    profiles.base(storage=profiles.buckets(profiles.cosi_bucket("xn--photos"))),
    profiles.base(storage=profiles.buckets(profiles.s3_bucket(endpoint="http://169.254.169.254"))),
    profiles.base(cache={"instances": [{"name": "a", "use": "cache"}] * 2}),
    profiles.base(queues=None),
]


@given(body=strategies.profiles())
@example(body=_DISAGREED[0])
@example(body=_DISAGREED[1])
@example(body=_DISAGREED[2])
@example(body=_DISAGREED[3])
@example(body=_DISAGREED[4])
@example(body=_DISAGREED[5])
@example(body=_DISAGREED[6])
@example(body=_DISAGREED[7])
@example(body=_DISAGREED[8])
@example(body=_DISAGREED[9])
@fuzz_settings(short=200)
def test_the_model_and_the_crd_agree_both_ways(dry_run: fuzz_api.DryRun, body: Any) -> None:
    disagreement = fuzz_api.compare(dry_run, body)
    assert disagreement is None, str(disagreement)


@given(body=strategies.queue_load_profiles())
@fuzz_settings(short=60)
def test_the_model_and_the_crd_agree_on_a_queues_load(dry_run: fuzz_api.DryRun, body: Any) -> None:
    disagreement = fuzz_api.compare(dry_run, body)
    assert disagreement is None, str(disagreement)
