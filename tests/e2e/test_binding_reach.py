"""The binding's endpoints are reachable by the pods that read it, on a real API
server: a profile with a pooler, a cache and a queue instance, a queue's workers
and a builtin bucket on a public host. For every endpoint in the app's binding
(and each worker's), the Service it names is followed to its pods, and the
NetworkPolicies read back from the API server admit the app's (the workers')
pods there, by the NetworkPolicy API's rules (netpol.py: nothing enforces them
on the local control plane) — the operator's policies, and the same policies
from ``headroom render`` given the app's Deployment. A pod with other labels is
refused (the reading can fail). A presigned POST the app signs with the
binding's public endpoint names the public host, which the Ingress routes to
the S3 server's Service.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import kube
import netpol
import operator_process
import yaml
from apps import app_deployment, credentials
from botocore.config import Config
from tests import profiles

NAME = "shop"
PUBLIC_HOST = "files.shop.example.test"
ENDPOINT = re.compile(r"(?:@|//)([a-z0-9-]+)\.([a-z0-9-]+)\.svc:(\d+)")


def _profile(namespace: str) -> dict[str, Any]:
    body = profiles.base(name=NAME, namespace=namespace)
    body["spec"]["cache"] = {
        "instances": [{"name": "cache", "use": "cache"}, {"name": "jobs", "use": "queue"}]
    }
    body["spec"]["queues"] = [
        {
            "name": "emails",
            "redis": "jobs",
            "listName": "bull:emails:wait",
            "image": "registry.example/worker:1",
            "replicas": {"min": 1, "max": 3},
            "databasePoolSize": 2,
        }
    ]
    body["spec"]["storage"] = {
        "buckets": [
            {
                "name": "meal-photos",
                "builtin": {"public": {"host": PUBLIC_HOST, "ingressClassName": "nginx"}},
                "maxUploadBytes": 1048576,
                "cors": {"allowedOrigins": ["https://gym.example.com"]},
            }
        ]
    }
    return body


def _secret(kubectl: kube.Kubectl, namespace: str, name: str) -> dict[str, str]:
    data = kube.get_json(kubectl, "secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def _endpoints(binding: dict[str, str], namespace: str) -> set[tuple[str, int]]:
    """(Service, port) of every in-cluster address the binding names."""
    found = set()
    for value in binding.values():
        for service, ns, port in ENDPOINT.findall(value):
            if ns == namespace:
                found.add((service, int(port)))
    return found


def _targets(
    kubectl: kube.Kubectl, namespace: str, service: str, port: int
) -> list[tuple[dict[str, Any], int]]:
    """The pods behind ``service`` and the pod port that ``port`` reaches on each."""
    svc = kube.get_json(kubectl, "service", service, "-n", namespace)
    (spec_port,) = [p for p in svc["spec"]["ports"] if p["port"] == port]
    selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
    pods = kube.get_json(kubectl, "pods", "-n", namespace, "-l", selector)["items"]
    out = []
    for pod in pods:
        target = spec_port.get("targetPort", port)
        if isinstance(target, str):
            target = netpol.container_port(pod, target)
        out.append((pod, int(target)))
    return out


def _defaulted(spec: dict[str, Any]) -> dict[str, Any]:
    """A rendered policy's spec as the API server stores it (protocol TCP filled in)."""
    out = json.loads(json.dumps(spec))
    for rule in out.get("ingress", []):
        for port in rule.get("ports", []):
            port.setdefault("protocol", "TCP")
    return out


def _render_policies(namespace: str, tmp: Path) -> list[dict[str, Any]]:
    """``headroom render`` of the same profile, the app's Deployment beside it."""
    profile = tmp / "profile.yaml"
    profile.write_text(yaml.safe_dump(_profile(namespace)))
    app = tmp / "app.yaml"
    app.write_text(yaml.safe_dump(app_deployment(namespace)))
    out = subprocess.run(
        [sys.executable, "-m", "headroom.cli", "render", str(profile), "--with", str(app)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d and d["kind"] == "NetworkPolicy"]


def test_every_endpoint_in_the_binding_admits_its_readers(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    kube.apply(kubectl, app_deployment(namespace), credentials(namespace))
    kube.apply(kubectl, _profile(namespace), namespace=namespace)
    kubectl(
        "wait", "--for=condition=Ready", f"scalingprofile/{NAME}", "-n", namespace, "--timeout=120s"
    )
    ns_labels = kube.get_json(kubectl, "namespace", namespace)["metadata"]["labels"]
    operator_policies = kube.get_json(kubectl, "networkpolicy", "-n", namespace)["items"]
    rendered = _render_policies(namespace, tmp_path)
    # the same policies, whichever wrote them
    by_operator = {p["metadata"]["name"]: p["spec"] for p in operator_policies}
    by_render = {p["metadata"]["name"]: _defaulted(p["spec"]) for p in rendered}
    for name in sorted(set(by_operator) | set(by_render)):
        assert by_operator.get(name) == by_render.get(name), (
            name,
            json.dumps(by_operator.get(name), indent=1),
            json.dumps(by_render.get(name), indent=1),
        )

    app_pods = kube.get_json(kubectl, "pods", "-n", namespace, "-l", "app=web")["items"]
    worker_pods = kube.get_json(
        kubectl, "pods", "-n", namespace, "-l", "headroom.dev/queue=emails"
    )["items"]
    assert app_pods and worker_pods
    readers = {
        f"{NAME}-binding": app_pods,
        f"{NAME}-worker-emails-binding": worker_pods,
    }
    stranger = netpol.Source({"app": "stranger"}, namespace, ns_labels)
    checked = []
    for secret, pods in readers.items():
        endpoints = _endpoints(_secret(kubectl, namespace, secret), namespace)
        services = {service for service, _ in endpoints}
        assert {f"{NAME}-pooler-rw", f"{NAME}-redis-jobs", f"{NAME}-s3"} <= services, endpoints
        for service, port in sorted(endpoints):
            targets = _targets(kubectl, namespace, service, port)
            assert targets, f"no pod behind {service}:{port}"
            for target, target_port in targets:
                for policies, who in ((operator_policies, "operator"), (rendered, "render")):
                    for pod in pods:
                        source = netpol.Source(pod["metadata"]["labels"], namespace, ns_labels)
                        assert netpol.admits(
                            policies, source=source, target=target, port=target_port
                        ), f"{who}: {secret} reader {pod['metadata']['name']} -> {service}:{port}"
                    assert not netpol.admits(
                        policies, source=stranger, target=target, port=target_port
                    ), f"{who}: a stranger reaches {service}:{port}"
            checked.append(f"{secret}->{service}:{port}")
    print("\nadmitted:", ", ".join(checked))

    # The browser's side: the Ingress routes the public host to the S3 server, and
    # a presigned POST signed with the binding's public endpoint names that host.
    ingress = kube.get_json(kubectl, "ingress", f"{NAME}-s3", "-n", namespace)
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == PUBLIC_HOST
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": f"{NAME}-s3", "port": {"number": 7070}}
    controller = netpol.Source(
        {"app": "ingress-nginx"}, "ingress-nginx", {"kubernetes.io/metadata.name": "ingress-nginx"}
    )
    (s3_pod, s3_port), *_ = _targets(kubectl, namespace, f"{NAME}-s3", 7070)
    assert netpol.admits(operator_policies, source=controller, target=s3_pod, port=s3_port)
    binding = _secret(kubectl, namespace, f"{NAME}-binding")
    browser = boto3.client(
        "s3",
        endpoint_url=binding["S3_PUBLIC_ENDPOINT"],
        aws_access_key_id=binding["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=binding["AWS_SECRET_ACCESS_KEY"],
        region_name=binding["AWS_REGION"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    post = browser.generate_presigned_post(
        binding["S3_BUCKET"],
        "uploads/photo.jpg",
        Conditions=[["content-length-range", 0, int(binding["S3_MAX_UPLOAD_BYTES"])]],
    )
    assert post["url"] == f"https://{PUBLIC_HOST}/meal-photos", json.dumps(post)
    assert binding["S3_PUBLIC_URL"] == f"https://{PUBLIC_HOST}/meal-photos"
