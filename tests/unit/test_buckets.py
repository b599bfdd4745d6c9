"""spec.storage.buckets: the schema's refusals, the plan, the COSI objects of
each served version, the credentials Secrets of COSI v1alpha1 / v1alpha2 and of
an s3 bucket translated into the binding, retention in the reconcile pass, and the
StorageReady condition."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.builders import buckets, desired
from headroom.planning import credentials, names, object_storage, planner, versitygw
from headroom.reconcile import bucket_check, outcome, ownership, reconciler, telemetry, watches
from tests import profiles
from tests.unit import fake_cluster, passes

KEY = "default/shop"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _plan(*entries: dict[str, Any], cosi: str = "v1alpha1", uid: str = "uid-1") -> planner.Plan:
    body = profiles.base(storage=profiles.buckets(*entries))
    body["metadata"]["uid"] = uid
    return planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(cosi=cosi))


def _creds(**found: object_storage.BucketCredentials) -> credentials.Credentials:
    return credentials.Credentials(
        username="app", password="pw", stats_password="st", revision="1", buckets=found
    )


def _found(bucket: str = "b1", *, endpoint: str = "https://s3.example", key: str = "AK") -> Any:
    return object_storage.BucketCredentials(
        endpoint=endpoint,
        region="us-east-1",
        bucket=bucket,
        access_key_id=key,
        secret_access_key="SK-" + key,
        force_path_style=True,
    )


# -- schema -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["ab", "a" * 64, "Uploads", "up_loads", "-uploads", "uploads-", "a..b", "10.0.0.1", "xn--ab"],
)
def test_names_s3_refuses_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(v1alpha1.ProfileError, match=r"spec\.storage\.buckets\[0\]\.name"):
        v1alpha1.parse_profile(profiles.base(storage=profiles.buckets(profiles.cosi_bucket(name))))


@pytest.mark.parametrize("name", ["abc", "a" * 63, "meal-photos", "my.bucket.1", "10.0.0.1a"])
def test_names_s3_takes_are_taken(name: str) -> None:
    assert v1alpha1.bucket_name_problem(name) is None
    v1alpha1.parse_profile(profiles.base(storage=profiles.buckets(profiles.cosi_bucket(name))))


def test_any_origin_is_never_a_default_and_needs_writing_out() -> None:
    cors = v1alpha1.BucketCors.model_validate({"allowedOrigins": ["https://a.example"]})
    assert cors.allowed_origins == ["https://a.example"]
    assert cors.expose_headers == ["ETag"]
    assert not cors.allow_credentials
    with pytest.raises(ValueError, match="allowedOrigins"):
        v1alpha1.BucketCors.model_validate({})
    # '*' when written out, without credentials, is a choice the profile may make
    v1alpha1.BucketCors.model_validate({"allowedOrigins": ["*"]})


def test_the_crd_rules_follow_the_provider_list() -> None:
    rules = v1alpha1.Bucket.model_json_schema()["x-kubernetes-validations"]
    assert rules[0]["rule"] == (
        "[has(self.cosi), has(self.s3), has(self.builtin)].filter(x, x).size() == 1"
    )


# -- plan and builders ------------------------------------------------------------------


def test_cosi_v1alpha1_claim_and_access_reference_the_classes() -> None:
    planned = _plan(profiles.cosi_bucket("avatars", deletionPolicy="Delete"))
    objects = desired.build(planned, _creds())
    claim = objects["BucketClaim/shop-avatars"]
    access = objects["BucketAccess/shop-avatars"]
    assert claim["apiVersion"] == access["apiVersion"] == "objectstorage.k8s.io/v1alpha1"
    assert claim["spec"] == {"bucketClassName": "standard", "protocols": ["S3"]}
    assert access["spec"] == {
        "bucketClaimName": "shop-avatars",
        "bucketAccessClassName": "readwrite",
        "credentialsSecretName": "shop-bucket-avatars",
        "protocol": "S3",
    }
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_cosi_v1alpha2_access_lists_the_claim_and_its_secret() -> None:
    planned = _plan(profiles.cosi_bucket("avatars"), cosi="v1alpha2")
    access = desired.build(planned, _creds())["BucketAccess/shop-avatars"]
    assert access["apiVersion"] == "objectstorage.k8s.io/v1alpha2"
    assert access["spec"] == {
        "bucketAccessClassName": "readwrite",
        "bucketClaims": [
            {
                "bucketClaimName": "shop-avatars",
                "accessMode": "ReadWrite",
                "accessSecretName": "shop-bucket-avatars",
            }
        ],
        "protocol": "S3",
    }


def test_cosi_absent_emits_no_claim() -> None:
    objects = desired.build(_plan(profiles.cosi_bucket(), cosi=""), _creds())
    assert not [k for k in objects if k.startswith("Bucket")]


def test_a_retained_claim_has_no_owner_but_our_labels_and_the_annotation() -> None:
    claim = desired.build(_plan(profiles.cosi_bucket()), _creds())["BucketClaim/shop-uploads"]
    meta = claim["metadata"]
    assert "ownerReferences" not in meta
    assert meta["annotations"] == {object_storage.RETAIN_ANNOTATION: "true"}
    assert meta["labels"]["app.kubernetes.io/managed-by"] == "headroom"
    assert meta["labels"][names.PROFILE_LABEL] == "shop"
    # the access (the app's key) always goes with the profile
    access = desired.build(_plan(profiles.cosi_bucket()), _creds())["BucketAccess/shop-uploads"]
    assert access["metadata"]["ownerReferences"]


def test_one_bucket_binding_has_the_sdk_names() -> None:
    planned = _plan(profiles.cosi_bucket("uploads", maxUploadBytes=2048))
    objects = desired.build(planned, _creds(uploads=_found("real-uploads")))
    data = profiles.secret_values(objects["Secret/shop-binding"])
    assert {k: v for k, v in data.items() if k.startswith(("S3_", "AWS_"))} == {
        "S3_ENDPOINT": "https://s3.example",
        "S3_BUCKET": "real-uploads",
        "S3_REGION": "us-east-1",
        "S3_FORCE_PATH_STYLE": "true",
        "S3_MAX_UPLOAD_BYTES": "2048",
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "SK-AK",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": "https://s3.example",
    }
    typed = objects["Secret/shop-binding-uploads"]
    assert typed["type"] == "servicebinding.io/s3"
    assert profiles.secret_values(typed)["type"] == "s3"
    assert profiles.secret_values(typed)["bucket"] == "real-uploads"


def test_several_buckets_get_their_own_names_and_keys_only_where_they_differ() -> None:
    planned = _plan(
        profiles.cosi_bucket("avatars"),
        profiles.cosi_bucket("meal-photos"),
        profiles.s3_bucket("files"),
    )
    found = {
        "avatars": _found("a-1"),
        "meal-photos": _found("m-1"),  # same endpoint and key as the default
        "files": _found("space-kontext-files", endpoint="https://r2.example", key="R2"),
    }
    data = profiles.secret_values(desired.build(planned, _creds(**found))["Secret/shop-binding"])
    assert data["S3_BUCKET"] == data["S3_AVATARS_BUCKET"] == "a-1"
    assert data["S3_MEAL_PHOTOS_BUCKET"] == "m-1"
    assert "S3_MEAL_PHOTOS_ENDPOINT" not in data and "S3_AVATARS_ENDPOINT" not in data
    assert data["S3_FILES_BUCKET"] == "space-kontext-files"
    assert data["S3_FILES_ENDPOINT"] == "https://r2.example"
    assert data["S3_FILES_ACCESS_KEY_ID"] == "R2"
    assert data["S3_FILES_SECRET_ACCESS_KEY"] == "SK-R2"


def test_the_default_names_never_point_at_another_bucket() -> None:
    """The first bucket's credentials are not there yet: no S3_BUCKET at all."""
    planned = _plan(profiles.cosi_bucket("avatars"), profiles.s3_bucket("files"))
    data = profiles.secret_values(
        desired.build(planned, _creds(files=_found("f")))["Secret/shop-binding"]
    )
    assert "S3_BUCKET" not in data and "AWS_ACCESS_KEY_ID" not in data
    assert data["S3_FILES_BUCKET"] == "f"
    assert data["S3_FILES_ACCESS_KEY_ID"] == "AK"


def test_a_contained_bucket_is_left_out_of_the_binding() -> None:
    planned = _plan(profiles.cosi_bucket("avatars"))
    creds = _creds(avatars=_found())
    parts = desired.build_parts(planned, creds, without=frozenset({"bucket/avatars"}))
    data = profiles.secret_values(parts.objects["Secret/shop-binding"])
    assert not [k for k in data if k.startswith("S3_")]
    assert "BucketClaim/shop-avatars" not in parts.objects


# -- credentials Secrets -----------------------------------------------------------------


def _bucket(cosi: str = "v1alpha1") -> object_storage.BucketPlan:
    return _plan(profiles.cosi_bucket("avatars"), cosi=cosi).buckets[0]


def test_cosi_v1alpha1_bucket_info_is_translated() -> None:
    info = {
        "metadata": {"name": "bc-1"},
        "spec": {
            "bucketName": "bucketclass-abc123",
            "authenticationType": "KEY",
            "secretS3": {
                "endpoint": "http://minio.objects:9000",
                "region": "eu-1",
                "accessKeyID": "AKV1",
                "accessSecretKey": "SKV1",
            },
            "secretAzure": None,
            "protocols": ["S3"],
        },
    }
    found = object_storage.credentials_from(
        _bucket(), {"BucketInfo": json.dumps(info)}, secret="shop-bucket-avatars"
    )
    assert found == object_storage.BucketCredentials(
        endpoint="http://minio.objects:9000",
        region="eu-1",
        bucket="bucketclass-abc123",
        access_key_id="AKV1",
        secret_access_key="SKV1",
        force_path_style=True,
    )


def test_cosi_v1alpha2_keys_are_translated() -> None:
    data = {
        "COSI_PROTOCOL": "S3",
        "COSI_S3_BUCKET_ID": "bkt-42",
        "COSI_S3_ENDPOINT": "s3.objects.svc:8080",
        "COSI_S3_REGION": "r1",
        "COSI_S3_ADDRESSING_STYLE": "virtual",
        "COSI_S3_ACCESS_KEY_ID": "AKV2",
        "COSI_S3_ACCESS_SECRET_KEY": "SKV2",
    }
    found = object_storage.credentials_from(_bucket("v1alpha2"), data, secret="s")
    assert found.endpoint == "https://s3.objects.svc:8080"
    assert (found.bucket, found.region, found.force_path_style) == ("bkt-42", "r1", False)
    assert (found.access_key_id, found.secret_access_key) == ("AKV2", "SKV2")


@pytest.mark.parametrize(
    ("data", "reason", "needle"),
    [
        ({}, "CredentialsKeyMissing", "no key 'BucketInfo'"),
        ({"BucketInfo": "not json"}, "CredentialsInvalid", "not a BucketInfo"),
        (
            {"BucketInfo": json.dumps({"spec": {"bucketName": "b", "secretS3": {}}})},
            "CredentialsKeyMissing",
            "spec.secretS3.endpoint",
        ),
    ],
)
def test_a_bad_cosi_secret_is_named_without_its_values(
    data: dict[str, str], reason: str, needle: str
) -> None:
    with pytest.raises(object_storage.CredentialsError) as err:
        object_storage.credentials_from(_bucket(), data, secret="shop-bucket-avatars")
    assert err.value.reason == reason
    assert needle in str(err.value) and "shop-bucket-avatars" in str(err.value)


def test_an_s3_secret_missing_a_key_names_the_field() -> None:
    bucket = _plan(profiles.s3_bucket("files")).buckets[0]
    with pytest.raises(object_storage.CredentialsError) as err:
        object_storage.credentials_from(bucket, {"AWS_ACCESS_KEY_ID": "x"}, secret="r2-credentials")
    assert err.value.reason == "CredentialsKeyMissing"
    assert "spec.storage.buckets[0].s3.credentialsSecret.secretAccessKeyKey" in str(err.value)
    assert "x" not in str(err.value).split("'")[1::2]  # the value is never in it


def test_v1alpha1_is_preferred_when_both_are_served() -> None:
    assert object_storage.preferred_cosi_version({"v1alpha1": True, "v1alpha2": True}) == "v1alpha1"
    assert object_storage.preferred_cosi_version({"v1alpha2": True}) == "v1alpha2"
    assert object_storage.preferred_cosi_version({}) == ""

    def crd(version: str) -> dict[str, Any]:
        return {
            "metadata": {},
            "spec": {"versions": [{"name": version, "served": True}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]},
        }

    both = {"v1alpha1": True, "v1alpha2": True}

    def served(name: str) -> dict[str, Any]:
        found = crd("v1alpha1")
        if both["v1alpha2"]:
            found["spec"]["versions"].append({"name": "v1alpha2", "served": True})
        return found

    assert watches.installed(watches.COSI_V1ALPHA1, served)
    assert not watches.installed(watches.COSI_V1ALPHA2, served)  # not watched twice
    assert watches.installed(watches.COSI_V1ALPHA2, lambda _: crd("v1alpha2"))
    assert watches.crd_names().count("bucketclaims.objectstorage.k8s.io") == 1


# -- the reconcile pass ----------------------------------------------------------------------------


def _cluster(*entries: dict[str, Any], cosi: str = "v1alpha1") -> fake_cluster.FakeCluster:
    cluster = fake_cluster.FakeCluster(cosi=cosi)
    body = profiles.base(storage=profiles.buckets(*entries))
    body["metadata"].update(uid="profile-uid", generation=1)
    cluster.put(body)
    cluster.put(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}},
        }
    )
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "db-credentials", "namespace": "default"},
            "data": {"username": _b64("shop_app"), "password": _b64("s3cret")},
        }
    )
    return cluster


def _run(eng: reconciler.Reconciler, **kwargs: Any) -> outcome.Outcome:
    outcome = passes.run(eng, KEY, **kwargs)
    assert outcome is not None
    return outcome


def _storage(cluster: fake_cluster.FakeCluster) -> dict[str, Any]:
    profile = cluster.profile("default", "shop")
    assert profile is not None
    return next(c for c in profile["status"]["conditions"] if c["type"] == "StorageReady")


def _driver_writes(cluster: fake_cluster.FakeCluster, name: str, data: dict[str, str]) -> None:
    cluster.put(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": "default"},
            "data": {k: _b64(v) for k, v in data.items()},
        }
    )


def _set_status(cluster: fake_cluster.FakeCluster, kind: str, name: str, **status: Any) -> None:
    found = cluster.find(kind, name)
    assert found is not None
    cluster.put({**found, "status": status})


def test_cosi_bucket_goes_from_claim_pending_to_ready_then_a_pass_writes_nothing() -> None:
    cluster = _cluster(profiles.cosi_bucket("avatars"))
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    _run(eng)
    assert _storage(cluster)["reason"] == "ClaimPending"
    assert cluster.find("BucketClaim", "shop-avatars") is not None
    _set_status(cluster, "BucketClaim", "shop-avatars", bucketReady=True, bucketName="b-1")
    _run(eng)
    assert _storage(cluster)["reason"] == "AccessPending"
    _set_status(cluster, "BucketAccess", "shop-avatars", accessGranted=True)
    info = {
        "spec": {
            "bucketName": "b-1",
            "secretS3": {
                "endpoint": "https://objects.example",
                "region": "us-east-1",
                "accessKeyID": "AKCOSI",
                "accessSecretKey": "SKCOSI-very-secret",
            },
        }
    }
    _driver_writes(cluster, "shop-bucket-avatars", {"BucketInfo": json.dumps(info)})
    _run(eng)
    ready = _storage(cluster)
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    binding = cluster.find("Secret", "shop-binding")
    assert binding is not None
    data = profiles.secret_values(binding)
    assert data["S3_BUCKET"] == "b-1" and data["AWS_SECRET_ACCESS_KEY"] == "SKCOSI-very-secret"
    # converged: a pass writes nothing (after the one that records so in
    # status.converged), and no secret is in status or events
    _run(eng, force=True)
    cluster.log.clear()
    outcome = _run(eng, force=True)
    assert cluster.writes() == [] and outcome.writes == 0
    text = json.dumps(cluster.profile("default", "shop")) + json.dumps(cluster.events)
    assert "SKCOSI" not in text and "AKCOSI" not in text


def test_cosi_absent_is_said_in_storage_ready() -> None:
    cluster = _cluster(profiles.cosi_bucket("avatars"), cosi="")
    _run(reconciler.Reconciler(cluster, telemetry.Metrics()))
    found = _storage(cluster)
    assert (found["status"], found["reason"]) == ("False", "COSINotInstalled")
    profile = cluster.profile("default", "shop")
    assert profile is not None
    ready = next(c for c in profile["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def _r2_secret(cluster: fake_cluster.FakeCluster) -> None:
    _driver_writes(
        cluster, "r2-credentials", {"AWS_ACCESS_KEY_ID": "R2KEY", "AWS_SECRET_ACCESS_KEY": "R2SK"}
    )


def test_s3_secret_missing_then_key_missing_then_ready() -> None:
    cluster = _cluster(profiles.s3_bucket("files"))
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    checked: list[bucket_check.Target] = []

    async def checker(target: bucket_check.Target) -> bucket_check.Verdict:
        checked.append(target)
        return bucket_check.Verdict()

    eng.probes.bucket_check = bucket_check.BucketProbe(checker=checker)
    _run(eng)
    found = _storage(cluster)
    assert found["reason"] == "CredentialsSecretMissing"
    assert "spec.storage.buckets[0].s3.credentialsSecret.name" in found["message"]
    _driver_writes(cluster, "r2-credentials", {"AWS_ACCESS_KEY_ID": "R2KEY"})
    _run(eng)
    assert _storage(cluster)["reason"] == "CredentialsKeyMissing"
    _r2_secret(cluster)
    _run(eng)
    assert _storage(cluster)["reason"] == "Ready"
    assert [(t.bucket, t.endpoint) for t in checked] == [
        ("space-kontext-files", "https://acct.r2.cloudflarestorage.com")
    ]
    _run(eng, force=True)
    assert len(checked) == 1  # the last answer, until the TTL says otherwise
    binding = cluster.find("Secret", "shop-binding")
    assert binding is not None
    assert profiles.secret_values(binding)["S3_REGION"] == "auto"


def test_the_operators_head_check_reports_a_missing_bucket_and_its_return() -> None:
    cluster = _cluster(profiles.s3_bucket("files"))
    _r2_secret(cluster)
    answers = [bucket_check.Verdict("BucketNotFound", "bucket space-kontext-files does not exist")]
    changed: list[set[str]] = []
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())

    async def checker(_: bucket_check.Target) -> bucket_check.Verdict:
        return answers[-1]

    eng.probes.bucket_check = bucket_check.BucketProbe(
        ttl_seconds=0.0, checker=checker, on_change=changed.append
    )
    _run(eng)
    found = _storage(cluster)
    assert (found["status"], found["reason"]) == ("False", "BucketNotFound")
    binding = cluster.find("Secret", "shop-binding")
    assert binding is not None and "S3_BUCKET" in profiles.secret_values(binding)
    assert changed == [{KEY}]  # the first answer queued the profile
    answers.append(bucket_check.Verdict(note="not checked: no answer"))
    asyncio.run(passes.refreshed(eng))
    assert changed == [{KEY}, {KEY}]
    _run(eng)  # the new version is in the fingerprint: the pass runs
    ready = _storage(cluster)
    assert (ready["status"], ready["reason"]) == ("True", "Ready")
    assert "not checked: no answer" in ready["message"]


def test_a_retained_claim_is_never_pruned_and_a_new_profile_adopts_it() -> None:
    cluster = _cluster(profiles.cosi_bucket("avatars"), profiles.cosi_bucket("scratch"))
    profile = cluster.find("ScalingProfile", "shop")
    assert profile is not None
    profile["spec"]["storage"]["buckets"][1]["deletionPolicy"] = "Delete"
    cluster.put(profile)
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    _run(eng)
    retained = cluster.find("BucketClaim", "shop-avatars")
    assert retained is not None and "ownerReferences" not in retained["metadata"]
    scratch = cluster.find("BucketClaim", "shop-scratch")
    assert scratch is not None and scratch["metadata"]["ownerReferences"]

    # both buckets leave the spec: the Delete one is pruned, the Retain one stays
    profile = cluster.find("ScalingProfile", "shop")
    assert profile is not None
    del profile["spec"]["storage"]
    cluster.put(profile)
    _run(eng)
    assert cluster.find("BucketClaim", "shop-scratch") is None
    assert cluster.find("BucketClaim", "shop-avatars") is not None
    assert ("delete", "BucketClaim/shop-avatars") not in cluster.log

    # the profile is deleted (garbage collection takes what it owns) and made
    # anew (a new uid): the claim is adopted, not refused as somebody else's
    for key, obj in list(cluster.objects.items()):
        if any(r["uid"] == "profile-uid" for r in obj["metadata"].get("ownerReferences") or []):
            del cluster.objects[key]
    profile["spec"]["storage"] = profiles.buckets(profiles.cosi_bucket("avatars"))
    profile["metadata"]["uid"] = "profile-uid-2"
    cluster.put(profile)
    eng.forget(KEY)
    _run(eng)
    renewed = cluster.profile("default", "shop")
    assert renewed is not None
    conditions = {c["type"]: c for c in renewed["status"]["conditions"]}
    assert "ChildrenOwned" not in conditions, conditions.get("ChildrenOwned")
    assert conditions["ChildrenApplied"]["status"] == "True"
    assert cluster.find("BucketAccess", "shop-avatars") is not None
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None and "ownerReferences" not in claim["metadata"]


def test_switching_retain_to_delete_gives_the_claim_an_owner_and_back() -> None:
    cluster = _cluster(profiles.cosi_bucket("avatars"))
    eng = reconciler.Reconciler(cluster, telemetry.Metrics())
    _run(eng)
    profile = cluster.find("ScalingProfile", "shop")
    assert profile is not None
    profile["spec"]["storage"]["buckets"][0]["deletionPolicy"] = "Delete"
    cluster.put(profile)
    _run(eng)
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None
    assert claim["metadata"]["ownerReferences"][0]["uid"] == "profile-uid"
    assert object_storage.RETAIN_ANNOTATION not in (claim["metadata"].get("annotations") or {})
    profile["spec"]["storage"]["buckets"][0]["deletionPolicy"] = "Retain"
    cluster.put(profile)
    _run(eng)
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None and "ownerReferences" not in claim["metadata"]


def test_bucket_claim_names_stay_valid() -> None:
    planned = _plan(profiles.cosi_bucket("a" * 63))
    assert len(planned.buckets[0].claim_name) <= 253
    assert buckets.component(planned.buckets[0]) == "bucket/" + "a" * 63


# -- browsers and the app's own key names --------------------------------------------


def test_a_public_url_is_in_the_binding_for_every_provider() -> None:
    planned = _plan(
        {**profiles.s3_bucket("files"), "publicUrl": "https://files.example.com"},
        profiles.cosi_bucket("uploads", publicUrl="https://cdn.example.com/uploads"),
    )
    found = {"files": _found("space-files"), "uploads": _found("real-uploads")}
    data = profiles.secret_values(desired.build(planned, _creds(**found))["Secret/shop-binding"])
    assert data["S3_PUBLIC_URL"] == data["S3_FILES_PUBLIC_URL"] == "https://files.example.com"
    assert data["S3_UPLOADS_PUBLIC_URL"] == "https://cdn.example.com/uploads"
    assert "S3_PUBLIC_ENDPOINT" not in data  # only the builtin server has one


def test_a_public_builtin_server_gets_an_ingress_the_policy_admits_and_the_public_endpoint() -> (
    None
):
    public = {"host": "files.gym.example.com", "ingressClassName": "nginx"}
    planned = _plan(
        profiles.builtin_bucket("avatars", builtin={"public": public}),
        profiles.builtin_bucket("meal-photos"),
    )
    keys = versitygw.ServerKeys(
        root_access_key="rootkey0",
        root_secret_key="r" * 30,
        app_access_key="appkey00",
        app_secret_key="a" * 30,
    )
    creds = dataclasses.replace(
        _creds(
            **{b.name: credentials.builtin_bucket(planned, b, keys=keys) for b in planned.buckets}
        ),
        s3_server=keys,
    )
    objects = desired.build(planned, creds, app_pod_selector={"matchLabels": {"app": "web"}})
    ingress = objects["Ingress/shop-s3"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    (rule,) = ingress["rules"]
    assert rule["host"] == "files.gym.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"] == {
        "name": "shop-s3",
        "port": {"number": 7070},
    }
    peers = objects["NetworkPolicy/shop-s3"]["spec"]["ingress"][0]["from"]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}
    } in peers
    assert {"podSelector": {"matchLabels": {"app": "web"}}} in peers
    data = profiles.secret_values(objects["Secret/shop-binding"])
    assert data["S3_PUBLIC_ENDPOINT"] == "https://files.gym.example.com"
    # path style: a bucket is a path on the host; every bucket of the server has one
    assert data["S3_PUBLIC_URL"] == "https://files.gym.example.com/avatars"
    assert data["S3_MEAL_PHOTOS_PUBLIC_URL"] == "https://files.gym.example.com/meal-photos"
    # the in-cluster endpoint stays what the app stores through
    assert data["S3_ENDPOINT"] == "http://shop-s3.default.svc:7070"


def test_a_private_builtin_server_has_no_ingress() -> None:
    planned = _plan(profiles.builtin_bucket("avatars"))
    keys = versitygw.ServerKeys("rootkey0", "r" * 30, "appkey00", "a" * 30)
    creds = dataclasses.replace(
        _creds(
            **{b.name: credentials.builtin_bucket(planned, b, keys=keys) for b in planned.buckets}
        ),
        s3_server=keys,
    )
    objects = desired.build(planned, creds)
    assert not [k for k in objects if k.startswith("Ingress/")]
    assert "S3_PUBLIC_ENDPOINT" not in profiles.secret_values(objects["Secret/shop-binding"])


def test_binding_keys_rename_in_the_app_and_the_worker_bindings() -> None:
    body = profiles.base(
        storage=profiles.buckets(
            {**profiles.s3_bucket("files"), "publicUrl": "https://f.example.com"}
        ),
        cache={"instances": [{"name": "jobs", "use": "queue"}]},
        queues=[
            {
                "name": "emails",
                "redis": "jobs",
                "listName": "bull:emails:wait",
                "image": "registry.example/w:1",
            }
        ],
    )
    body["spec"]["app"]["bindingKeys"] = {
        "AWS_ACCESS_KEY_ID": "R2_ACCESS_KEY_ID",
        "S3_BUCKET": "R2_BUCKET_NAME",
        "S3_PUBLIC_URL": "R2_PUBLIC_URL",
        "QUEUE_NAME": "EMAIL_QUEUE",
    }
    planned = planner.plan(v1alpha1.parse_profile(body))
    creds = dataclasses.replace(
        _creds(files=_found("space-kontext-files")), redis_passwords={"jobs": "j" * 32}
    )
    objects = desired.build(planned, creds)
    for name in ("Secret/shop-binding", "Secret/shop-worker-emails-binding"):
        data = profiles.secret_values(objects[name])
        assert data["R2_ACCESS_KEY_ID"] == "AK" and "AWS_ACCESS_KEY_ID" not in data
        assert data["R2_BUCKET_NAME"] == "space-kontext-files" and "S3_BUCKET" not in data
        assert data["R2_PUBLIC_URL"] == "https://f.example.com"
        assert data["AWS_SECRET_ACCESS_KEY"] == "SK-AK"  # not renamed: kept
    worker = profiles.secret_values(objects["Secret/shop-worker-emails-binding"])
    assert worker["EMAIL_QUEUE"] == "emails"


@pytest.mark.parametrize(
    ("keys", "needle"),
    [
        ({"HOME": "X"}, "'HOME' is not a key Headroom writes"),
        ({"S3_BUCKET": "AWS_BUCKET"}, "is a name Headroom writes itself"),
        ({"S3_BUCKET": "uri"}, "is a name Headroom writes itself"),
        ({"S3_BUCKET": "R2-BUCKET"}, "is not an environment variable name"),
        ({"S3_BUCKET": "R2_X", "S3_REGION": "R2_X"}, "are both renamed to 'R2_X'"),
    ],
)
def test_binding_keys_are_refused_naming_the_field(keys: dict[str, str], needle: str) -> None:
    body = profiles.base()
    body["spec"]["app"]["bindingKeys"] = keys
    with pytest.raises(v1alpha1.ProfileError) as refused:
        v1alpha1.parse_profile(body)
    assert str(refused.value).startswith("spec.app.bindingKeys: ")
    assert needle in str(refused.value)


def _binding_keys(cluster: fake_cluster.FakeCluster) -> list[str]:
    binding = cluster.find("Secret", "shop-binding")
    assert binding is not None
    return sorted(binding.get("data") or {})


def _forged_claim(name: str, **annotations: str) -> dict[str, Any]:
    """A BucketClaim somebody else made under our name, with our labels and
    the retain annotation (anyone who may create a claim can write them)."""
    return {
        "apiVersion": "objectstorage.k8s.io/v1alpha1",
        "kind": "BucketClaim",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": names.labels(
                "shop", app_deployment="web", component="storage", app_name="bucket"
            ),
            "annotations": {object_storage.RETAIN_ANNOTATION: "true", **annotations},
        },
        "spec": {"bucketClassName": "theirs", "protocols": ["s3"]},
    }


@pytest.mark.parametrize("proof", ["none", "copied"])
def test_a_forged_retained_claim_is_not_adopted(proof: str) -> None:
    key = b"k" * 32
    cluster = _cluster(profiles.cosi_bucket("avatars"))
    # a proof copied from another of our claims does not fit this one
    copied = ownership.proof(
        key, kind="BucketClaim", namespace="default", name="shop-other", profile="shop"
    )
    extra = {ownership.PROOF_ANNOTATION: copied} if proof == "copied" else {}
    cluster.put(_forged_claim("shop-avatars", **extra))
    _run(reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=key))
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None and claim["spec"]["bucketClassName"] == "theirs"
    assert ("apply", "BucketClaim/shop-avatars") not in cluster.log
    assert _storage(cluster)["reason"] == "NameConflict"
    assert not [k for k in _binding_keys(cluster) if k.startswith("S3_")]


def test_a_retained_claim_is_adopted_again_only_under_the_operators_key() -> None:
    key = b"k" * 32
    cluster = _cluster(profiles.cosi_bucket("avatars"))
    _run(reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=key))
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None and ownership.PROOF_ANNOTATION in claim["metadata"]["annotations"]
    # the profile is deleted and made anew: its owned children are gone
    for k, obj in list(cluster.objects.items()):
        if any(r["uid"] == "profile-uid" for r in obj["metadata"].get("ownerReferences") or []):
            del cluster.objects[k]
    profile = cluster.find("ScalingProfile", "shop")
    assert profile is not None
    profile["metadata"]["uid"] = "profile-uid-2"
    cluster.put(profile)
    # an operator whose key was lost cannot prove it: a conflict, not a takeover
    _run(reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=b"x" * 32))
    assert _storage(cluster)["reason"] == "NameConflict"
    # the operator's key proves it
    _run(reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=key))
    _run(reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=key))
    assert _storage(cluster)["reason"] != "NameConflict"
    assert cluster.find("BucketAccess", "shop-avatars") is not None


def test_a_claim_made_before_proofs_is_vouched_for_by_our_bucket_access() -> None:
    cluster = _cluster(profiles.cosi_bucket("avatars"))
    eng = reconciler.Reconciler(cluster, telemetry.Metrics(), ownership_key=b"k" * 32)
    _run(eng)
    claim = cluster.find("BucketClaim", "shop-avatars")
    assert claim is not None
    del claim["metadata"]["annotations"][ownership.PROOF_ANNOTATION]  # an earlier release's
    cluster.put(claim)
    _run(eng, force=True)
    stamped = cluster.find("BucketClaim", "shop-avatars")
    assert stamped is not None and ownership.PROOF_ANNOTATION in stamped["metadata"]["annotations"]
    assert _storage(cluster)["reason"] != "NameConflict"
