"""Run the real Headroom operator (``headroom run``) as a subprocess for e2e tests.

The operator talks to the same API server as the tests; its admission webhook
listens on 127.0.0.1 (the API server dials it there). On exit the managed
ValidatingWebhookConfiguration is removed, so a stopped operator never blocks
later writes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kube
import yaml

REPO = Path(__file__).resolve().parents[2]
WEBHOOK_CONFIG = "headroom.dev"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str
    health_url: str
    env: dict[str, str]
    args: tuple[str, ...] = ()  # after `headroom run` (--namespace NS ...)
    restarts: int = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def metric(self, name: str) -> float | None:
        """The value of an unlabelled metric, None when absent or unreachable."""
        try:
            text = self.metrics()
        except OSError:
            return None
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def kill(self) -> None:
        """kill -9 the operator and every process it started (its admission
        server, multiprocessing's resource tracker), as a container's crash
        does: none is left to serve or to write into the log."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill_and_restart(self, *, wait_for_lease: bool = True) -> None:
        """kill -9 the operator and start it again, as a crash loop would."""
        self.kill()
        self.restarts += 1
        self.proc = _spawn(self.env, self.log_path, self.args)
        if wait_for_lease:
            self.wait_leader()

    def without_admission(self, kubectl: kube.Kubectl, change: Callable[[], object]) -> None:
        """Make ``change`` as if two changes had been admitted at the same moment:
        the operator restarted without admission (it removes its webhook), then
        with it again."""
        self.env["HEADROOM_WEBHOOK_ENABLED"] = "false"
        try:
            self.kill_and_restart()
            kube.wait_for(
                lambda: kubectl(
                    "get", "validatingwebhookconfiguration", WEBHOOK_CONFIG, check=False
                ).returncode != 0,
                timeout=60,
                what="the webhook to be removed",
            )  # fmt: skip
            change()
        finally:
            self.env.pop("HEADROOM_WEBHOOK_ENABLED")
            self.kill_and_restart()

    def wait_leader(self, timeout: float = 60) -> None:
        kube.wait_for(
            lambda: self.alive() and self.metric("headroom_leader") == 1,
            timeout=timeout,
            what="the operator to hold the lease",
        )

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:  # noqa: S310 - 127.0.0.1
            text: str = resp.read().decode()
            return text


def standby(primary: OperatorProcess, workdir: Path, **overrides: str) -> OperatorProcess:
    """A second replica of ``primary`` (another identity and ports)."""
    metrics_port, health_port = free_port(), free_port()
    env = {
        **primary.env,
        "HEADROOM_IDENTITY": "e2e-standby",
        "HEADROOM_METRICS_PORT": str(metrics_port),
        "HEADROOM_HEALTH_PORT": str(health_port),
        "HEADROOM_WEBHOOK_PORT": str(free_port()),
        "HEADROOM_WEBHOOK_CERT_DIR": str(workdir / "standby-certs"),
        **overrides,
    }
    log_path = workdir / "standby.log"
    return OperatorProcess(
        proc=_spawn(env, log_path),
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
        env=env,
    )


def _install(kubectl: kube.Kubectl, *paths: Path) -> None:
    files = [arg for path in paths for arg in ("-f", str(path))]
    kubectl("apply", "--server-side", "--force-conflicts", "--field-manager=e2e", *files)


def service_account_kubeconfig(
    kubectl: kube.Kubectl, *, admin: str, workdir: Path, install_rbac: bool = True
) -> str:
    """A kubeconfig that authenticates as the operator's ServiceAccount
    headroom-system/headroom (manifests/rbac.yaml unless ``install_rbac`` is
    false: then whoever installed the operator, e.g. its Helm chart, made it),
    so every e2e test also proves that RBAC is enough."""
    if install_rbac:
        _install(kubectl, REPO / "manifests" / "namespace.yaml", REPO / "manifests" / "rbac.yaml")
    token = kubectl(
        "create", "token", "headroom", "-n", "headroom-system", "--duration=6h"
    ).stdout.strip()
    config = yaml.safe_load(Path(admin).read_text())
    current = config.get("current-context") or config["contexts"][0]["name"]
    context = next(c for c in config["contexts"] if c["name"] == current)["context"]
    cluster = next(c for c in config["clusters"] if c["name"] == context["cluster"])
    sa_config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "headroom", "user": {"token": token}}],
        "contexts": [
            {"name": "headroom", "context": {"cluster": cluster["name"], "user": "headroom"}}
        ],
        "current-context": "headroom",
    }
    path = workdir / "headroom-sa.kubeconfig"
    path.write_text(yaml.safe_dump(sa_config))
    path.chmod(0o600)
    return str(path)


def _spawn(
    env: dict[str, str], log_path: Path, args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "headroom.cli", "run", *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,  # its own process group, killed whole (kill())
        )


@contextlib.contextmanager
def running(
    kubectl: kube.Kubectl,
    *,
    kubeconfig: str,
    workdir: Path,
    install: bool = True,
    source: Path | None = None,
    overrides: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
) -> Iterator[OperatorProcess]:
    """Run the operator as its ServiceAccount against the cluster of
    ``kubeconfig``: the CRD from crds/ and the RBAC from manifests/, unless
    ``install`` is false (then they are there already, e.g. from the chart).
    ``source``: the ``operator/`` folder of another release to run instead of
    this checkout's (the upgrade test's previous release). ``args``: after
    ``headroom run`` (``--namespace NS``, repeated, for a namespaced install)."""
    if install:
        _install(kubectl, REPO / "crds")
    kube.wait_for(
        lambda: kubectl("get", "scalingprofiles", "-A", check=False).returncode == 0,
        what="ScalingProfile CRD served",
    )
    workdir.mkdir(parents=True, exist_ok=True)
    metrics_port, health_port, webhook_port = free_port(), free_port(), free_port()
    sa_kubeconfig = service_account_kubeconfig(
        kubectl, admin=kubeconfig, workdir=workdir, install_rbac=install
    )
    env = {
        **os.environ,
        **({"PYTHONPATH": str(source)} if source is not None else {}),
        "KUBECONFIG": sa_kubeconfig,
        "HEADROOM_WEBHOOK_ADDR": "127.0.0.1",
        "HEADROOM_WEBHOOK_PORT": str(webhook_port),
        "HEADROOM_WEBHOOK_CERT_DIR": str(workdir / "certs"),
        "HEADROOM_METRICS_ADDR": "127.0.0.1",
        "HEADROOM_METRICS_PORT": str(metrics_port),
        "HEADROOM_HEALTH_ADDR": "127.0.0.1",
        "HEADROOM_HEALTH_PORT": str(health_port),
        "HEADROOM_RESYNC_SECONDS": "30",
        # JSON log lines: tests/e2e/test_json_logs.py reads them
        "HEADROOM_LOG_FORMAT": "json",
        # one identity across restarts: a restarted operator takes its lease at once
        "HEADROOM_IDENTITY": "e2e-operator",
        **(overrides or {}),
    }
    log_path = workdir / "operator.log"
    op = OperatorProcess(
        proc=_spawn(env, log_path, args),
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        health_url=f"http://127.0.0.1:{health_port}/healthz",
        env=env,
        args=args,
    )

    def webhook_ready() -> bool:
        if not op.alive():
            raise AssertionError("operator exited:\n" + op.log_tail())
        cfg = kube.get_json(kubectl, "validatingwebhookconfiguration", WEBHOOK_CONFIG)
        url = cfg["webhooks"][0]["clientConfig"].get("url", "")
        return f":{webhook_port}/" in url

    try:
        kube.wait_for(webhook_ready, timeout=60, what="the operator's webhook registration")
        kube.wait_for(
            lambda: urllib.request.urlopen(op.health_url, timeout=2).status == 200,  # noqa: S310
            timeout=30,
            what="operator liveness endpoint",
        )
        yield op
    finally:
        op.proc.terminate()
        try:
            op.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            op.kill()
        for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration"):
            kubectl("delete", kind, WEBHOOK_CONFIG, "--ignore-not-found", check=False)
