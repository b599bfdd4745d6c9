"""One table per class of input a new user met in the read-replica, storage and
alert sections before they were fixed: each input is refused at admission with a
message naming the field (and the other field of a contradiction), or accepted
and rendered. The same inputs go through the real API server in
tests/e2e/test_fuzz_api.py and through the real programs in
tests/conformance/test_fuzz_programs.py; the fuzzer (tests/fuzzing) looks for
more of each class.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from headroom import cli, yamlfmt
from headroom.api import crd, endpoints, v1alpha1
from headroom.builders import alert_rules, desired
from headroom.planning import admission, live_limits, planner
from headroom.reconcile import bucket_check, resolver
from tests import profiles

Case = tuple[str, dict[str, Any], str]


def _refused(overrides: dict[str, Any]) -> str:
    message = admission.review(profiles.base(**overrides))
    assert message is not None, "accepted"
    return message


def _rendered(overrides: dict[str, Any]) -> str:
    """Everything `headroom render` would print for the profile (it must plan)."""
    profile = v1alpha1.parse_profile(profiles.base(**overrides))
    planned = planner.plan(profile)
    assert planned.ok, planned.problem_text()
    objects = desired.build(planned, cli.placeholder_credentials(profile, planned))
    return yamlfmt.dump_all(list(objects.values())) + alert_rules.rule_file(planned)


def _check(overrides: dict[str, Any], needle: str) -> None:
    if needle == "ACCEPTED":
        assert admission.review(profiles.base(**overrides)) is None
        _rendered(overrides)
    else:
        message = _refused(overrides)
        assert needle in message, message


# -- a crash: a label the rules set themselves -----------------------------------------

CRASHES: list[Case] = [
    (
        "status-label-namespace",
        {"alerts.app.metrics": {"statusLabel": "namespace"}},
        "spec.alerts.app.metrics.statusLabel: 'namespace' is a label the rules select",
    ),
    (
        "status-label-pod",
        {"alerts.app.metrics": {"statusLabel": "pod"}},
        "spec.alerts.app.metrics.statusLabel: 'pod'",
    ),
    ("status-label-le", {"alerts.app.metrics": {"statusLabel": "le"}}, "statusLabel: 'le'"),
    ("status-label-code", {"alerts.app.metrics": {"statusLabel": "code"}}, "ACCEPTED"),
]


@pytest.mark.parametrize(("case", "overrides", "needle"), CRASHES, ids=[c[0] for c in CRASHES])
def test_a_label_the_rules_set_is_refused_not_a_crash(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


# -- accepted, then refused by Prometheus -----------------------------------------------

PROMETHEUS: list[Case] = [
    ("for-out-of-order", {"alerts.app.for": "5m1h"}, "spec.alerts.app.for: '5m1h' is not a"),
    ("for-repeated", {"alerts.pooler.for": "1h1h"}, "spec.alerts.pooler.for: '1h1h' is not a"),
    ("for-out-of-range", {"alerts.cache.for": "300y"}, "spec.alerts.cache.for: '300y' is out of"),
    ("for-sum-out-of-range", {"alerts.queues.for": "292y1000w"}, "spec.alerts.queues.for"),
    ("for-unit-case", {"alerts.app.for": "5M"}, "spec.alerts.app.for"),
    ("for-empty", {"alerts.app.for": ""}, "spec.alerts.app.for"),
    ("for-zero", {"alerts.app.for": "0"}, "ACCEPTED"),
    ("for-every-unit", {"alerts.app.for": "1y2w3d4h5m6s7ms"}, "ACCEPTED"),
    ("for-at-the-limit", {"alerts.database.for": "292y"}, "ACCEPTED"),
    ("label-name", {"alerts.labels": {"__name__": "x"}}, "spec.alerts.labels.__name__"),
    ("label-internal", {"alerts.labels": {"__meta_x": "x"}}, "reserved for Prometheus"),
    ("label-trailing-newline", {"alerts.labels": {"team\n": "x"}}, "not a Prometheus label"),
    ("label-template-value", {"alerts.labels": {"team": "{{ $value }}"}}, "ACCEPTED"),
    (
        "histogram-bucket",
        {"alerts.app.metrics": {"histogram": "http_req_bucket"}},
        "without _bucket",
    ),
]


@pytest.mark.parametrize(
    ("case", "overrides", "needle"), PROMETHEUS, ids=[c[0] for c in PROMETHEUS]
)
def test_what_prometheus_would_refuse_is_refused_at_admission(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


def test_template_text_in_a_label_value_or_a_list_name_stays_text() -> None:
    """Prometheus expands labels and annotations as Go templates: text the user
    wrote reaches the alert as written, and a lone {{ cannot stop the rule file
    from loading (promtool checks the rendered file in conformance)."""
    rendered = _rendered(
        {
            "alerts.labels": {"team": "{{ shop"},
            "cache": profiles.instance(),
            "queues": [{"name": "mail", "redis": "jobs", "listName": "q:{{x", "image": "w:1"}],
        }
    )
    assert '{{ "{{" }} shop' in rendered
    assert 'q:{{ "{{" }}x' in rendered


# -- the model and the CRD disagreed --------------------------------------------------------

DISAGREED: list[Case] = [
    ("memory-negative", {"alerts.app.memory": "-2G"}, "spec.alerts.app.memory: must be > 0"),
    ("memory-zero", {"alerts.app.memory": "0"}, "spec.alerts.app.memory: must be > 0"),
    ("memory-as-integer", {"alerts.app.memory": 2_000_000_000}, "ACCEPTED"),
    (
        "redis-memory-below-floor",
        {"cache": profiles.instance(memory="16Mi")},
        "spec.cache.instances[0].memory: must be at least 32Mi",
    ),
    (
        "cache-instance-twice",
        {
            "cache": {
                "instances": [{"name": "jobs", "use": "queue"}, {"name": "jobs", "use": "queue"}]
            }
        },
        "spec.cache.instances[1].name: 'jobs' is listed twice (also spec.cache.instances[0])",
    ),
    (
        "bucket-reserved-prefix",
        {"storage": profiles.buckets(profiles.cosi_bucket("xn--photos"))},
        "spec.storage.buckets[0].name: a bucket name does not start with 'xn--'",
    ),
    # the API server prunes a null, so the model reads it as absent
    ("queues-null", {"queues": None}, "ACCEPTED"),
]


@pytest.mark.parametrize(("case", "overrides", "needle"), DISAGREED, ids=[c[0] for c in DISAGREED])
def test_the_model_refuses_what_the_crd_refuses(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


def test_app_metrics_off_has_one_meaning_and_null_is_the_default() -> None:
    """enabled: false switches the app's metrics off, a plain boolean every path
    keeps; a null is what server-side apply, client-side apply (which drops it)
    and the API server (which prunes it) make of it: absent, the default."""
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    crd_app = spec["spec"]["properties"]["alerts"]["properties"]["app"]
    # server-side apply refuses a null the schema does not allow: allowed, and absent
    assert crd_app["properties"]["metrics"]["nullable"] is True
    off = planner.plan(
        v1alpha1.parse_profile(profiles.base(**{"alerts.app.metrics": {"enabled": False}}))
    )
    assert off.alerts is not None and off.alerts.settings.app.served_metrics is None
    for given in ({"alerts.app.metrics": None}, {}):
        planned = planner.plan(v1alpha1.parse_profile(profiles.base(**given)))
        assert planned.alerts is not None and planned.alerts.settings.app.served_metrics


# -- silent clamps and contradictions --------------------------------------------------------

READS = {"mode": "external", "hosts": [{"host": "r1"}]}
S3 = profiles.s3_bucket()

CONTRADICTIONS: list[Case] = [
    (
        "fallback-more-than-the-read-pool-opens",
        # 3 read-pooler pods at peak x 28 = 84 at most
        {"database.readReplicas": {**READS, "primaryFallbackConnections": 90}},
        "spec.database.readReplicas.primaryFallbackConnections: 90 is more than the read pool "
        "can open on the primary: 3 read-pooler pods at peak x 28",
    ),
    (
        "fallback-more-than-half-the-primary",
        {
            "database.maxConnections": 500,
            "database.readReplicas": {**READS, "primaryFallbackConnections": 60},
            "database.readReplicas.hosts": [{"host": "r1", "maxConnections": 100}],
        },
        "ACCEPTED",
    ),
    (
        "fallback-takes-the-write-pool",
        {"database.readReplicas": {**READS, "primaryFallbackConnections": 50}},
        "50 is more than half of the 89 connections the primary has for the poolers",
    ),
    (
        "refuse-with-a-fallback",
        {
            "database.readReplicas": {
                **READS,
                "whenAllLagging": "refuse",
                "primaryFallbackConnections": 9,
            }
        },
        "spec.database.readReplicas.primaryFallbackConnections: 9 is set, but "
        "spec.database.readReplicas.whenAllLagging is refuse",
    ),
    (
        "poll-slower-than-the-lag-bound",
        {"database.readReplicas": {**READS, "maxLagSeconds": 10, "pollSeconds": 60}},
        "spec.database.readReplicas.pollSeconds: 60 is above "
        "spec.database.readReplicas.maxLagSeconds 10",
    ),
    (
        "poll-default-and-a-tight-bound",
        {"database.readReplicas": {**READS, "maxLagSeconds": 2}},
        "spec.database.readReplicas.pollSeconds: 5 is above",
    ),
    (
        "queue-reads-without-replicas",
        {
            "cache": profiles.instance(),
            "queues": [
                {
                    "name": "mail",
                    "redis": "jobs",
                    "listName": "mail",
                    "image": "w:1",
                    "databaseReadPoolSize": 2,
                }
            ],
        },
        "spec.queues[0].databaseReadPoolSize: 2, but spec.database.readReplicas is not set",
    ),
    (
        "s3-bucket-deleted",
        {"storage": profiles.buckets({**S3, "deletionPolicy": "Delete"})},
        "spec.storage.buckets[0].deletionPolicy: Delete, but spec.storage.buckets[0].s3 is a "
        "bucket Headroom never created",
    ),
    (
        "s3-one-key-for-both",
        {
            "storage": profiles.buckets(
                profiles.s3_bucket(
                    credentialsSecret={
                        "name": "r2",
                        "accessKeyIdKey": "key",
                        "secretAccessKeyKey": "key",
                    }
                )
            )
        },
        "spec.storage.buckets[0].s3.credentialsSecret.secretAccessKeyKey: 'key' is "
        "spec.storage.buckets[0].s3.credentialsSecret.accessKeyIdKey too",
    ),
    (
        "database-one-key-for-both",
        {"database.credentialsSecret": {"name": "db", "usernameKey": "pw", "passwordKey": "pw"}},
        "spec.database.credentialsSecret.passwordKey: 'pw' is "
        "spec.database.credentialsSecret.usernameKey too",
    ),
    (
        "latency-target-without-metrics",
        {"alerts.app": {"metrics": {"enabled": False}, "p95LatencySeconds": 3}},
        "spec.alerts.app.p95LatencySeconds: is set, but spec.alerts.app.metrics.enabled is false",
    ),
    (
        "error-target-without-metrics",
        {"alerts.app": {"metrics": {"enabled": False}, "errorRatio": 0.01}},
        "spec.alerts.app.errorRatio: is set, but spec.alerts.app.metrics.enabled is false",
    ),
    ("no-metrics-no-targets", {"alerts.app": {"metrics": {"enabled": False}}}, "ACCEPTED"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "needle"), CONTRADICTIONS, ids=[c[0] for c in CONTRADICTIONS]
)
def test_contradictions_are_refused_naming_both_fields_and_nothing_is_clamped(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


# -- endpoints and origins -------------------------------------------------------------------


def _endpoint(url: str) -> dict[str, Any]:
    return {"storage": profiles.buckets(profiles.s3_bucket(endpoint=url))}


def _origin(origin: str) -> dict[str, Any]:
    return {"storage": profiles.buckets(profiles.cosi_bucket(cors={"allowedOrigins": [origin]}))}


ENDPOINTS: list[Case] = [
    ("endpoint-port-too-big", _endpoint("https://s3.example.com:65536"), "s3.endpoint: must be"),
    ("endpoint-port-zero", _endpoint("https://s3.example.com:0"), "s3.endpoint: must be"),
    ("endpoint-port-leading-zero", _endpoint("http://minio:0080"), "s3.endpoint: must be"),
    ("endpoint-metadata", _endpoint("http://169.254.169.254"), "169.254.169.254: must not be"),
    ("endpoint-metadata-port", _endpoint("http://169.254.170.2:80"), "must not be a loopback"),
    ("endpoint-loopback", _endpoint("http://127.0.0.1:9000"), "127.0.0.1: must not be"),
    ("endpoint-localhost", _endpoint("http://LOCALHOST:9000"), "localhost: must not be"),
    ("endpoint-this-network", _endpoint("http://0.0.0.0:9000"), "must not be a loopback"),
    ("endpoint-gce-metadata", _endpoint("http://metadata.google.internal"), "must not be"),
    ("endpoint-hex-address", _endpoint("http://0x7f000001"), "s3.endpoint: must be"),
    ("endpoint-decimal-address", _endpoint("http://2130706433"), "s3.endpoint: must be"),
    ("endpoint-short-address", _endpoint("http://127.1"), "s3.endpoint: must be"),
    ("endpoint-empty-label", _endpoint("https://s3..example.com"), "s3.endpoint: must be"),
    ("endpoint-aws", _endpoint("https://s3.eu-west-1.amazonaws.com"), "ACCEPTED"),
    ("endpoint-in-cluster", _endpoint("http://minio.objects:9000"), "ACCEPTED"),
    ("endpoint-private-address", _endpoint("http://10.0.0.12:9000"), "ACCEPTED"),
    ("endpoint-top-port", _endpoint("https://s3.example.com:65535"), "ACCEPTED"),
    (
        "public-url-port-too-big",
        {"storage": profiles.buckets({**S3, "publicUrl": "https://cdn.example.com:99999/x"})},
        "spec.storage.buckets[0].publicUrl",
    ),
    ("origin-port-too-big", _origin("https://app.example.com:70000"), "allowedOrigins[0]: must"),
    ("origin-wildcard-tld", _origin("https://*.com"), "allowedOrigins[0]: must"),
    ("origin-default-port", _origin("https://app.example.com:443"), "default port"),
    ("origin-uppercase", _origin("https://App.example.com"), "allowedOrigins[0]: must"),
    ("origin-wildcard", _origin("https://*.example.com"), "ACCEPTED"),
    ("origin-dev-server", _origin("http://localhost:3000"), "ACCEPTED"),
]


@pytest.mark.parametrize(("case", "overrides", "needle"), ENDPOINTS, ids=[c[0] for c in ENDPOINTS])
def test_endpoints_and_origins_are_urls_and_never_the_clusters_own_addresses(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


# -- messages name the field, by its full path --------------------------------------------------

MESSAGES: list[Case] = [
    (
        "pooler-warning-over-critical",
        {"alerts.pooler": {"connectionsWarningPercent": 95, "connectionsCriticalPercent": 90}},
        "spec.alerts.pooler.connectionsWarningPercent: 95 must be < "
        "spec.alerts.pooler.connectionsCriticalPercent 90",
    ),
    (
        "database-warning-over-critical",
        {"alerts.database": {"connectionsWarningPercent": 60, "connectionsCriticalPercent": 60}},
        "spec.alerts.database.connectionsWarningPercent: 60 must be < "
        "spec.alerts.database.connectionsCriticalPercent 60",
    ),
    (
        "origin-any-with-credentials",
        {
            "storage": profiles.buckets(
                profiles.cosi_bucket(cors={"allowedOrigins": ["*"], "allowCredentials": True})
            )
        },
        "spec.storage.buckets[0].cors.allowedOrigins: '*' cannot be combined with "
        "spec.storage.buckets[0].cors.allowCredentials true",
    ),
    (
        # the write pool does not fit because part of the primary is the read pool's
        "budget-names-the-read-fallback",
        {
            "database.maxConnections": 20,
            "pooler.instances": 6,
            "database.readReplicas": {**READS, "primaryFallbackConnections": 6},
            "database.readReplicas.hosts": [{"host": "r1", "maxConnections": 100}],
        },
        "- 6 for the read pool when every replica is out "
        "(spec.database.readReplicas.whenAllLagging primary)",
    ),
]


@pytest.mark.parametrize(("case", "overrides", "needle"), MESSAGES, ids=[c[0] for c in MESSAGES])
def test_refusals_name_the_full_field_path(
    case: str, overrides: dict[str, Any], needle: str
) -> None:
    _check(overrides, needle)


def test_a_refusal_by_the_primarys_real_limits_says_what_the_read_fallback_takes() -> None:
    """The operator reads the primary's real limits; when they cannot carry the
    plan, the message says which part is the read pool's fallback."""
    body = profiles.base(
        **{
            "database.readReplicas": {
                **READS,
                "primaryFallbackConnections": 9,
                "hosts": [{"host": "r1", "maxConnections": 100}],
            }
        }
    )
    real = planner.PrimaryLimits(max_connections=80, superuser_reserved_connections=3)
    planned = planner.plan(v1alpha1.parse_profile(body))
    assert planned.ok
    (problem,) = live_limits.primary_problems(planned, real)
    assert str(problem) == (
        "spec.database.maxConnections: the primary reports max_connections 80 - "
        "superuser_reserved_connections 3 - 5 reserved - 3 for postgres_exporter = 69 "
        "available, but the plan opens 87 server connections (78 for the write pool + 9 for "
        "the read pool when every replica "
        "is out (spec.database.readReplicas.primaryFallbackConnections); declared "
        "maxConnections 100, superuserReservedConnections 3); declare the primary's real limits"
    )


def test_what_an_update_may_not_change_is_refused_by_admission_too() -> None:
    """The CRD's transition rules (oldSelf) have their twin in the model, which
    admission runs on updates."""
    old = profiles.base(cache=profiles.instance(persistence={"size": "1Gi"}))
    grown = profiles.base(cache=profiles.instance(persistence={"size": "2Gi"}))
    assert admission.review(grown, old=old) == (
        "spec.cache.instances[0].persistence: size and storageClassName cannot change: they "
        "are the StatefulSet's volumeClaimTemplates, which Kubernetes never updates. Grow the "
        "PVCs themselves (kubectl patch pvc, if the StorageClass allows expansion) or add a "
        "new instance under another name"
    )
    sentinel = profiles.base(cache=profiles.instance(sentinel={}))
    assert "spec.cache.instances[0].sentinel: cannot be added" in (
        admission.review(sentinel, old=old) or ""
    )
    assert admission.review(grown) is None  # a create has nothing to keep
    assert admission.review(old, old=old) is None


@pytest.mark.parametrize(
    ("resolved", "refused"),
    [
        ("127.0.0.1", True),
        ("169.254.169.254", True),
        ("0.0.0.0", True),  # noqa: S104 - an address under test
        ("100.100.100.200", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("fe80::1%eth0", True),
        ("fd00:ec2::254", True),
        ("10.0.0.12", False),
        ("192.0.2.10", False),
        ("2001:db8::1", False),
    ],
)
def test_the_operators_bucket_check_connects_only_to_an_address_it_checked(
    resolved: str, refused: bool
) -> None:
    """A name can resolve anywhere (a COSI driver's endpoint, DNS): the check
    resolves it itself and connects to that address, or to none."""
    names = resolver.Resolver(lookup=lambda host: [resolved])
    target = bucket_check.Target(
        endpoint="https://objects.example.com",
        region="auto",
        bucket="b",
        access_key_id="AK",
        secret_access_key="SK",
    )
    connects = resolver.ForHTTP(names, refuse=endpoints.internal_address)

    async def run() -> None:
        if refused:
            async with bucket_check.Checker(names) as check:
                verdict = await check(target)
            assert verdict.reason is None and "InternalAddress" in verdict.note
            with pytest.raises(OSError, match="does not contact"):
                await connects.resolve("objects.example.com", 443)
        else:
            (found,) = await connects.resolve("objects.example.com", 443)
            assert found["host"] == resolved
            assert found["hostname"] == "objects.example.com"  # TLS and Host name the endpoint

    asyncio.run(run())
