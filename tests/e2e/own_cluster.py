"""A local control plane of a test module's own (hack/cluster.sh on free
ports, whatever cluster the session uses), for tests that install Headroom
their own way: the upgrade from the previous release, the namespaced install."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kube
import operator_process

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Cluster:
    kubeconfig: str
    kubectl: kube.Kubectl


@contextlib.contextmanager
def running(state: Path) -> Iterator[Cluster]:
    """Start one with its state in ``state``; stop it and delete that afterwards."""
    built = subprocess.run(
        [str(REPO / "hack" / "build-binaries.sh")], capture_output=True, text=True, check=False
    )
    assert built.returncode == 0, built.stderr[-3000:]
    bin_dir = built.stdout.strip().splitlines()[-1]
    env = {
        **os.environ,
        "CLUSTER_DIR": str(state),
        "HEADROOM_ETCD_CLIENT_PORT": str(operator_process.free_port()),
        "HEADROOM_ETCD_PEER_PORT": str(operator_process.free_port()),
        "HEADROOM_APISERVER_PORT": str(operator_process.free_port()),
        "HEADROOM_KCM_PORT": str(operator_process.free_port()),
        "HEADROOM_SCHEDULER_PORT": str(operator_process.free_port()),
    }
    script = str(REPO / "hack" / "cluster.sh")
    up = subprocess.run([script, "up"], env=env, capture_output=True, text=True, check=False)
    try:
        assert up.returncode == 0, up.stderr[-4000:]
        kubeconfig = up.stdout.strip().splitlines()[-1]
        base = [
            str(Path(bin_dir) / "kubectl"),
            f"--kubeconfig={kubeconfig}",
            f"--cache-dir={state / 'kubectl-cache'}",
        ]
        yield Cluster(kubeconfig=kubeconfig, kubectl=kube.kubectl_runner(base))
    finally:
        subprocess.run([script, "down"], env=env, capture_output=True, check=False)
