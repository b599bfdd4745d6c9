"""TLS from the pooler to the primary, verified against the CA the profile names.

A Postgres 15 on 127.0.0.1 serves a certificate for 127.0.0.1 signed by a test
CA. The pgbouncer.ini Headroom renders for sslMode verify-full with
serverCASecret (server_tls_ca_file) runs in Debian's pgbouncer: queries go
through over TLS; with another CA, PgBouncer refuses the server. The operator's
limits check verifies the same way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import servers

from headroom.api import v1alpha1
from headroom.planning import planner
from headroom.postgres import server_limits
from headroom.reconcile import primary_limits, resolver

USER, PASSWORD, DBNAME = servers.TLS_USER, servers.TLS_PASSWORD, servers.TLS_DBNAME
STATS_PASSWORD = "stats-secret-3"
# the name the operator's probe knows the primary by (it resolves to 127.0.0.1 here)
PRIMARY_NAME = servers.TLS_PRIMARY_NAME


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
    tls_primary: servers.TLSPrimary, start_pgbouncer: servers.StartPgBouncer
) -> None:
    planned = _plan(tls_primary.server.port)
    ini = servers.ini_for(planned, server_ca_file=str(tls_primary.ca_file))
    bouncer = start_pgbouncer(ini, tls_primary.database.userlist(STATS_PASSWORD))
    assert "server_tls_sslmode = verify-full" in bouncer.ini_text
    assert f"server_tls_ca_file = {tls_primary.ca_file}" in bouncer.ini_text
    through = bouncer.psql(USER, PASSWORD, DBNAME)
    assert through.value("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()") == "t"


def test_the_pooler_refuses_a_primary_another_ca_signed(
    tls_primary: servers.TLSPrimary, start_pgbouncer: servers.StartPgBouncer
) -> None:
    # clients give up after 5 s instead of the default 120 s
    planned = _plan(tls_primary.server.port, query_wait_timeout="5")
    ini = servers.ini_for(planned, server_ca_file=str(tls_primary.other_ca_file))
    bouncer = start_pgbouncer(ini, tls_primary.database.userlist(STATS_PASSWORD))
    proc = bouncer.psql(USER, PASSWORD, DBNAME).run("SELECT 1", timeout=60)
    assert proc.returncode != 0
    assert "certificate verify failed" in bouncer.log_text(), bouncer.log_text()[-2000:]


def test_the_limits_check_verifies_the_same_way(tls_primary: servers.TLSPrimary) -> None:
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
        max_connections=40,
        superuser_reserved_connections=3,
        max_slot_wal_keep_size_mb=-1,
        # the test server loads no pg_stat_statements; the probe reads that as it is
        statements_missing='UndefinedTable: relation "pg_stat_statements" does not exist',
    )
    refused = read(tls_primary.other_ca_file)
    assert isinstance(refused, str) and "certificate verify failed" in refused, refused
    # the address alone proves nothing: another name there is refused
    other = read(tls_primary.ca_file, host="other.headroom.test")
    assert isinstance(other, str) and "does not match host name" in other, other
    # sslMode require encrypts without checking the chain, in PgBouncer and here alike
    assert isinstance(read(tls_primary.other_ca_file, "require"), planner.PrimaryLimits)
