"""The validating admission webhook: its certificate, its configuration and its
server.

The server runs in a process of its own, so an admission answer never waits
behind reconcile work (the pass's CPU, the interpreter lock, the queue); the
handler is pure (the planner only). Locally the API server dials
https://127.0.0.1:PORT; in a cluster it dials a Service
(``HEADROOM_WEBHOOK_SERVICE=ns/name``), and every replica serves with the same
certificate, kept in a Secret (``HEADROOM_WEBHOOK_CERT_SECRET``). The private
key is written only to ``webhook_cert_dir`` (mode 0600) and that Secret.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import ipaddress
import json
import logging
import multiprocessing
import os
import signal
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import Histogram

from headroom import settings as settings_mod
from headroom.api import v1alpha1
from headroom.kube import client as kube_client
from headroom.kube import errors, kinds
from headroom.planning import admission
from headroom.planning import budget as budget_mod
from headroom.reconcile import shared as shared_mod

log = logging.getLogger(__name__)

CONFIGURATION = "headroom.dev"
WEBHOOK_NAME = "scalingprofile.headroom.dev"
PATH = "/validate/scalingprofile"
_VALIDITY = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=30)
_MAX_BODY = 8 * 1024 * 1024


# -- certificate ---------------------------------------------------------------


def _names(cfg: settings_mod.Settings) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    if cfg.webhook_host:
        names.append(cfg.webhook_host)
    if cfg.webhook_service:
        namespace, name = cfg.webhook_service.split("/", 1)
        names += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    return sorted(set(names))


def _current(cert_pem: bytes, names: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return False
    if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < _RENEW_BEFORE:
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return have == set(names)


def _generate(names: list[str]) -> tuple[bytes, bytes]:
    """A self-signed serving certificate and its key (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "headroom-webhook")])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def install(cfg: settings_mod.Settings, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write the pair the admission process serves; it loads a new pair by
    itself (the key first: a reload that sees a new certificate has its key)."""
    folder = cfg.webhook_cert_dir
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def local_certificate(cfg: settings_mod.Settings) -> tuple[bytes, bytes]:
    """The pair in ``webhook_cert_dir`` while it is current, else a new one
    (not written: ``install`` does, once the API server trusts it)."""
    folder = cfg.webhook_cert_dir
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    names = _names(cfg)
    if cert_path.exists() and key_path.exists():
        cert_pem = cert_path.read_bytes()
        if _current(cert_pem, names):
            return cert_pem, key_path.read_bytes()
    return _generate(names)


def ca_bundle(*pems: bytes) -> bytes:
    """The caBundle the API server verifies us with: every distinct certificate
    in ``pems`` (each one certificate or a bundle of them) that has not
    expired, so a renewal never leaves a moment where the served certificate
    is not trusted."""
    now = datetime.datetime.now(datetime.UTC)
    kept: list[bytes] = []
    for pem in pems:
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError:
            continue
        for cert in certs:
            encoded = cert.public_bytes(serialization.Encoding.PEM)
            if cert.not_valid_after_utc > now and encoded not in kept:
                kept.append(encoded)
    return b"".join(kept)


def trusts(configuration_obj: dict[str, Any] | None, cert_pem: bytes) -> bool:
    """Whether our registered configuration's caBundle holds ``cert_pem``."""
    for hook in (configuration_obj or {}).get("webhooks") or []:
        bundle = base64.b64decode((hook.get("clientConfig") or {}).get("caBundle") or "")
        if cert_pem.strip() in bundle:
            return True
    return False


async def registered(kube: kube_client.Kube) -> dict[str, Any] | None:
    return await kube.get(kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION)


async def shared_certificate(
    cfg: settings_mod.Settings, kube: kube_client.Kube
) -> tuple[bytes, bytes]:
    """The certificate every replica serves with, from the Secret
    ``webhook_cert_secret`` (the first replica creates it; one that finds it
    due for renewal replaces it)."""
    namespace, name = cfg.webhook_cert_secret.split("/", 1)
    names = _names(cfg)
    for _ in range(3):
        found = await kube.get(kinds.SECRET, namespace=namespace, name=name)
        data = (found or {}).get("data") or {}
        if found is not None and "tls.crt" in data and "tls.key" in data:
            cert_pem = base64.b64decode(data["tls.crt"])
            if _current(cert_pem, names):
                return cert_pem, base64.b64decode(data["tls.key"])
        cert_pem, key_pem = _generate(names)
        secret: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/name": "headroom"},
            },
            "type": "kubernetes.io/tls",
            "data": {
                "tls.crt": base64.b64encode(cert_pem).decode(),
                "tls.key": base64.b64encode(key_pem).decode(),
            },
        }
        try:
            if found is None:
                await kube.create(secret)
            else:  # expired or for other names: replace, unless another replica just did
                secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
                await kube.replace(secret)
        except errors.ApiError as err:
            if err.status == 409:
                continue  # another replica won: read its certificate
            raise
        return cert_pem, key_pem
    raise errors.UnavailableError(
        f"could not settle the webhook certificate in Secret {namespace}/{name}"
    )


# -- configuration ---------------------------------------------------------------


def configuration(cfg: settings_mod.Settings, ca_pem: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration pointing the API server at us."""
    bundle = base64.b64encode(ca_pem).decode()
    if cfg.webhook_service:
        namespace, name = cfg.webhook_service.split("/", 1)
        client: dict[str, Any] = {
            "service": {
                "namespace": namespace,
                "name": name,
                "port": cfg.webhook_port,
                "path": PATH,
            },
            "caBundle": bundle,
        }
    else:
        host = cfg.webhook_host or cfg.webhook_addr
        client = {"url": f"https://{host}:{cfg.webhook_port}{PATH}", "caBundle": bundle}
    return {
        "apiVersion": kinds.VALIDATING_WEBHOOK.api_version,
        "kind": kinds.VALIDATING_WEBHOOK.kind,
        "metadata": {"name": CONFIGURATION, "labels": {"app.kubernetes.io/name": "headroom"}},
        "webhooks": [
            {
                "name": WEBHOOK_NAME,
                "clientConfig": client,
                "rules": [
                    {
                        "apiGroups": [v1alpha1.GROUP],
                        "apiVersions": [v1alpha1.VERSION],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [v1alpha1.PLURAL],
                        "scope": "Namespaced",
                    }
                ],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Fail",
                "matchPolicy": "Equivalent",
                "timeoutSeconds": 10,
            }
        ],
    }


async def register(cfg: settings_mod.Settings, kube: kube_client.Kube, ca_pem: bytes) -> None:
    """Apply our configuration; replace one whose webhooks another manager set
    (kopf-era versions), so no stale entry points at a server that is gone."""
    wanted = configuration(cfg, ca_pem)
    applied = await kube.apply(wanted)
    names = [w.get("name") for w in applied.get("webhooks") or []]
    client = (applied.get("webhooks") or [{}])[0].get("clientConfig") or {}
    if names != [WEBHOOK_NAME] or ("url" in client and "service" in client):
        await kube.delete(
            kinds.VALIDATING_WEBHOOK,
            namespace=None,
            name=CONFIGURATION,
            uid=applied["metadata"]["uid"],
        )
        await kube.apply(wanted)


async def unregister(kube: kube_client.Kube) -> bool:
    """Delete our configuration if there is one; whether one was deleted."""
    found = await kube.get(kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION)
    if found is None:
        return False
    log.info("admission is off: removing ValidatingWebhookConfiguration %s", CONFIGURATION)
    return await kube.delete(
        kinds.VALIDATING_WEBHOOK, namespace=None, name=CONFIGURATION, uid=found["metadata"]["uid"]
    )


# -- the handler -------------------------------------------------------------------


def review(request: dict[str, Any], table: shared_mod.Table | None = None) -> dict[str, Any]:
    """AdmissionReview request -> response (pure). ``table``: the Postgres
    servers and what each profile on them opens (the operator keeps it)."""
    uid = request.get("uid", "")
    body = request.get("object") or {}
    old = request.get("oldObject")
    problem = None
    if not (old is not None and old.get("spec") == body.get("spec")):
        # metadata-only changes (labels, finalizers) always pass
        lookup = None
        if table is not None:
            known = table

            def lookup(server: str, key: str) -> tuple[budget_mod.SharedUse, ...]:
                return shared_mod.others(known, server, key)

        problem = admission.review(body, shared=lookup)
    response: dict[str, Any] = {"uid": uid, "allowed": problem is None}
    if problem is not None:
        response["status"] = {"code": 422, "reason": "Invalid", "message": problem}
    return response


async def _handle(request: web.Request) -> web.Response:
    started = time.perf_counter()
    try:
        review_in = json.loads(await request.read())
        answer = review(review_in.get("request") or {}, request.app[_TABLE])
    except (ValueError, AttributeError) as err:
        return web.json_response({"error": f"not an AdmissionReview: {err}"}, status=400)
    finally:
        request.app[_TIMINGS].put(time.perf_counter() - started)
    return web.json_response(
        {
            "apiVersion": review_in.get("apiVersion", "admission.k8s.io/v1"),
            "kind": "AdmissionReview",
            "response": answer,
        }
    )


_TIMINGS: web.AppKey[Any] = web.AppKey("timings")
_TABLE: web.AppKey[shared_mod.Table] = web.AppKey("table")


def _follow(tables: Any, table: shared_mod.Table) -> None:
    """In the child: apply the operator's table updates as they come."""
    while True:
        delta = tables.get()
        if delta is None:
            return
        for server, peers in delta.items():
            if peers:
                table[server] = peers
            else:
                table.pop(server, None)


def _stamp(path: str) -> tuple[int, int]:
    try:
        found = os.stat(path)
    except OSError:
        return (0, 0)
    return (found.st_mtime_ns, found.st_size)


def _serve_forever(where: dict[str, Any], timings: Any, ready: Any, tables: Any) -> None:
    """The child process: serve admission on ``where`` (addr, port, cert, key)
    until SIGTERM; every answer's time goes to ``timings``; ``tables`` brings
    the shared-server table."""
    addr, port, cert, key = where["addr"], where["port"], where["cert"], where["key"]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s webhook: %(message)s")
    table: shared_mod.Table = {}
    threading.Thread(target=_follow, args=(tables, table), daemon=True).start()

    async def main() -> None:
        app = web.Application(client_max_size=_MAX_BODY)
        app[_TIMINGS] = timings
        app[_TABLE] = table
        app.router.add_post(PATH, _handle)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        for attempt in range(40):  # a killed operator's server may still hold the port
            try:
                await web.TCPSite(runner, addr, port, ssl_context=context).start()
                break
            except OSError:
                if attempt == 39:
                    raise
                await asyncio.sleep(0.25)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        ready.set()
        parent = os.getppid()
        serving = _stamp(cert)
        while not stop.is_set():
            # The operator was killed (-9): its admission server goes with it.
            if os.getppid() != parent:
                break
            # A renewed certificate (the operator installs it once the API
            # server trusts it): new handshakes use it, open ones finish.
            if _stamp(cert) != serving:
                try:
                    context.load_cert_chain(cert, key)
                    serving = _stamp(cert)
                    logging.info("serving the renewed certificate")
                except (OSError, ssl.SSLError) as err:
                    logging.warning("could not load the renewed certificate yet: %s", err)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=0.5)
        await runner.cleanup()

    asyncio.run(main())


class Server:
    """The HTTPS admission server, in a process of its own: an answer never
    waits for the operator's event loop or its interpreter lock, whatever the
    reconcile load. The operator starts it, restarts it if it dies, and
    receives its timings for ``/metrics``."""

    def __init__(
        self, cfg: settings_mod.Settings, *, cert: Path, key: Path, latency: Histogram
    ) -> None:
        self.cfg = cfg
        self.cert, self.key = cert, key
        self.latency = latency
        self._context = multiprocessing.get_context("spawn")
        self._timings = self._context.SimpleQueue()
        self._tables: Any = None
        self._table: shared_mod.Table = {}  # the whole table, for a restarted child
        self._process: Any = None
        self._drain: threading.Thread | None = None

    def publish(self, delta: shared_mod.Table) -> None:
        """Servers whose profiles changed (an empty list: the server is gone)."""
        for server, peers in delta.items():
            if peers:
                self._table[server] = peers
            else:
                self._table.pop(server, None)
        if self._tables is not None:
            self._tables.put(delta)

    def start(self) -> None:
        ready = self._context.Event()
        self._tables = self._context.SimpleQueue()
        self._tables.put(dict(self._table))
        self._process = self._context.Process(
            target=_serve_forever,
            args=(
                {
                    "addr": self.cfg.webhook_addr,
                    "port": self.cfg.webhook_port,
                    "cert": str(self.cert),
                    "key": str(self.key),
                },
                self._timings,
                ready,
                self._tables,
            ),
            name="headroom-webhook",
            daemon=True,
        )
        self._process.start()
        if not ready.wait(60):
            self._process.kill()
            where = f"{self.cfg.webhook_addr}:{self.cfg.webhook_port}"
            raise RuntimeError(f"the webhook server did not start on {where}")
        if self._drain is None:
            self._drain = threading.Thread(
                target=self._observe, name="webhook-timings", daemon=True
            )
            self._drain.start()

    def _observe(self) -> None:
        while True:
            value = self._timings.get()
            if value is None:
                return
            self.latency.observe(value)

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.kill()
        self._timings.put(None)
