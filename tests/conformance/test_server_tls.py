"""TLS from the pooler to the primary, verified against the CA the profile names.

A Postgres 15 on 127.0.0.1 serves a certificate for 127.0.0.1 signed by a test
CA. The pgbouncer.ini Headroom renders for sslMode verify-full with
serverCASecret (server_tls_ca_file) runs in Debian's pgbouncer: queries go
through over TLS; with another CA, PgBouncer refuses the server. The operator's
limits check verifies the same way.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import servers
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from tests import certs

from headroom.api import v1alpha1
from headroom.planning import planner
from headroom.postgres import server_limits
from headroom.reconcile import primary_limits, resolver

USER, PASSWORD, DBNAME = "tls_app", "tls-app-secret-9", "tlsdb"
STATS_PASSWORD = "stats-secret-3"
# the name the operator's probe knows the primary by (it resolves to 127.0.0.1 here)
PRIMARY_NAME = "primary.headroom.test"


def _server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(certs.name(servers.HOST))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(servers.HOST)), x509.DNSName(PRIMARY_NAME)]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class TLSPrimary:
    server: servers.Postgres
    ca_file: Path  # the CA that signed the server's certificate
    other_ca_file: Path  # a CA that did not

    @property
    def database(self) -> servers.AppDatabase:
        return servers.AppDatabase(self.server, USER, PASSWORD, DBNAME)


@pytest.fixture(scope="module")
def tls_primary(tools: servers.Tools) -> Iterator[TLSPrimary]:
    folder = servers.private_dir("headroom-tls-", tools.owner)
    ca_key, ca = certs.ca("headroom test CA")
    _, other_ca = certs.ca("some other CA")
    key, cert = _server_cert(ca_key, ca)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    servers.write_private(folder / "server.key", key_pem, tools.owner)
    servers.write_private(folder / "server.crt", _pem(cert), tools.owner)
    ca_file = servers.write_private(folder / "ca.crt", _pem(ca), tools.owner)
    other = servers.write_private(folder / "other-ca.crt", _pem(other_ca), tools.owner)
    server = servers.Postgres(
        tools,
        max_connections=40,
        extra_conf=(
            "ssl = on\n"
            f"ssl_cert_file = '{folder / 'server.crt'}'\n"
            f"ssl_key_file = '{folder / 'server.key'}'\n"
        ),
    )
    try:
        server.start()
        server.create_role(USER, PASSWORD)
        server.admin().rows(f"CREATE DATABASE {DBNAME} OWNER {servers.quote_ident(USER)}")
        yield TLSPrimary(server, ca_file, other)
    finally:
        server.stop()


def _plan(port: int, **pooler_parameters: str) -> planner.Plan:
    body = {
        "apiVersion": "headroom.dev/v1alpha1",
        "kind": "ScalingProfile",
        "metadata": {"name": "tls", "namespace": "default", "uid": "u-tls"},
        "spec": {
            "app": {"deployment": "web", "replicas": {"min": 1, "max": 4}, "poolSizePerPod": 2},
            "database": {
                "host": servers.HOST,
                "port": port,
                "name": DBNAME,
                "credentialsSecret": {"name": "db"},
                "maxConnections": 40,
                "sslMode": "verify-full",
                "serverCASecret": {"name": "db-ca"},
            },
            "pooler": {
                "instances": 1,
                "image": "registry.example/pgbouncer:1.18",  # Debian 12's; never pulled
                "parameters": dict(pooler_parameters),
            },
        },
    }
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problem_text()
    return planned


def test_the_pooler_verifies_the_primary_with_the_named_ca(
    tls_primary: TLSPrimary, start_pgbouncer: servers.StartPgBouncer
) -> None:
    planned = _plan(tls_primary.server.port)
    ini = servers.ini_for(planned, server_ca_file=str(tls_primary.ca_file))
    bouncer = start_pgbouncer(ini, tls_primary.database.userlist(STATS_PASSWORD))
    assert "server_tls_sslmode = verify-full" in bouncer.ini_text
    assert f"server_tls_ca_file = {tls_primary.ca_file}" in bouncer.ini_text
    through = bouncer.psql(USER, PASSWORD, DBNAME)
    assert through.value("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t"


def test_the_pooler_refuses_a_primary_another_ca_signed(
    tls_primary: TLSPrimary, start_pgbouncer: servers.StartPgBouncer
) -> None:
    # clients give up after 5 s instead of the default 120 s
    planned = _plan(tls_primary.server.port, query_wait_timeout="5")
    ini = servers.ini_for(planned, server_ca_file=str(tls_primary.other_ca_file))
    bouncer = start_pgbouncer(ini, tls_primary.database.userlist(STATS_PASSWORD))
    proc = bouncer.psql(USER, PASSWORD, DBNAME).run("SELECT 1", timeout=60)
    assert proc.returncode != 0
    assert "certificate verify failed" in bouncer.log_text(), bouncer.log_text()[-2000:]


def test_the_limits_check_verifies_the_same_way(tls_primary: TLSPrimary) -> None:
    """The probe connects to the address it resolved and verifies the
    certificate for the name the profile gives."""
    names = resolver.Resolver(lookup=lambda host: [servers.HOST])

    def read(ca_file: Path, ssl_mode: str = "verify-full", host: str = PRIMARY_NAME) -> Any:
        target = server_limits.Target(
            host=host,
            port=tls_primary.server.port,
            database=DBNAME,
            username=USER,
            password=PASSWORD,
            ssl_mode=ssl_mode,
            server_ca_pem=ca_file.read_text(),
        )
        return asyncio.run(primary_limits.at_address(names, server_limits.read_async)(target))

    assert read(tls_primary.ca_file) == planner.PrimaryLimits(
        max_connections=40, superuser_reserved_connections=3, max_slot_wal_keep_size_mb=-1
    )
    refused = read(tls_primary.other_ca_file)
    assert isinstance(refused, str) and "certificate verify failed" in refused, refused
    # the address alone proves nothing: another name there is refused
    other = read(tls_primary.ca_file, host="other.headroom.test")
    assert isinstance(other, str) and "does not match host name" in other, other
    # sslMode require encrypts without checking the chain, in PgBouncer and here alike
    assert isinstance(read(tls_primary.other_ca_file, "require"), planner.PrimaryLimits)
