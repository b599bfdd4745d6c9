"""The admission webhook: the pure review, and the server process answering
over HTTPS on 127.0.0.1 with its own certificate."""

from __future__ import annotations

import base64
import datetime
import json
import socket
import ssl
import time
import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry, Histogram

from headroom import settings
from headroom.runtime.admission import certificates, registration, review, server
from tests import certs, profiles


def test_a_valid_profile_is_allowed_and_an_impossible_one_refused_with_the_field() -> None:
    good = review.review({"uid": "1", "object": profiles.base()})
    assert good == {"uid": "1", "allowed": True}
    bad_body = profiles.base(**{"pooler.parameters": {"default_pool_size": "90"}})
    bad = review.review({"uid": "2", "object": bad_body})
    assert bad["allowed"] is False and bad["status"]["code"] == 422
    assert "spec.pooler.parameters.default_pool_size" in bad["status"]["message"]


def test_a_metadata_only_change_always_passes() -> None:
    impossible = profiles.base(**{"pooler.parameters": {"default_pool_size": "90"}})
    relabelled = {**impossible, "metadata": {**impossible["metadata"], "labels": {"a": "b"}}}
    answer = review.review({"uid": "3", "object": relabelled, "oldObject": impossible})
    assert answer["allowed"] is True


def test_an_update_is_held_to_what_may_not_change() -> None:
    """The CRD's transition rules, in the webhook too (their twins in the model)."""
    old = profiles.base(cache=profiles.instance())
    new = profiles.base(cache=profiles.instance(persistence={"size": "1Gi"}))
    answer = review.review({"uid": "4", "object": new, "oldObject": old})
    assert answer["allowed"] is False
    assert answer["status"]["message"].startswith("spec.cache.instances[0].persistence: cannot")
    assert review.review({"uid": "5", "object": new})["allowed"] is True  # a create


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_the_server_process_answers_admission_reviews(tmp_path: Path) -> None:
    port = _free_port()
    cfg = settings.Settings(webhook_addr="127.0.0.1", webhook_port=port, webhook_cert_dir=tmp_path)
    cert, key = certificates.install(cfg, *certificates.local_certificate(cfg))
    latency = Histogram("t_admission", "t", registry=CollectorRegistry())
    webhook = server.Server(cfg, cert=cert, key=key, latency=latency)
    webhook.start()
    try:
        assert webhook.alive
        review = {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"uid": "u1", "object": profiles.base()},
        }
        request = urllib.request.Request(
            f"https://127.0.0.1:{port}{registration.PATH}",
            data=json.dumps(review).encode(),
            headers={"Content-Type": "application/json"},
        )
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(request, context=context, timeout=10) as resp:  # noqa: S310
            answer = json.loads(resp.read())
        assert answer["response"] == {"uid": "u1", "allowed": True}
        assert answer["kind"] == "AdmissionReview"
    finally:
        webhook.stop()
    assert not webhook.alive


def _served_certificate(port: int) -> bytes:
    pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
    return ssl.PEM_cert_to_DER_cert(pem)


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    port = _free_port()
    cfg = settings.Settings(webhook_addr="127.0.0.1", webhook_port=port, webhook_cert_dir=tmp_path)
    first = certificates.local_certificate(cfg)
    cert, key = certificates.install(cfg, *first)
    # the pair on disk is current: asked again, it is kept
    assert certificates.local_certificate(cfg) == first
    latency = Histogram("t_admission_renew", "t", registry=CollectorRegistry())
    webhook = server.Server(cfg, cert=cert, key=key, latency=latency)
    webhook.start()
    try:
        before = _served_certificate(port)
        assert before == ssl.PEM_cert_to_DER_cert(first[0].decode())
        renewed = certificates.generate(["localhost", "127.0.0.1"])
        certificates.install(cfg, *renewed)
        wanted = ssl.PEM_cert_to_DER_cert(renewed[0].decode())
        deadline = time.monotonic() + 10
        while _served_certificate(port) != wanted:
            assert time.monotonic() < deadline, "the renewed certificate was never served"
            time.sleep(0.2)
        assert webhook.alive  # the same process, no restart
    finally:
        webhook.stop()


def test_the_ca_bundle_keeps_valid_distinct_certificates_only() -> None:
    old, _ = certificates.generate(["localhost"])
    new, _ = certificates.generate(["localhost"])
    expired = certs.pem(
        certs.ca(
            "gone", not_before=-3 * datetime.timedelta(days=1), not_after=-datetime.timedelta(1)
        )[1]
    ).encode()
    bundle = certificates.ca_bundle(new, old, new, expired, b"garbage")
    assert bundle == new + old
    # a bundle given whole keeps every certificate in it (the renewal passes
    # the current caBundle back in)
    assert certificates.ca_bundle(new, bundle) == new + old
    configuration = {
        "webhooks": [{"clientConfig": {"caBundle": base64.b64encode(bundle).decode()}}]
    }
    assert registration.trusts(configuration, old) and registration.trusts(configuration, new)
    assert not registration.trusts(configuration, expired)
    assert not registration.trusts(None, new)


def test_the_in_cluster_configuration_points_at_the_service_path() -> None:
    cfg = settings.Settings(webhook_service="headroom-system/headroom-webhook")
    (hook,) = registration.configuration(cfg, b"-----BEGIN CERTIFICATE-----")["webhooks"]
    service = hook["clientConfig"]["service"]
    assert service["path"] == "/validate/scalingprofile"  # not //scalingprofile
    assert (service["namespace"], service["name"]) == ("headroom-system", "headroom-webhook")
    assert "url" not in hook["clientConfig"]
