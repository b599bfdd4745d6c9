"""The builtin storage provider's S3 server, for real: versitygw (the cached
build) on 127.0.0.1 started as the rendered ``<profile>-s3`` StatefulSet runs
it (the init container's command, the container's args and environment, the
rendered Secrets), provisioned by the agent's own code (headroom.agent.bucket)
with the rendered buckets.json, then used the way an app uses it: boto3,
SigV4, path-style, with the app's keys from the rendered app Secret (a
non-root versitygw user), a browser's CORS preflight, presigned PUT and
presigned POST with a size limit.

Provider ``s3`` against the same server: an existing bucket and a Secret with
the app's keys (seed 004's R2 key names) go through object_storage.credentials_from
and desired.build into a binding that works; a wrong key is still rendered,
refused by the server with a reason Headroom's S3 client names
(SignatureDoesNotMatch), never crashing on it (the operator's HEAD check of
the same case, CredentialsRejected, is test_bucket_check.py).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import http.client
import secrets
import subprocess
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
import s3_servers
import yaml
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from tests import profiles

from headroom.agent import bucket
from headroom.api import v1alpha1
from headroom.builders import desired, s3_server
from headroom.planning import credentials, object_storage, planner, versitygw
from headroom.s3 import rest

ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.com"
MAX_UPLOAD_BYTES = 1024 * 1024  # the declared upload limit signed into POST policies
StartGW = Callable[..., s3_servers.VersityGW]


KEYS = versitygw.ServerKeys(  # as the reconcile pass generates them
    root_access_key=secrets.token_hex(10),
    root_secret_key=secrets.token_urlsafe(30),
    app_access_key=secrets.token_hex(10),
    app_secret_key=secrets.token_urlsafe(30),
)
CORS = {"allowedOrigins": [ORIGIN], "allowedMethods": ["GET", "PUT", "POST"], "maxAgeSeconds": 600}


def _profile(*, origins: list[str] = [ORIGIN]) -> dict[str, Any]:  # noqa: B006 - read only
    """Seed 003's two buckets on the builtin server (examples/gym-builtin.yaml's shape)."""
    return profiles.base(
        storage=profiles.buckets(
            profiles.builtin_bucket(
                "meal-photos",
                builtin={"storage": {"size": "20Gi"}},
                maxUploadBytes=MAX_UPLOAD_BYTES,
                cors={**CORS, "allowedOrigins": origins},
            ),
            profiles.builtin_bucket("avatars", maxUploadBytes=512 * 1024),
        )
    )


@dataclass(frozen=True)
class Rendered:
    """What the builder renders for the server, read back as the pod would see it."""

    objects: list[dict[str, Any]]

    def find(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.objects if o["kind"] == kind and o["metadata"]["name"] == name]
        return found

    def container(self, name: str) -> dict[str, Any]:
        pod = self.find("StatefulSet", "shop-s3")["spec"]["template"]["spec"]
        (found,) = [c for c in pod["initContainers"] + pod["containers"] if c["name"] == name]
        return found

    def env(self, container: str) -> dict[str, str]:
        """The container's environment, secretKeyRefs resolved from the rendered Secrets."""
        out = {}
        for var in self.container(container)["env"]:
            if "value" in var:
                out[var["name"]] = var["value"]
                continue
            ref = var["valueFrom"]["secretKeyRef"]
            data = self.find("Secret", ref["name"])["data"]
            out[var["name"]] = base64.b64decode(data[ref["key"]]).decode()
        return out

    def agent_config(self) -> versitygw.BucketServerConfig:
        data = self.find("ConfigMap", "shop-s3-config")["data"][s3_server.CONFIG_FILE]
        return versitygw.BucketServerConfig.model_validate_json(data)


def _render(body: dict[str, Any] | None = None, keys: versitygw.ServerKeys = KEYS) -> Rendered:
    """Every object Headroom renders for the profile, with the credentials the
    engine derives (the builtin buckets' from the generated keys)."""
    body = body or _profile()
    body["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problems
    creds = credentials.Credentials(
        username="app",
        password="app-pw",
        stats_password="stats-pw",
        revision="1",
        buckets={
            b.name: credentials.builtin_bucket(planned, b, keys=keys)
            for b in planned.buckets
            if b.builtin is not None
        },
        s3_server=keys,
    )
    return Rendered(list(desired.build(planned, creds).values()))


def _start_rendered(start_versitygw: StartGW, rendered: Rendered) -> s3_servers.VersityGW:
    """versitygw started as the StatefulSet runs it: the init container's
    command, then the container's args and environment, on 127.0.0.1."""
    gateway_args = rendered.container("versitygw")["args"]
    prepare = rendered.container("prepare")["command"]
    env = rendered.env("versitygw")

    def argv(listen: str, admin: str, directory: Path) -> list[str]:
        addresses = {
            f":{versitygw.S3_PORT}": listen,
            f"127.0.0.1:{versitygw.ADMIN_PORT}": admin,
        }

        def local(args: list[str]) -> list[str]:
            return s3_servers.localize(
                args, mount_path=versitygw.DATA_DIR, directory=directory, addresses=addresses
            )

        subprocess.run(local(prepare), check=True, timeout=30)
        return local(gateway_args)

    root = s3_servers.RootCredentials(env.pop("ROOT_ACCESS_KEY"), env.pop("ROOT_SECRET_KEY"))
    return start_versitygw(argv=argv, root=root, env=env)


def _agent(rendered: Rendered, gateway: s3_servers.VersityGW, ready_file: Path) -> bucket.Agent:
    """The sidecar's agent: the rendered buckets.json (its 127.0.0.1 endpoints
    moved to the test's ports) and the rendered environment."""
    config = rendered.agent_config().model_copy(
        update={
            "s3_endpoint": gateway.endpoint,
            "admin_endpoint": gateway.admin_endpoint,
            "ready_file": str(ready_file),
        }
    )
    return bucket.Agent(config=config, keys=bucket.Keys.from_env(rendered.env("agent")))


def _boto(endpoint: str, access_key: str, secret_key: str) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def _binding(rendered: Rendered) -> dict[str, str]:
    return _decoded(rendered.find("Secret", "shop-binding"))


def _app_client(rendered: Rendered, gateway: s3_servers.VersityGW) -> BaseClient:
    """The app's client, configured from the rendered binding the way an app
    reads it (its endpoint, a cluster Service name, moved to the local server)."""
    env = _binding(rendered)
    assert env["S3_ENDPOINT"] == "http://shop-s3.default.svc:7070"
    assert env["S3_FORCE_PATH_STYLE"] == "true"
    return boto3.client(
        "s3",
        endpoint_url=gateway.endpoint,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["S3_REGION"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture
def provisioned(
    start_versitygw: StartGW, tmp_path: Path
) -> tuple[s3_servers.VersityGW, BaseClient]:
    """versitygw as the pod runs it, provisioned by one agent pass; the app's boto3 client."""
    rendered = _render()
    gateway = _start_rendered(start_versitygw, rendered)
    agent = _agent(rendered, gateway, tmp_path / "run" / "provisioned")
    changes = agent.step()
    assert f"created user {KEYS.app_access_key}" in changes
    assert {"created bucket meal-photos", "created bucket avatars"} <= set(changes)
    assert agent.step() == [], "a second pass changes nothing"
    return gateway, _app_client(rendered, gateway)


def test_root_keys_are_not_in_the_app_secret_and_the_app_keys_are_no_admin(
    provisioned: tuple[s3_servers.VersityGW, BaseClient],
) -> None:
    gateway, _ = provisioned
    rendered = _render()
    app_secret = rendered.find("Secret", "shop-s3-app")
    values = {base64.b64decode(v).decode() for v in app_secret["data"].values()}
    assert values == {KEYS.app_access_key, KEYS.app_secret_key}
    binding = _binding(rendered)
    assert binding["AWS_ACCESS_KEY_ID"] == KEYS.app_access_key
    for root_value in (KEYS.root_access_key, KEYS.root_secret_key):
        assert root_value not in binding.values()
        for key in ("shop-binding-meal-photos", "shop-binding-avatars"):
            assert root_value not in _decoded(rendered.find("Secret", key))
    assert "shop-s3-root" not in yaml.safe_dump(rendered.container("versitygw")["args"])
    # the app's keys cannot reach the admin API's users (even from inside the pod)
    app_admin = rest.Client(
        endpoint=gateway.admin_endpoint,
        access_key=KEYS.app_access_key,
        secret_key=KEYS.app_secret_key,
    )
    with pytest.raises(rest.S3Error) as refused:
        app_admin.create_user(access_key="intruder01", secret_key="x" * 30, role="admin")
    assert refused.value.status == 403


def test_app_keys_put_and_get_600kb_in_their_own_buckets_only(
    provisioned: tuple[s3_servers.VersityGW, BaseClient],
) -> None:
    gateway, app = provisioned
    body = secrets.token_bytes(600 * 1024)
    for name in ("meal-photos", "avatars"):
        app.put_object(Bucket=name, Key="u/1.jpg", Body=body)
        assert app.get_object(Bucket=name, Key="u/1.jpg")["Body"].read() == body
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


def multipart_form(fields: dict[str, str], data: bytes) -> tuple[bytes, str]:
    """A browser's presigned-POST form (``fields``, then the file): body and Content-Type."""
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
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def _post_form(url: str, fields: dict[str, str], data: bytes) -> tuple[int, bytes]:
    body, content_type = multipart_form(fields, data)
    request = urllib.request.Request(  # noqa: S310 - 127.0.0.1
        url, data=body, method="POST", headers={"Content-Type": content_type}
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
    limit = int(_binding(_render())["S3_MEAL_PHOTOS_MAX_UPLOAD_BYTES"])
    assert limit == MAX_UPLOAD_BYTES
    outcomes = {}
    for size in (500 * 1024, 2 * 1024 * 1024):
        post = app.generate_presigned_post(
            "meal-photos",
            f"uploads/{size}.bin",
            Conditions=[["content-length-range", 1, limit]],
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
    rendered = _render()
    gateway = _start_rendered(start_versitygw, rendered)
    _agent(rendered, gateway, tmp_path / "provisioned").step()
    # the profile's CORS changes and the app Secret is made anew: the next
    # pod's agent (the pod template changed) applies both
    new_keys = dataclasses.replace(KEYS, app_secret_key=secrets.token_urlsafe(30))
    changed = _render(_profile(origins=[OTHER_ORIGIN]), new_keys)
    assert (
        changed.find("StatefulSet", "shop-s3")["spec"]["template"]["metadata"]["annotations"]
        != rendered.find("StatefulSet", "shop-s3")["spec"]["template"]["metadata"]["annotations"]
    )
    changes = _agent(changed, gateway, tmp_path / "provisioned").step()
    # a new pod's agent sends every bucket's CORS once; no user or bucket is made again
    assert changes == ["bucket meal-photos: CORS applied (1 rules)", "bucket avatars: no CORS"]
    assert _preflight(gateway, OTHER_ORIGIN).status == 200
    assert _preflight(gateway, ORIGIN).status == 403
    _app_client(changed, gateway).head_bucket(Bucket="meal-photos")
    with pytest.raises(ClientError) as old:
        _app_client(rendered, gateway).head_bucket(Bucket="meal-photos")
    assert old.value.response["Error"]["Code"] in ("403", "SignatureDoesNotMatch")


def test_a_new_profile_on_the_retained_volume_gets_the_old_objects(
    provisioned: tuple[s3_servers.VersityGW, BaseClient], tmp_path: Path
) -> None:
    """The profile is deleted and made again: the retained PVC (here: the same
    server dir) meets new generated keys; the agent hands the buckets over."""
    gateway, old_app = provisioned
    old_app.put_object(Bucket="meal-photos", Key="kept.jpg", Body=b"photo")
    new_keys = versitygw.ServerKeys(
        root_access_key=KEYS.root_access_key,  # the server process is the same one here
        root_secret_key=KEYS.root_secret_key,
        app_access_key=secrets.token_hex(10),
        app_secret_key=secrets.token_urlsafe(30),
    )
    again = _render(keys=new_keys)
    changes = _agent(again, gateway, tmp_path / "again").step()
    assert f"created user {new_keys.app_access_key}" in changes
    assert (
        f"bucket meal-photos: owner {KEYS.app_access_key} -> {new_keys.app_access_key}" in changes
    )
    new_app = _app_client(again, gateway)
    assert new_app.get_object(Bucket="meal-photos", Key="kept.jpg")["Body"].read() == b"photo"
    with pytest.raises(ClientError) as old:
        old_app.get_object(Bucket="meal-photos", Key="kept.jpg")
    assert old.value.response["Error"]["Code"] == "AccessDenied"


def test_a_wrong_key_is_an_s3_error_that_names_no_secret(start_versitygw: StartGW) -> None:
    gateway = start_versitygw()
    wrong = secrets.token_urlsafe(30)
    client = rest.Client(
        endpoint=gateway.endpoint, access_key=gateway.root.access_key, secret_key=wrong
    )
    with pytest.raises(rest.S3Error) as refused:
        _exists(client, "anything")
    assert refused.value.status == 403
    assert refused.value.code == "SignatureDoesNotMatch"
    assert wrong not in str(refused.value)
    assert gateway.root.secret_key not in str(refused.value)
    unknown = rest.Client(endpoint=gateway.endpoint, access_key="nobody1234", secret_key=wrong)
    with pytest.raises(rest.S3Error) as no_user:
        _exists(unknown, "anything")
    assert no_user.value.status == 403
    assert no_user.value.code == "InvalidAccessKeyId"


def test_agent_loop_marks_the_pod_ready_once_the_buckets_exist(
    start_versitygw: StartGW, tmp_path: Path
) -> None:
    rendered = _render()
    gateway = _start_rendered(start_versitygw, rendered)
    ready = tmp_path / "run" / "provisioned"
    stop = threading.Event()
    loop = threading.Thread(
        target=bucket.run, args=(_agent(rendered, gateway, ready),), kwargs={"stop": stop}
    )
    loop.start()
    try:
        s3_servers.wait_until(ready.exists, timeout=30, what="the agent's ready file")
        rules = _app_client(rendered, gateway).get_bucket_cors(Bucket="meal-photos")["CORSRules"]
        assert rules[0]["AllowedOrigins"] == [ORIGIN]
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()


# -- provider s3: an existing bucket on the same real server ------------------------


def _s3_profile(endpoint: str) -> dict[str, Any]:
    """Seed 004's shape (examples/space-files.yaml): an existing bucket, keys in
    the app's own Secret under its own key names, path-style (self-hosted)."""
    return profiles.base(
        storage=profiles.buckets(
            profiles.s3_bucket(
                "files",
                endpoint=endpoint,
                region="us-east-1",
                bucketName="space-kontext-files",
                forcePathStyle=True,
                credentialsSecret={
                    "name": "space-r2",
                    "accessKeyIdKey": "R2_ACCESS_KEY_ID",
                    "secretAccessKeyKey": "R2_SECRET_ACCESS_KEY",
                },
            )
        )
    )


# How the profile names the server (a profile may not name a loopback address:
# the binding's endpoint is moved to the local server, as DNS would point a pod).
PROFILE_HOST = "objects.example.test"


def _s3_binding(endpoint: str, secret_data: dict[str, str]) -> dict[str, str]:
    """The binding the engine renders: the Secret's data through
    storage.credentials_from (what the engine calls), then desired.build; its
    endpoints moved to ``endpoint`` (the local server)."""
    declared = endpoint.replace("127.0.0.1", PROFILE_HOST)
    body = _s3_profile(declared)
    body["metadata"]["uid"] = "11111111-2222-3333-4444-555555555555"
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok, planned.problems
    (bucket,) = planned.buckets
    found = object_storage.credentials_from(bucket, secret_data, secret="space-r2", revision="1")
    creds = credentials.Credentials(
        username="app",
        password="app-pw",
        stats_password="stats-pw",
        revision="1",
        buckets={"files": found},
    )
    rendered = Rendered(list(desired.build(planned, creds).values()))
    return {key: value.replace(declared, endpoint) for key, value in _binding(rendered).items()}


def _from_binding(env: dict[str, str]) -> BaseClient:
    return boto3.client(
        "s3",
        endpoint_url=env["S3_ENDPOINT"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["S3_REGION"],
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if env["S3_FORCE_PATH_STYLE"] == "true" else "auto"},
        ),
    )


@pytest.fixture
def existing_bucket(start_versitygw: StartGW) -> tuple[s3_servers.VersityGW, str, str]:
    """A server with an existing bucket and a user of its own (the R2-style keys)."""
    gateway = start_versitygw()
    access, secret = secrets.token_hex(10), secrets.token_urlsafe(30)
    admin = rest.Client(
        endpoint=gateway.admin_endpoint,
        access_key=gateway.root.access_key,
        secret_key=gateway.root.secret_key,
    )
    admin.create_user(access_key=access, secret_key=secret, role="user")
    admin.create_bucket_for("space-kontext-files", owner=access)
    return gateway, access, secret


def test_an_existing_bucket_and_its_secret_make_a_binding_that_works(
    existing_bucket: tuple[s3_servers.VersityGW, str, str],
) -> None:
    gateway, access, secret = existing_bucket
    env = _s3_binding(
        gateway.endpoint, {"R2_ACCESS_KEY_ID": access, "R2_SECRET_ACCESS_KEY": secret}
    )
    assert env["S3_ENDPOINT"] == gateway.endpoint
    assert env["S3_BUCKET"] == "space-kontext-files"
    app = _from_binding(env)
    body = secrets.token_bytes(600 * 1024)
    app.put_object(Bucket=env["S3_BUCKET"], Key="docs/a.pdf", Body=body)
    assert app.get_object(Bucket=env["S3_BUCKET"], Key="docs/a.pdf")["Body"].read() == body
    checker = rest.Client(
        endpoint=env["S3_ENDPOINT"],
        access_key=env["AWS_ACCESS_KEY_ID"],
        secret_key=env["AWS_SECRET_ACCESS_KEY"],
        region=env["S3_REGION"],
    )
    assert _exists(checker, env["S3_BUCKET"])
    assert not _exists(checker, "no-such-bucket")


def test_a_wrong_key_in_the_secret_is_reported_not_crashed_on(
    existing_bucket: tuple[s3_servers.VersityGW, str, str],
) -> None:
    gateway, access, _ = existing_bucket
    wrong = secrets.token_urlsafe(30)
    # the operator renders the binding all the same (its HEAD check, in
    # test_bucket_check.py, says CredentialsRejected in StorageReady) ...
    env = _s3_binding(gateway.endpoint, {"R2_ACCESS_KEY_ID": access, "R2_SECRET_ACCESS_KEY": wrong})
    assert env["AWS_SECRET_ACCESS_KEY"] == wrong
    # ... and the check Headroom's S3 client makes names the server's reason,
    # without the key, where the app's SDK gets the same refusal
    checker = rest.Client(
        endpoint=env["S3_ENDPOINT"], access_key=access, secret_key=wrong, region=env["S3_REGION"]
    )
    with pytest.raises(rest.S3Error) as refused:
        _exists(checker, env["S3_BUCKET"])
    assert (refused.value.status, refused.value.code) == (403, "SignatureDoesNotMatch")
    assert wrong not in str(refused.value)
    with pytest.raises(ClientError) as app_refused:
        _from_binding(env).get_object(Bucket=env["S3_BUCKET"], Key="docs/a.pdf")
    assert app_refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def _exists(client: rest.Client, bucket: str) -> bool:
    """The operator's HEAD of a bucket (non-blocking, through a session)."""

    async def head() -> bool:
        async with aiohttp.ClientSession() as session:
            return await client.bucket_exists(session, bucket)

    return asyncio.run(head())
