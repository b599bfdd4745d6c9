"""The GitOps checks Headroom ships, run in the programs that run them: the
Argo CD health check (gitops/argocd/.../ScalingProfile/health.lua) in the
gopher-lua runtime Argo CD uses, set up both ways Argo CD loads a check, by
Argo CD's own health_test.yaml format; the Flux healthCheckExprs
(gitops/flux/kustomization.yaml) in cel-go as kustomize-controller evaluates
them; and kstatus itself. The testdata are profiles exported from the local
cluster in every state (tests/e2e/test_gitops.py writes them), and for each
one the three tools must agree."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from tests import gitopscheck

ARGO, FLUX = gitopscheck.ARGO, gitopscheck.FLUX
# Argo CD's health status -> what kstatus (and Flux) call the same state
KSTATUS_OF = {"Healthy": "Current", "Progressing": "InProgress", "Degraded": "Failed"}
STATES = {
    "healthy",
    "rolling-out",
    "budget-refused",
    "app-missing",
    "generation-not-observed",
    "not-yet-reconciled",
}


@pytest.fixture(scope="module")
def checker() -> str:
    return gitopscheck.binary()


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return gitopscheck.run(path, *args)


def _cases() -> list[dict[str, object]]:
    cases: list[dict[str, object]] = yaml.safe_load((ARGO / "health_test.yaml").read_text())[
        "tests"
    ]
    return cases


def test_the_health_test_covers_every_state() -> None:
    paths = {str(case["inputPath"]) for case in _cases()}
    assert paths == {f"testdata/{state}.yaml" for state in STATES}
    assert {p.name for p in (ARGO / "testdata").iterdir()} == {f"{s}.yaml" for s in STATES}


def test_argo_cd_health_check_passes_its_health_test(checker: str) -> None:
    done = _run(checker, "argo-test", str(ARGO))
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(results) == len(STATES) and all(r["ok"] for r in results)


@pytest.mark.parametrize("case", _cases(), ids=lambda c: str(c["inputPath"]))
def test_kstatus_and_flux_agree_with_argo_cd(checker: str, case: dict[str, object]) -> None:
    path = str(ARGO / str(case["inputPath"]))
    health = case["healthStatus"]
    assert isinstance(health, dict)
    want = KSTATUS_OF[health["status"]]
    for args in (("kstatus", path), ("flux-health", str(FLUX), path)):
        done = _run(checker, *args)
        assert done.returncode == 0, done.stderr
        (verdict,) = [json.loads(line) for line in done.stdout.splitlines()]
        assert verdict["status"] == want, (args[0], verdict)


def test_a_broken_check_fails_its_test(checker: str, tmp_path: Path) -> None:
    """The runner is not a rubber stamp: a check that calls a refusal Healthy fails."""
    broken = tmp_path / "ScalingProfile"
    broken.mkdir()
    (broken / "health.lua").write_text('return {status = "Healthy", message = "fine"}\n')
    (broken / "health_test.yaml").write_text((ARGO / "health_test.yaml").read_text())
    (broken / "testdata").symlink_to(ARGO / "testdata")
    done = _run(checker, "argo-test", str(broken))
    assert done.returncode == 1
    failed = [json.loads(line) for line in done.stdout.splitlines() if '"ok":false' in line]
    assert {f["inputPath"] for f in failed} >= {"testdata/budget-refused.yaml"}


def test_the_check_uses_only_what_argocd_cm_checks_get(checker: str, tmp_path: Path) -> None:
    """A check from argocd-cm runs without Lua's string library: one that needs
    it is refused there, so the runner's restricted mode is real."""
    needs_string = tmp_path / "health.lua"
    needs_string.write_text('return {status = "Healthy", message = string.upper("x")}\n')
    sample = ARGO / "testdata" / "healthy.yaml"
    done = _run(checker, "argo-health", str(needs_string), str(sample))
    assert done.returncode != 0 and "argocd-cm" in done.stderr
