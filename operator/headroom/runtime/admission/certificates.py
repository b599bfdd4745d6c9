"""The webhook's serving certificate: self-signed for the names the API server
dials, kept on disk (``webhook_cert_dir``, the key mode 0600) and, with several
replicas, in one Secret they all serve (``HEADROOM_WEBHOOK_CERT_SECRET``);
renewed 30 days before it expires. :func:`ca_bundle` is what the API server is
told to trust. Called by :mod:`headroom.runtime.admission.lifecycle`.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from headroom import settings
from headroom.kube import apiserver, shared_secret

_VALIDITY = datetime.timedelta(days=365)
_RENEW_BEFORE = datetime.timedelta(days=30)


def _names(cfg: settings.Settings) -> list[str]:
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


def generate(names: list[str]) -> tuple[bytes, bytes]:
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


def install(cfg: settings.Settings, cert_pem: bytes, key_pem: bytes) -> tuple[Path, Path]:
    """Write the pair the admission process serves; it loads a new pair by
    itself (the key first: a reload that sees a new certificate has its key)."""
    folder = cfg.webhook_cert_dir
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    _write_atomically(key_path, key_pem, 0o600)
    _write_atomically(cert_path, cert_pem, 0o644)
    return cert_path, key_path


def local_certificate(cfg: settings.Settings) -> tuple[bytes, bytes]:
    """The pair in ``webhook_cert_dir`` while it is current, else a new one
    (not written: ``install`` does, once the API server trusts it)."""
    folder = cfg.webhook_cert_dir
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    names = _names(cfg)
    if cert_path.exists() and key_path.exists():
        cert_pem = cert_path.read_bytes()
        if _current(cert_pem, names):
            return cert_pem, key_path.read_bytes()
    return generate(names)


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


async def shared_certificate(cfg: settings.Settings, kube: apiserver.Kube) -> tuple[bytes, bytes]:
    """The certificate every replica serves with, from the Secret
    ``webhook_cert_secret`` (the first replica creates it; one that finds it
    due for renewal replaces it)."""
    namespace, name = cfg.webhook_cert_secret.split("/", 1)
    names = _names(cfg)

    def read(data: dict[str, str]) -> tuple[bytes, bytes] | None:
        if "tls.crt" not in data or "tls.key" not in data:
            return None
        cert_pem = base64.b64decode(data["tls.crt"])
        if not _current(cert_pem, names):
            return None  # expired or for other names
        return cert_pem, base64.b64decode(data["tls.key"])

    def make() -> tuple[dict[str, str], tuple[bytes, bytes]]:
        cert_pem, key_pem = generate(names)
        data = {
            "tls.crt": base64.b64encode(cert_pem).decode(),
            "tls.key": base64.b64encode(key_pem).decode(),
        }
        return data, (cert_pem, key_pem)

    return await shared_secret.settle(
        kube,
        namespace=namespace,
        name=name,
        data_type="kubernetes.io/tls",
        labels={"app.kubernetes.io/name": "headroom"},
        read=read,
        make=make,
    )
