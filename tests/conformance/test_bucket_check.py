"""The operator's HEAD check of an ``s3`` bucket (headroom.reconcile.buckets)
against a real versitygw on 127.0.0.1: a bucket that exists passes, a missing
one is BucketNotFound, a wrong key CredentialsRejected, an endpoint that does
not answer only a note; no verdict carries the secret."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

import s3_servers

from headroom.reconcile import bucket_check
from headroom.s3 import rest

StartGW = Callable[..., s3_servers.VersityGW]


def _target(gateway: s3_servers.VersityGW, bucket: str, *, secret: str | None = None) -> Any:
    return bucket_check.Target(
        name="files",
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

    assert bucket_check.check(_target(gateway, "space-kontext-files")) == bucket_check.Verdict()
    missing = bucket_check.check(_target(gateway, "not-there"))
    assert missing.reason == "BucketNotFound"
    assert "not-there" in missing.message
    wrong = secrets.token_urlsafe(30)
    rejected = bucket_check.check(_target(gateway, "space-kontext-files", secret=wrong))
    assert rejected.reason == "CredentialsRejected"
    assert "SignatureDoesNotMatch" in rejected.message
    assert wrong not in repr(rejected) and gateway.root.secret_key not in repr(rejected)
