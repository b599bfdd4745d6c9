"""Five apps on one Postgres server (examples/shared/five-apps.yaml) on a real
API server: applied in one file and again in reverse order, one deleted and
added back, the operator restarted along the way. Every time all five are
Ready with the shares `headroom plan` prints for the same documents, and a
restart changes no share and replaces no pooler.

The server is not reachable from the control plane's fake pods (kwok): the
shares are checked as the API server holds them; the data path (real
PgBouncers in front of a real Postgres) is tests/conformance' business.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kube
import operator_process
import yaml
from apps import CREDENTIALS, credentials, named_app

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "shared" / "five-apps.yaml"
SHARE = re.compile(r"^profile\s+\S+/(?P<name>\S+)$|^share\s+(?P<share>\d+) on ")


def _documents(namespace: str) -> list[dict[str, Any]]:
    """The example's five profiles in ``namespace``, on a server named there."""
    found = []
    for doc in yaml.safe_load_all(EXAMPLE.read_text()):
        doc["metadata"]["namespace"] = namespace
        db = doc["spec"]["database"]
        db.update(host="pg-main", credentialsSecret={"name": CREDENTIALS}, readLimits=False)
        found.append(doc)
    return found


def _planned(documents: list[dict[str, Any]], tmp_path: Path) -> dict[str, int]:
    """Each profile's share as `headroom plan` prints it for ``documents``."""
    path = tmp_path / "apps.yaml"
    path.write_text(yaml.safe_dump_all(documents))
    out = subprocess.run(
        [str(Path(sys.executable).parent / "headroom"), "plan", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    shares: dict[str, int] = {}
    name = ""
    for line in out.splitlines():
        match = SHARE.match(line)
        if match and match["name"]:
            name = match["name"]
        elif match:
            shares[name] = int(match["share"])
    assert len(shares) == len(documents), out
    return shares


def _shares(kubectl: kube.Kubectl, namespace: str) -> dict[str, int] | None:
    """Every profile's share once all are Ready at their generation."""
    found = {}
    for sp in kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"]:
        status = sp.get("status") or {}
        if status.get("observedGeneration") != sp["metadata"]["generation"]:
            return None
        if kube.condition(sp, "Ready") != "True":
            return None
        found[sp["metadata"]["name"]] = status["budget"]["serverConnections"]
    return found


def _settled(kubectl: kube.Kubectl, namespace: str, expected: dict[str, int]) -> dict[str, int]:
    return kube.wait_for(
        lambda: (found := _shares(kubectl, namespace)) == expected and found,
        timeout=180,
        what=f"{sorted(expected)} Ready at their shares {expected}",
    )


def _poolers(kubectl: kube.Kubectl, namespace: str) -> dict[str, str]:
    """The pooler Deployments' and pods' uids, by name."""
    found = {}
    for kind in ("deployments", "pods"):
        items = kube.get_json(
            kubectl, kind, "-n", namespace, "-l", "app.kubernetes.io/component=pooler"
        )["items"]
        found |= {f"{kind}/{o['metadata']['name']}": o["metadata"]["uid"] for o in items}
    return found


def _restart(operator: operator_process.OperatorProcess, namespace: str, names: list[str]) -> None:
    """kill -9 and start the operator; wait until the new one has passed every
    profile and has nothing queued or running."""
    operator.kill_and_restart()

    def passed() -> bool:
        text = operator.metrics()
        seen = all(
            f'headroom_profile_last_pass_timestamp_seconds{{namespace="{namespace}",'
            f'profile="{name}"}}' in text
            for name in names
        )
        idle = operator.metric("headroom_queue_depth") == 0
        return seen and idle and operator.metric("headroom_passes_in_flight") == 0

    kube.wait_for(passed, timeout=120, what="the restarted operator to pass every profile")


def test_five_apps_share_one_server_as_headroom_plan_says_whatever_the_order(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    documents = _documents(namespace)
    names = [d["metadata"]["name"] for d in documents]
    apps = [named_app(namespace, d["spec"]["app"]["deployment"]) for d in documents]
    kube.apply(kubectl, credentials(namespace), *apps)
    planned = _planned(documents, tmp_path)
    # docs/api.md's table: 2:1:1 beyond the minimums, the session and the pin kept
    assert planned == {"orders": 24, "web": 9, "admin": 12, "reports": 18, "billing": 8}

    kube.apply(kubectl, *documents, namespace=namespace)  # one file
    _settled(kubectl, namespace, planned)
    poolers = _poolers(kubectl, namespace)
    _restart(operator, namespace, names)
    assert _shares(kubectl, namespace) == planned
    assert _poolers(kubectl, namespace) == poolers  # no pooler replaced

    # one deleted: the four left divide the server again, as plan says for them
    kubectl("delete", "scalingprofile", "web", "-n", namespace, "--wait=true")
    four = [d for d in documents if d["metadata"]["name"] != "web"]
    _settled(kubectl, namespace, _planned(four, tmp_path))
    _restart(operator, namespace, [n for n in names if n != "web"])
    # and added back: the five shares again
    kube.apply(kubectl, next(d for d in documents if d["metadata"]["name"] == "web"))
    _settled(kubectl, namespace, planned)
    poolers = _poolers(kubectl, namespace)
    _restart(operator, namespace, names)
    assert _shares(kubectl, namespace) == planned
    assert _poolers(kubectl, namespace) == poolers

    # all deleted and applied again in reverse order: the same shares
    kubectl("delete", "scalingprofiles", "--all", "-n", namespace, "--wait=true")
    kube.wait_for(
        lambda: not kube.get_json(kubectl, "scalingprofiles", "-n", namespace)["items"],
        timeout=120,
        what="every profile gone",
    )
    kube.apply(kubectl, *reversed(documents), namespace=namespace)
    _settled(kubectl, namespace, planned)
    _restart(operator, namespace, names)
    assert _shares(kubectl, namespace) == planned
