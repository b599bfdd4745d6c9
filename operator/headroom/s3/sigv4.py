"""AWS Signature Version 4 for S3 requests (header auth), pure: the request
parts and a clock reading in, the headers to send out. Used by
``headroom.s3.rest``; checked against a real versitygw in
tests/conformance/test_buckets_s3.py and against botocore's signer in
tests/unit/test_sigv4.py.

Follows the S3 flavour of the spec: the path is percent-encoded once (not
twice, as for other services), the payload's SHA-256 is sent as
``x-amz-content-sha256`` and signed.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "s3"
_UNRESERVED = "-_.~"


def _encode(text: str, *, keep_slash: bool) -> str:
    return quote(text, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(query: Mapping[str, str]) -> str:
    """``k=v&...`` sorted by key, both percent-encoded (a bare ``?cors`` is ``cors=``)."""
    pairs = sorted(
        (_encode(k, keep_slash=False), _encode(v, keep_slash=False)) for k, v in query.items()
    )
    return "&".join(f"{k}={v}" for k, v in pairs)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def signing_key(secret_key: str, *, date: str, region: str) -> bytes:
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, SERVICE)
    return _hmac(key, "aws4_request")


def sign(
    *,
    method: str,
    host: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    body: bytes,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """The headers to send: ``headers`` plus host, x-amz-date,
    x-amz-content-sha256 and Authorization. ``path`` is the unencoded path
    (``/bucket/key``); ``host`` is ``host[:port]`` as sent."""
    amz_date = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    date = amz_date[:8]
    payload_hash = hashlib.sha256(body).hexdigest()
    out = {k.lower(): " ".join(str(v).split()) for k, v in headers.items()}
    out |= {"host": host, "x-amz-date": amz_date, "x-amz-content-sha256": payload_hash}
    signed = sorted(out)
    canonical = "\n".join(
        [
            method.upper(),
            _encode(path or "/", keep_slash=True),
            canonical_query(query),
            "".join(f"{name}:{out[name]}\n" for name in signed),
            ";".join(signed),
            payload_hash,
        ]
    )
    scope = f"{date}/{region}/{SERVICE}/aws4_request"
    to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()]
    )
    signature = hmac.new(
        signing_key(secret_key, date=date, region=region), to_sign.encode(), hashlib.sha256
    ).hexdigest()
    out["authorization"] = (
        f"{ALGORITHM} Credential={access_key}/{scope}, "
        f"SignedHeaders={';'.join(signed)}, Signature={signature}"
    )
    return out
