"""The builtin provider's pure parts: the SigV4 signer (against the worked
example in AWS's S3 SigV4 documentation), the CORS document, the agent's
config model refusing what could inject into the XML it sends."""

from __future__ import annotations

import base64
import datetime
from typing import Any
from xml.etree import ElementTree

import pytest
from pydantic import ValidationError

from headroom.api import v1alpha1
from headroom.builders import desired
from headroom.planning import credentials, object_storage, planner, versitygw
from headroom.reconcile import observe
from headroom.s3 import sigv4
from tests import profiles

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
        now=datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC),
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
    rule = versitygw.CorsRule(
        allowed_origins=("https://app.example.com", "http://localhost:3000"),
        allowed_methods=("GET", "PUT"),
        allowed_headers=("*",),
        max_age_seconds=600,
    )
    root = ElementTree.fromstring(versitygw.render_cors((rule,)))  # noqa: S314 - our own output
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
        versitygw.CorsRule.model_validate(fields)


def test_config_round_trips_and_refuses_bad_names() -> None:
    config = versitygw.BucketServerConfig(
        app_access_key="a1b2c3d4e5f6a7b8c9d0",
        buckets=(versitygw.ServedBucket(name="meal-photos"),),
    )
    assert versitygw.BucketServerConfig.model_validate_json(config.to_json()) == config
    with pytest.raises(ValidationError):
        versitygw.ServedBucket(name="Meal_Photos")
    with pytest.raises(ValidationError):
        config.model_validate({**config.model_dump(), "app_access_key": "short"})


def test_server_keeps_the_admin_api_on_localhost() -> None:
    args = versitygw.server_args()
    assert args[args.index("--admin-port") + 1].startswith("127.0.0.1:")
    assert args[-4:] == ["posix", "--sidecar", versitygw.META_DIR, versitygw.BUCKETS_DIR]


# -- the builtin provider through the plan, the builders and StorageReady ------------

KEYS = versitygw.ServerKeys(
    root_access_key="0123456789abcdefroot",
    root_secret_key="root-secret-0123456789abcdef0123456789ab",
    app_access_key="0123456789abcdef0app",
    app_secret_key="app-secret-0123456789abcdef0123456789abc",
)


def _planned(*entries: dict[str, Any]) -> planner.Plan:
    body = profiles.base(storage=profiles.buckets(*entries))
    body["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    return planner.plan(v1alpha1.parse_profile(body))


def _objects(planned: planner.Plan) -> dict[str, dict[str, Any]]:
    found = {
        b.name: credentials.builtin_bucket(planned, b, keys=KEYS)
        for b in planned.buckets
        if b.builtin is not None
    }
    creds = credentials.Credentials(
        username="app",
        password="pw",
        stats_password="stats",
        revision="1",
        buckets=found,
        s3_server=KEYS,
    )
    return desired.build(planned, creds)


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def test_builtin_buckets_share_one_server_with_the_first_ones_settings() -> None:
    planned = _planned(
        profiles.builtin_bucket("avatars", builtin={"storage": {"size": "20Gi"}}),
        profiles.builtin_bucket("photos", cors={"allowedOrigins": ["https://a.example.com"]}),
        profiles.cosi_bucket("other"),
    )
    server = versitygw.server_plan(planned.buckets)
    assert server is not None
    assert [b.name for b in server.buckets] == ["avatars", "photos"]
    assert server.size == "20Gi"
    assert server.buckets[1].cors[0].allowed_origins == ("https://a.example.com",)
    assert server.buckets[0].cors == ()
    objects = _objects(planned)
    assert [k for k in objects if k.startswith("StatefulSet/")] == ["StatefulSet/shop-s3"]


def test_no_builtin_bucket_no_server() -> None:
    planned = _planned(profiles.cosi_bucket("other"))
    assert versitygw.server_plan(planned.buckets) is None
    assert not any("shop-s3" in k for k in _objects(planned))


@pytest.mark.parametrize(
    ("policies", "when_deleted"),
    [(("Retain", "Delete"), "Retain"), (("Delete", "Delete"), "Delete"), (("Retain",), "Retain")],
)
def test_the_servers_volume_follows_its_buckets_deletion_policies(
    policies: tuple[str, ...], when_deleted: str
) -> None:
    entries = [
        profiles.builtin_bucket(f"bucket-{i}", deletionPolicy=policy)
        for i, policy in enumerate(policies)
    ]
    statefulset = _objects(_planned(*entries))["StatefulSet/shop-s3"]
    spec = statefulset["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == when_deleted
    template = spec["volumeClaimTemplates"][0]["metadata"]
    retained = template.get("annotations", {}).get(object_storage.RETAIN_ANNOTATION)
    assert retained == ("true" if when_deleted == "Retain" else None)
    # the StatefulSet itself always goes with the profile
    assert statefulset["metadata"]["ownerReferences"][0]["kind"] == "ScalingProfile"


def test_the_binding_carries_the_app_keys_never_the_root_ones() -> None:
    objects = _objects(_planned(profiles.builtin_bucket("photos")))
    binding = _decoded(objects["Secret/shop-binding"])
    assert binding["S3_ENDPOINT"] == "http://shop-s3.default.svc:7070"
    assert binding["S3_BUCKET"] == "photos"
    assert binding["S3_FORCE_PATH_STYLE"] == "true"
    assert binding["AWS_ACCESS_KEY_ID"] == KEYS.app_access_key
    assert binding["AWS_SECRET_ACCESS_KEY"] == KEYS.app_secret_key
    every_value = "\n".join(
        value
        for key, obj in objects.items()
        if key.startswith("Secret/") and key != "Secret/shop-s3-root"
        for value in _decoded(obj).values()
    )
    assert KEYS.root_secret_key not in every_value
    assert KEYS.root_access_key not in every_value
    # only the server's pod reads the root Secret
    readers = {
        c["name"]
        for obj in objects.values()
        if obj["kind"] in ("StatefulSet", "Deployment")
        for c in obj["spec"]["template"]["spec"]["containers"]
        + obj["spec"]["template"]["spec"].get("initContainers", [])
        if "shop-s3-root" in str(c.get("env", []))
    }
    assert readers == {"versitygw", "agent"}


def test_storage_ready_waits_for_the_server_pod() -> None:
    planned = _planned(profiles.builtin_bucket("photos"))
    found = {"photos": credentials.builtin_bucket(planned, planned.buckets[0], keys=KEYS)}
    statefulset = {"metadata": {"generation": 1}, "spec": {"replicas": 1}, "status": {}}
    waiting = observe.storage_ready(
        planned, {"StatefulSet/shop-s3": statefulset}, problems={}, found=found
    )
    assert waiting is not None
    assert (waiting.status, waiting.reason) == ("False", "ServerNotReady")
    statefulset["status"] = {"observedGeneration": 1, "replicas": 1, "readyReplicas": 1}
    ready = observe.storage_ready(
        planned, {"StatefulSet/shop-s3": statefulset}, problems={}, found=found
    )
    assert ready is not None
    assert (ready.status, ready.reason) == ("True", "Ready")
    assert KEYS.app_secret_key not in ready.message


def test_a_later_builtin_bucket_defaulted_by_the_api_server_shares_the_first_server() -> None:
    # the API server fills `builtin: {}` with the schema's defaults before Headroom sees it
    defaulted = {"storage": {"size": "10Gi"}, "image": v1alpha1.VERSITYGW_IMAGE}
    planned = _planned(
        profiles.builtin_bucket("avatars", builtin={"storage": {"size": "20Gi"}}),
        profiles.builtin_bucket("photos", builtin=defaulted),
    )
    server = versitygw.server_plan(planned.buckets)
    assert server is not None
    assert server.size == "20Gi"
