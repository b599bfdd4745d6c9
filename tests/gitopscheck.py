"""gitopscheck (hack/gomod/gitopscheck) for the tests: the binary, built from
the Go module proxy when not cached, and a way to run it on objects. The
conformance suite runs the shipped checks on the exported testdata, the e2e
suite on live profiles."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARGO = REPO / "gitops" / "argocd" / "resource_customizations" / "headroom.dev" / "ScalingProfile"
FLUX = REPO / "gitops" / "flux" / "kustomization.yaml"


def binary() -> str:
    done = subprocess.run(
        [str(REPO / "hack" / "build-gitopscheck.sh")], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"hack/build-gitopscheck.sh failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def run(path: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [path, *args], input=stdin, capture_output=True, text=True, check=False, timeout=60
    )


def judge(path: str, *args: str, objects: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One verdict per object, in order."""
    listing = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    done = run(path, *args, stdin=listing)
    if done.returncode != 0:
        raise AssertionError(f"gitopscheck {' '.join(args)}: {done.stderr}")
    return [json.loads(line) for line in done.stdout.splitlines()]
