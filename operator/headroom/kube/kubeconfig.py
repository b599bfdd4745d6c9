"""Where the API server is and how to authenticate to it.

Reads the in-cluster service account (token re-read from disk, since bound
tokens rotate) or a kubeconfig ($KUBECONFIG, else ~/.kube/config): bearer
tokens, client certificates (file or inline data), a CA bundle, and exec
credential plugins (EKS, GKE, AKS), whose tokens are refreshed when they
expire. Used by :mod:`headroom.kube.apiserver` only; nothing here is logged.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
_TOKEN_REREAD_SECONDS = 60.0


class ConfigError(Exception):
    """No usable cluster configuration."""


@dataclass
class Credentials:
    """Produces the Authorization header; refreshes tokens that expire."""

    token: str | None = None
    token_file: Path | None = None
    exec_spec: dict[str, Any] | None = None
    _cached: str | None = field(default=None, repr=False)
    _expires: float = 0.0

    def header(self) -> str | None:
        if self.token:
            return f"Bearer {self.token}"
        now = time.monotonic()
        if self._cached is not None and now < self._expires:
            return self._cached
        if self.token_file is not None:
            self._cached = "Bearer " + self.token_file.read_text().strip()
            self._expires = now + _TOKEN_REREAD_SECONDS
            return self._cached
        if self.exec_spec is not None:
            token, lifetime = _run_exec(self.exec_spec)
            self._cached = f"Bearer {token}"
            self._expires = now + lifetime
            return self._cached
        return None

    def invalidate(self) -> None:
        """After a 401: read the token file or run the plugin again next time."""
        self._expires = 0.0


@dataclass
class ClusterConfig:
    server: str
    ssl_context: ssl.SSLContext
    credentials: Credentials
    namespace: str = ""  # the operator's own namespace when it runs in a cluster


def _run_exec(spec: dict[str, Any]) -> tuple[str, float]:
    """Run a client.authentication.k8s.io exec plugin; its token and lifetime."""
    env = {**os.environ, **{e["name"]: e["value"] for e in spec.get("env") or []}}
    proc = subprocess.run(
        [spec["command"], *(spec.get("args") or [])],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise ConfigError(f"exec credential plugin {spec['command']} exited {proc.returncode}")
    status = json.loads(proc.stdout).get("status") or {}
    token = status.get("token")
    if not token:
        raise ConfigError(f"exec credential plugin {spec['command']} returned no token")
    lifetime = 300.0
    if status.get("expirationTimestamp"):
        expires = datetime.datetime.fromisoformat(
            status["expirationTimestamp"].replace("Z", "+00:00")
        )
        lifetime = max(10.0, (expires - datetime.datetime.now(datetime.UTC)).total_seconds() - 30)
    return str(token), lifetime


def _material(entry: dict[str, Any], key: str, *, base: Path) -> Path | None:
    """A file path for ``key`` (``key``-data is written to a private temp file)."""
    data = entry.get(f"{key}-data")
    if data:
        fd, name = tempfile.mkstemp(prefix="headroom-kube-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64decode(data))
        return Path(name)
    path = entry.get(key)
    if path:
        found = Path(path)
        return found if found.is_absolute() else base / found
    return None


def in_cluster(sa_dir: Path = SA_DIR) -> ClusterConfig | None:
    """The service account's token, CA and namespace in ``sa_dir`` (a pod's
    automounted or projected token), and KUBERNETES_SERVICE_HOST/PORT; None
    outside a pod."""
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    if not host or not port or not (sa_dir / "token").exists():
        return None
    context = ssl.create_default_context(cafile=str(sa_dir / "ca.crt"))
    namespace_file = sa_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else ""
    server = f"https://{host}:{port}" if ":" not in host else f"https://[{host}]:{port}"
    return ClusterConfig(
        server=server,
        ssl_context=context,
        credentials=Credentials(token_file=sa_dir / "token"),
        namespace=namespace,
    )


def from_kubeconfig(path: Path) -> ClusterConfig:
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read kubeconfig {path}: {err.strerror}") from None
    current = config.get("current-context")
    contexts = {c["name"]: c.get("context") or {} for c in config.get("contexts") or []}
    if not contexts:
        raise ConfigError(f"kubeconfig {path} has no contexts")
    context = contexts.get(current) or next(iter(contexts.values()))
    clusters = {c["name"]: c.get("cluster") or {} for c in config.get("clusters") or []}
    users = {u["name"]: u.get("user") or {} for u in config.get("users") or []}
    cluster = clusters.get(context.get("cluster", ""))
    if cluster is None or not cluster.get("server"):
        raise ConfigError(f"kubeconfig {path}: context has no cluster with a server")
    user = users.get(context.get("user", ""), {})
    base = path.parent
    if cluster.get("insecure-skip-tls-verify"):
        context_ssl = ssl.create_default_context()
        context_ssl.check_hostname = False
        context_ssl.verify_mode = ssl.CERT_NONE
    else:
        ca = _material(cluster, "certificate-authority", base=base)
        context_ssl = ssl.create_default_context(cafile=str(ca) if ca else None)
    cert = _material(user, "client-certificate", base=base)
    key = _material(user, "client-key", base=base)
    if cert and key:
        context_ssl.load_cert_chain(str(cert), str(key))
    token_file = user.get("tokenFile")
    credentials = Credentials(
        token=user.get("token"),
        token_file=Path(token_file) if token_file else None,
        exec_spec=user.get("exec"),
    )
    return ClusterConfig(
        server=str(cluster["server"]).rstrip("/"),
        ssl_context=context_ssl,
        credentials=credentials,
    )


def load() -> ClusterConfig:
    """In-cluster service account if present, else the first $KUBECONFIG file or
    ~/.kube/config."""
    found = in_cluster()
    if found is not None:
        return found
    env = os.environ.get("KUBECONFIG", "")
    path = Path(env.split(os.pathsep)[0]) if env else Path.home() / ".kube" / "config"
    return from_kubeconfig(path)
