"""The validating admission webhook: server, certificate and the handler.

kopf serves the webhook and keeps the ValidatingWebhookConfiguration
``headroom.dev`` in sync. Locally the API server dials https://127.0.0.1:PORT;
in a cluster it dials a Service (``HEADROOM_WEBHOOK_SERVICE=ns/name``). The
serving certificate is self-signed and kept in ``webhook_cert_dir``; its
private key never leaves that folder (mode 0600).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from headroom import settings as settings_mod
from headroom.api import v1alpha1
from headroom.planning import admission

_VALIDITY = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=30)


def _names(cfg: settings_mod.Settings) -> list[str]:
    names = ["localhost", "127.0.0.1"]
    if cfg.webhook_host:
        names.append(cfg.webhook_host)
    if cfg.webhook_service:
        namespace, name = cfg.webhook_service.split("/", 1)
        names += [f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local"]
    return sorted(set(names))


def _current(cert_path: Path, names: list[str]) -> bool:
    if not cert_path.exists():
        return False
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    if cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) < _RENEW_BEFORE:
        return False
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return have == set(names)


def ensure_certificate(cfg: settings_mod.Settings) -> tuple[Path, Path]:
    """Self-signed serving certificate for the webhook, (re)generated when needed."""
    folder = cfg.webhook_cert_dir
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    names = _names(cfg)
    if _current(cert_path, names) and key_path.exists():
        return cert_path, key_path
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
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


class ServiceWebhookServer(kopf.WebhookServer):
    """Like kopf's server, but tells the API server to dial a Service, not a URL."""

    def __init__(self, *, service: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service_namespace, self.service_name = service.split("/", 1)

    async def __call__(self, fn: Any) -> AsyncIterator[kopf.WebhookClientConfig]:
        async for config in super().__call__(fn):
            yield kopf.WebhookClientConfig(
                caBundle=config.get("caBundle"),
                service=kopf.WebhookClientConfigService(
                    namespace=self.service_namespace,
                    name=self.service_name,
                    port=self.port,
                    path="/",
                ),
            )


def server(cfg: settings_mod.Settings) -> kopf.WebhookServer:
    cert, key = ensure_certificate(cfg)
    if cfg.webhook_service:
        return ServiceWebhookServer(
            service=cfg.webhook_service,
            addr=cfg.webhook_addr,
            port=cfg.webhook_port,
            certfile=cert,
            pkeyfile=key,
            cafile=cert,
        )
    return kopf.WebhookServer(
        host=cfg.webhook_host or cfg.webhook_addr,
        addr=cfg.webhook_addr,
        port=cfg.webhook_port,
        certfile=cert,
        pkeyfile=key,
        cafile=cert,
    )


@kopf.on.validate(
    v1alpha1.GROUP,
    v1alpha1.VERSION,
    v1alpha1.PLURAL,
    id="scalingprofile",
    operations=["CREATE", "UPDATE"],
    side_effects=False,
)
def validate_profile(body: kopf.Body, old: kopf.Body | None = None, **_: Any) -> None:
    """Reject an impossible profile with a message naming fields and numbers."""
    if old is not None and old.get("spec") == body.get("spec"):
        return  # metadata-only changes (labels, kopf's own annotations) always pass
    problem = admission.review(dict(body))
    if problem:
        raise kopf.AdmissionError(problem, code=422)
