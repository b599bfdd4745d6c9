"""The API server the agents' conformance tests watch through, and what
kubelet gives an agent's container to reach it.

``find()``: $KUBECONFIG's cluster, else the local control plane
(hack/cluster.sh up, as the e2e suite reaches it), with a kubectl for it.
``token_dir()``: a ServiceAccount's token (``kubectl create token``), the
cluster's CA and the namespace, laid out as the projected volume Headroom
renders for its agents; ``agent_env()``: the service host and port a pod's
environment has. Like servers.py it must not import pytest; used by
test_pooler_reload.py and test_redis_online.py through conftest's
``cluster`` and ``namespace`` fixtures.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import yaml
from servers import ServerError
from tests.e2e import kube

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path
    kubectl: kube.Kubectl
    host: str
    port: int
    ca_pem: bytes


def _last_line(*argv: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    if done.returncode != 0:
        raise ServerError(f"{' '.join(argv)} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def find() -> Cluster:
    """$KUBECONFIG's cluster, else the local control plane (started when down)."""
    path = os.environ.get("KUBECONFIG") or _last_line(str(REPO / "hack" / "cluster.sh"), "up")
    binary = (os.environ.get("KUBECONFIG") and shutil.which("kubectl")) or str(
        Path(_last_line(str(REPO / "hack" / "build-binaries.sh"))) / "kubectl"
    )
    config = yaml.safe_load(Path(path).read_text())
    entry = config["clusters"][0]["cluster"]
    server = urllib.parse.urlsplit(entry["server"])
    if "certificate-authority-data" in entry:
        ca = base64.b64decode(entry["certificate-authority-data"])
    else:
        ca = Path(entry["certificate-authority"]).read_bytes()
    assert server.hostname and server.port
    return Cluster(
        kubeconfig=Path(path),
        kubectl=kube.kubectl_runner([binary, f"--kubeconfig={path}"]),
        host=server.hostname,
        port=server.port,
        ca_pem=ca,
    )


def token_dir(cluster: Cluster, *, service_account: str, namespace: str, path: Path) -> Path:
    """``path`` holding the projected token, CA and namespace, as kubelet writes them."""
    path.mkdir()
    token = cluster.kubectl("create", "token", service_account, "-n", namespace).stdout
    (path / "token").write_text(token.strip())
    (path / "ca.crt").write_bytes(cluster.ca_pem)
    (path / "namespace").write_text(namespace)
    return path


def agent_env(cluster: Cluster) -> dict[str, str]:
    """The service address a pod's environment names."""
    return {"KUBERNETES_SERVICE_HOST": cluster.host, "KUBERNETES_SERVICE_PORT": str(cluster.port)}
