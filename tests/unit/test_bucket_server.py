"""The builtin provider's pure parts: the SigV4 signer (against the worked
example in AWS's S3 SigV4 documentation), the CORS document, the agent's
config model refusing what could inject into the XML it sends."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

import pytest
from pydantic import ValidationError

from headroom.planning import bucket_server
from headroom.s3 import sigv4

# "Example: GET Object" of the S3 API reference, "Signature Calculations for the
# Authorization Header: Transferring Payload in a Single Chunk".
EXAMPLE_ACCESS = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_sigv4_matches_the_documented_get_object_example() -> None:
    headers = sigv4.sign(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        path="/test.txt",
        query={},
        headers={"Range": "bytes=0-9"},
        body=b"",
        access_key=EXAMPLE_ACCESS,
        secret_key=EXAMPLE_SECRET,
        region="us-east-1",
        now=dt.datetime(2013, 5, 24, tzinfo=dt.UTC),
    )
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )
    assert headers["x-amz-content-sha256"] == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


def test_sigv4_canonical_query_sorts_and_encodes() -> None:
    assert sigv4.canonical_query({"prefix": "a b/c", "cors": ""}) == "cors=&prefix=a%20b%2Fc"


def test_cors_document_lists_every_rule_value() -> None:
    rule = bucket_server.CorsRule(
        allowed_origins=("https://app.example.com", "http://localhost:3000"),
        allowed_methods=("GET", "PUT"),
        allowed_headers=("*",),
        max_age_seconds=600,
    )
    root = ET.fromstring(bucket_server.render_cors((rule,)))  # noqa: S314 - our own output
    (element,) = root.findall("CORSRule")
    assert [e.text for e in element.findall("AllowedOrigin")] == [
        "https://app.example.com",
        "http://localhost:3000",
    ]
    assert [e.text for e in element.findall("AllowedMethod")] == ["GET", "PUT"]
    assert [e.text for e in element.findall("ExposeHeader")] == ["ETag"]
    assert element.findtext("MaxAgeSeconds") == "600"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("allowed_origins", ("https://a.example.com</AllowedOrigin><AllowedOrigin>*",)),
        ("allowed_origins", ("https://a.example.com\nx",)),
        ("allowed_origins", ("ftp://a.example.com",)),
        ("allowed_methods", ("PATCH",)),
        ("allowed_headers", ("x-a\r\nx-b",)),
    ],
)
def test_cors_rule_refuses_values_outside_the_charset(field: str, value: tuple[str, ...]) -> None:
    fields: dict[str, object] = {
        "allowed_origins": ("https://app.example.com",),
        "allowed_methods": ("GET",),
    }
    fields[field] = value
    with pytest.raises(ValidationError):
        bucket_server.CorsRule.model_validate(fields)


def test_config_round_trips_and_refuses_bad_names() -> None:
    config = bucket_server.BucketServerConfig(
        app_access_key="a1b2c3d4e5f6a7b8c9d0",
        buckets=(bucket_server.ServedBucket(name="meal-photos"),),
    )
    assert bucket_server.BucketServerConfig.model_validate_json(config.to_json()) == config
    with pytest.raises(ValidationError):
        bucket_server.ServedBucket(name="Meal_Photos")
    with pytest.raises(ValidationError):
        config.model_validate({**config.model_dump(), "app_access_key": "short"})


def test_server_keeps_the_admin_api_on_localhost() -> None:
    args = bucket_server.server_args()
    assert args[args.index("--admin-port") + 1].startswith("127.0.0.1:")
    assert args[-2:] == ["posix", bucket_server.BUCKETS_DIR]
