"""The operator's HEAD check of an ``s3`` bucket (headroom.reconcile.buckets)
against a real versitygw on 127.0.0.1: a bucket that exists passes, a missing
one is BucketNotFound, a wrong key CredentialsRejected, an endpoint that does
not answer only a note; no verdict carries the secret."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from collections.abc import Callable
from typing import Any

import s3_servers

from headroom.reconcile import bucket_check, resolver
from headroom.s3 import rest

StartGW = Callable[..., s3_servers.VersityGW]


def _target(gateway: s3_servers.VersityGW, bucket: str, *, secret: str | None = None) -> Any:
    return bucket_check.Target(
        endpoint=gateway.endpoint,
        region="us-east-1",
        bucket=bucket,
        access_key_id=gateway.root.access_key,
        secret_access_key=secret or gateway.root.secret_key,
    )


def test_head_bucket_verdicts_on_a_real_server(start_versitygw: StartGW) -> None:
    gateway = start_versitygw()
    root = rest.Client(
        endpoint=gateway.endpoint,
        access_key=gateway.root.access_key,
        secret_key=gateway.root.secret_key,
    )
    root.request("PUT", "/space-kontext-files")

    # the server is on 127.0.0.1, which the operator otherwise never contacts
    assert _check(_target(gateway, "space-kontext-files"), local=True) == bucket_check.Verdict()
    missing = _check(_target(gateway, "not-there"), local=True)
    assert missing.reason == "BucketNotFound"
    assert "not-there" in missing.message
    wrong = secrets.token_urlsafe(30)
    rejected = _check(_target(gateway, "space-kontext-files", secret=wrong), local=True)
    assert rejected.reason == "CredentialsRejected"
    assert "SignatureDoesNotMatch" in rejected.message
    assert wrong not in repr(rejected) and gateway.root.secret_key not in repr(rejected)


def test_an_endpoint_that_does_not_answer_is_a_note_not_a_failure() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    verdict = _check(
        bucket_check.Target(
            endpoint=f"http://127.0.0.1:{port}",
            region="auto",
            bucket="b-1",
            access_key_id="AK",
            secret_access_key="SK",
        ),
        local=True,
    )
    assert verdict.reason is None and not verdict.answered
    assert verdict.note.startswith("not checked:")


def test_the_operator_never_contacts_an_internal_address(start_versitygw: StartGW) -> None:
    """A server that answers on 127.0.0.1, reached by an IP literal or by a name
    that resolves there (a COSI driver's endpoint, or DNS pointing a public-looking
    name inside): the operator's check refuses to connect, and says why."""
    gateway = start_versitygw()
    port = gateway.endpoint.rsplit(":", 1)[1]
    target = _target(gateway, "space-kontext-files")
    for endpoint in (gateway.endpoint, f"http://localhost:{port}", f"http://[::1]:{port}"):
        verdict = _check(dataclasses.replace(target, endpoint=endpoint))
        assert verdict.reason is None, endpoint
        assert "InternalAddress" in verdict.note, verdict
    # nothing reached the server: its log has no request
    assert "space-kontext-files" not in gateway.log_text()
    out_of_range = _check(dataclasses.replace(target, endpoint="https://s3.example.com:99999"))
    assert "InvalidEndpoint" in out_of_range.note


def _check(target: bucket_check.Target, *, local: bool = False) -> bucket_check.Verdict:
    """The operator's check, through a checker of its own like the probe's
    (``local``: the operator was told it may contact 127.0.0.1)."""

    async def run() -> bucket_check.Verdict:
        async with bucket_check.Checker(resolver.Resolver(), allow_internal=local) as check:
            return await check(target)

    return asyncio.run(run())
