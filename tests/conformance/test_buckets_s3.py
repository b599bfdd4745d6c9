"""The builtin storage provider's S3 server, for real: versitygw (the cached
build) on 127.0.0.1 started with the arguments Headroom gives it in the pod
(planning.bucket_server.server_args, data dirs made as the pod's init step
makes them), provisioned by the bucket agent's own code
(headroom.agent.bucket), then used the way an app uses it: boto3, SigV4,
path-style, with the app's keys (a non-root versitygw user), a browser's CORS
preflight, presigned PUT and presigned POST with a size limit.
"""

from __future__ import annotations

import http.client
import secrets
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
import s3_servers
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from headroom.agent import bucket as agent_mod
from headroom.planning import bucket_server
from headroom.s3 import client as s3_client

ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.com"
MAX_UPLOAD_BYTES = 1024 * 1024  # the declared upload limit signed into POST policies
StartGW = Callable[..., s3_servers.VersityGW]


def _pod_like(listen: str, admin: str, directory: Path) -> list[str]:
    """The pod's init step (mkdir of the data dirs) and versitygw's args, on 127.0.0.1."""
    addresses = {
        f":{bucket_server.S3_PORT}": listen,
        f"127.0.0.1:{bucket_server.ADMIN_PORT}": admin,
    }

    def local(args: list[str]) -> list[str]:
        return s3_servers.localize(
            args, mount_path=bucket_server.DATA_DIR, directory=directory, addresses=addresses
        )

    subprocess.run(local(bucket_server.init_command()), check=True, timeout=30)
    return local(bucket_server.server_args())


def _app_keys() -> tuple[str, str]:
    return secrets.token_hex(10), secrets.token_urlsafe(30)


def _config(
    gateway: s3_servers.VersityGW,
    *,
    access_key: str,
    buckets: tuple[bucket_server.ServedBucket, ...],
    ready_file: Path,
) -> bucket_server.BucketServerConfig:
    return bucket_server.BucketServerConfig(
        s3_endpoint=gateway.endpoint,
        admin_endpoint=gateway.admin_endpoint,
        app_access_key=access_key,
        buckets=buckets,
        ready_file=str(ready_file),
    )


def _boto(endpoint: str, access_key: str, secret_key: str) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _photos(*, origins: tuple[str, ...] = (ORIGIN,)) -> bucket_server.ServedBucket:
    return bucket_server.ServedBucket(
        name="meal-photos",
        cors=(
            bucket_server.CorsRule(
                allowed_origins=origins,
                allowed_methods=("GET", "PUT", "POST"),
                allowed_headers=("*",),
                max_age_seconds=600,
            ),
        ),
    )


@pytest.fixture
def provisioned(
    start_versitygw: StartGW, tmp_path: Path
) -> tuple[s3_servers.VersityGW, BaseClient]:
    """versitygw as the pod runs it, provisioned by one agent pass; the app's boto3 client."""
    gateway = start_versitygw(argv=_pod_like)
    access, secret = _app_keys()
    config = _config(
        gateway,
        access_key=access,
        buckets=(_photos(), bucket_server.ServedBucket(name="avatars")),
        ready_file=tmp_path / "run" / "provisioned",
    )
    keys = agent_mod.Keys(gateway.root.access_key, gateway.root.secret_key, secret)
    agent = agent_mod.Agent(config=config, keys=keys)
    changes = agent.step()
    assert "created user " + access in changes
    assert {"created bucket meal-photos", "created bucket avatars"} <= set(changes)
    assert agent.step() == [], "a second pass changes nothing"
    return gateway, _boto(gateway.endpoint, access, secret)


def test_app_keys_put_and_get_600kb_in_their_own_buckets_only(
    provisioned: tuple[s3_servers.VersityGW, BaseClient],
) -> None:
    gateway, app = provisioned
    body = secrets.token_bytes(600 * 1024)
    for bucket in ("meal-photos", "avatars"):
        app.put_object(Bucket=bucket, Key="u/1.jpg", Body=body)
        assert app.get_object(Bucket=bucket, Key="u/1.jpg")["Body"].read() == body
    # role "user": no bucket of its own making, and nobody else's bucket
    with pytest.raises(ClientError) as refused:
        app.create_bucket(Bucket="more-space")
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    root = _boto(gateway.endpoint, gateway.root.access_key, gateway.root.secret_key)
    root.create_bucket(Bucket="root-only")
    with pytest.raises(ClientError) as denied:
        app.list_objects_v2(Bucket="root-only")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"


def _preflight(gateway: s3_servers.VersityGW, origin: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(s3_servers.HOST, gateway.port, timeout=10)
    conn.request(
        "OPTIONS",
        "/meal-photos/u/2.jpg",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_rendered_cors_admits_the_allowed_origin_and_refuses_another(
    provisioned: tuple[s3_servers.VersityGW, BaseClient],
) -> None:
    gateway, app = provisioned
    allowed = _preflight(gateway, ORIGIN)
    assert allowed.status == 200
    assert allowed.getheader("Access-Control-Allow-Origin") == ORIGIN
    assert "PUT" in (allowed.getheader("Access-Control-Allow-Methods") or "")
    assert allowed.getheader("Access-Control-Expose-Headers") == "ETag"
    assert allowed.getheader("Access-Control-Max-Age") == "600"
    refused = _preflight(gateway, OTHER_ORIGIN)
    assert refused.status == 403
    assert refused.getheader("Access-Control-Allow-Origin") is None
    # the bucket without cors has none
    with pytest.raises(ClientError) as none:
        app.get_bucket_cors(Bucket="avatars")
    assert none.value.response["Error"]["Code"] == "NoSuchCORSConfiguration"


def test_presigned_put_works(provisioned: tuple[s3_servers.VersityGW, BaseClient]) -> None:
    _, app = provisioned
    url = app.generate_presigned_url(
        "put_object", Params={"Bucket": "meal-photos", "Key": "direct.jpg"}, ExpiresIn=300
    )
    body = secrets.token_bytes(200 * 1024)
    request = urllib.request.Request(url, data=body, method="PUT")  # noqa: S310 - 127.0.0.1
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.status == 200
    assert app.get_object(Bucket="meal-photos", Key="direct.jpg")["Body"].read() == body
    tampered = urllib.request.Request(  # noqa: S310
        url.replace("direct.jpg", "other.jpg"), data=body, method="PUT"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=10)  # noqa: S310
    assert refused.value.code == 403


def _post_form(url: str, fields: dict[str, str], data: bytes) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="f.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        url,
        data=b"".join(parts),
        method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_presigned_post_with_the_size_limit_accepts_500kb_and_refuses_2mb(
    provisioned: tuple[s3_servers.VersityGW, BaseClient],
) -> None:
    _, app = provisioned
    outcomes = {}
    for size in (500 * 1024, 2 * 1024 * 1024):
        post = app.generate_presigned_post(
            "meal-photos",
            f"uploads/{size}.bin",
            Conditions=[["content-length-range", 1, MAX_UPLOAD_BYTES]],
            ExpiresIn=300,
        )
        outcomes[size] = _post_form(post["url"], post["fields"], secrets.token_bytes(size))
    status, _ = outcomes[500 * 1024]
    assert status in (200, 201, 204)
    head = app.head_object(Bucket="meal-photos", Key=f"uploads/{500 * 1024}.bin")
    assert head["ContentLength"] == 500 * 1024
    status, body = outcomes[2 * 1024 * 1024]
    assert status == 400
    assert b"EntityTooLarge" in body
    with pytest.raises(ClientError):
        app.head_object(Bucket="meal-photos", Key=f"uploads/{2 * 1024 * 1024}.bin")


def test_agent_applies_changed_cors_and_a_new_app_secret(
    start_versitygw: StartGW, tmp_path: Path
) -> None:
    gateway = start_versitygw(argv=_pod_like)
    access, secret = _app_keys()
    ready = tmp_path / "provisioned"
    config = _config(gateway, access_key=access, buckets=(_photos(),), ready_file=ready)
    root_keys = (gateway.root.access_key, gateway.root.secret_key)
    agent_mod.Agent(config=config, keys=agent_mod.Keys(*root_keys, secret)).step()
    # the profile's CORS changes: the next pod's agent applies the new rules
    changed = config.model_copy(update={"buckets": (_photos(origins=(OTHER_ORIGIN,)),)})
    new_secret = secrets.token_urlsafe(30)
    changes = agent_mod.Agent(config=changed, keys=agent_mod.Keys(*root_keys, new_secret)).step()
    assert changes == ["bucket meal-photos: CORS applied (1 rules)"]
    assert _preflight(gateway, OTHER_ORIGIN).status == 200
    assert _preflight(gateway, ORIGIN).status == 403
    # the Secret was made anew: the new key works, the old one no longer
    _boto(gateway.endpoint, access, new_secret).head_bucket(Bucket="meal-photos")
    with pytest.raises(ClientError) as old:
        _boto(gateway.endpoint, access, secret).head_bucket(Bucket="meal-photos")
    assert old.value.response["Error"]["Code"] in ("403", "SignatureDoesNotMatch")


def test_a_wrong_key_is_an_s3_error_that_names_no_secret(start_versitygw: StartGW) -> None:
    gateway = start_versitygw()
    wrong = secrets.token_urlsafe(30)
    client = s3_client.Client(
        endpoint=gateway.endpoint, access_key=gateway.root.access_key, secret_key=wrong
    )
    with pytest.raises(s3_client.S3Error) as refused:
        client.bucket_exists("anything")
    assert refused.value.status == 403
    assert refused.value.code == "SignatureDoesNotMatch"
    assert wrong not in str(refused.value)
    assert gateway.root.secret_key not in str(refused.value)
    unknown = s3_client.Client(endpoint=gateway.endpoint, access_key="nobody1234", secret_key=wrong)
    with pytest.raises(s3_client.S3Error) as no_user:
        unknown.bucket_exists("anything")
    assert no_user.value.status == 403
    assert no_user.value.code == "InvalidAccessKeyId"


def test_agent_loop_marks_the_pod_ready_once_the_buckets_exist(
    start_versitygw: StartGW, tmp_path: Path
) -> None:
    gateway = start_versitygw(argv=_pod_like)
    access, secret = _app_keys()
    ready = tmp_path / "run" / "provisioned"
    config = _config(gateway, access_key=access, buckets=(_photos(),), ready_file=ready)
    keys = agent_mod.Keys(gateway.root.access_key, gateway.root.secret_key, secret)
    stop = threading.Event()
    loop = threading.Thread(
        target=agent_mod.run,
        args=(agent_mod.Agent(config=config, keys=keys),),
        kwargs={"stop": stop},
    )
    loop.start()
    try:
        s3_servers.wait_until(ready.exists, timeout=30, what="the agent's ready file")
        app = _boto(gateway.endpoint, access, secret)
        assert app.get_bucket_cors(Bucket="meal-photos")["CORSRules"][0]["AllowedOrigins"] == [
            ORIGIN
        ]
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
