"""An upgrade as a platform team runs it: the previous release (commit
PREVIOUS of this repository, its chart and its operator) converges a set of
profiles, then ``helm upgrade`` brings this checkout's chart and CRD and this
checkout's operator takes over.

What must hold: nothing is deleted (no child, claim or Secret is replaced);
no pooler, Redis or worker pod restarts unless its image, its configuration
or its credentials changed (every other change of a pod template is a restart
for nothing, and fails the test naming the field); generated passwords and
the status (conditions' transition times, the budget's plannedSince) carry
over; the upgraded CRD serves the new release's fields and a profile uses one.

It runs on a control plane of its own (hack/cluster.sh on free ports), so the
previous CRD never reaches the session's cluster. The previous release's
files come from git (``git archive PREVIOUS``); its operator runs from them
with this venv (PYTHONPATH), as the chart's ServiceAccount.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import kube
import operator_process
import own_cluster
import pytest
import yaml
from apps import credentials, named_app
from tests import profiles

from headroom.api import v1alpha1

REPO = Path(__file__).resolve().parents[2]
# main when the upgrade test was written: the release this one upgrades from
PREVIOUS = "50119f2"
SYSTEM = "headroom-system"
RELEASE = "headroom"
WORKLOADS = ("Deployment", "StatefulSet")
# Pod template fields whose change is a reason to restart: what the program runs
# (image), what it reads (command, args, env, mounted config and their hashes)
# and which credentials (the revision annotations).
IMAGE = "image"
CONFIG = "config"
CREDENTIALS = "credentials"


Cluster = own_cluster.Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A local control plane of its own on free ports (whatever cluster the
    session uses), deleted afterwards."""
    with own_cluster.running(tmp_path_factory.mktemp("upgrade-cluster")) as found:
        yield found


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The previous release's operator/, charts/ and crds/, from git."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", PREVIOUS, "operator", "charts", "crds"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.fail(
            f"the previous release {PREVIOUS} is not in this clone "
            f"({archive.stderr.decode().strip()}); the upgrade test needs the full history"
        )
    dest = tmp_path_factory.mktemp("previous-release")
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest


# ---------------------------------------------------------------- the profiles


def _shop(namespace: str) -> dict[str, Any]:
    """examples/shop-scaled.yaml's kind: pooler, a cache, a persistent queue
    instance with workers (CPU HPA: no KEDA here), app autoscaling."""
    body = profiles.base(name="shop", namespace=namespace, **{"app.deployment": "shop-web"})
    body["spec"]["cache"] = {
        "instances": [
            {"name": "cache", "use": "cache", "memory": "512Mi"},
            {"name": "jobs", "use": "queue", "memory": "256Mi", "persistence": {"size": "1Gi"}},
        ]
    }
    body["spec"]["queues"] = [
        {
            "name": "emails",
            "redis": "jobs",
            "listName": "bull:emails:wait",
            "image": "registry.example/shop-worker:1.0",
            "replicas": {"min": 1, "max": 10},
            "backlogPerWorker": 25,
            "databasePoolSize": 2,
        }
    ]
    # leave room on the server for the admin app
    body["spec"]["pooler"]["parameters"] = {"max_db_connections": "20", "default_pool_size": "18"}
    return body


def _admin(namespace: str) -> dict[str, Any]:
    """A second app on the shop's Postgres: the shared budget."""
    return profiles.base(
        name="admin",
        namespace=namespace,
        **{"app.deployment": "admin-web", "app.replicas": {"min": 1, "max": 4}},
    )


def _sessions(namespace: str) -> dict[str, Any]:
    """Session pooling and Redis with Sentinel (HA)."""
    body = profiles.base(
        name="sessions",
        namespace=namespace,
        **{
            "app.deployment": "sessions-web",
            "app.replicas": {"min": 1, "max": 6},
            "pooler.poolMode": "session",
        },
    )
    body["spec"]["cache"] = {
        "instances": [
            {"name": "cache", "use": "cache", "memory": "256Mi", "sentinel": {"replicas": 2}}
        ]
    }
    return body


RENAMED = {"DATABASE_URL_POOLED": "ADMIN_DATABASE_URL"}


def _renamed(body: dict[str, Any]) -> dict[str, Any]:
    """spec.app.bindingKeys, a field the previous release did not have."""
    body["spec"]["app"]["bindingKeys"] = dict(RENAMED)
    return body


def _lonely(namespace: str) -> dict[str, Any]:
    """Its app's Deployment is never created: Ready=False, an input missing."""
    return profiles.base(
        name="lonely",
        namespace=namespace,
        **{"app.deployment": "not-deployed", "database.host": "lonely-db"},
    )


# ---------------------------------------------------------------- snapshots


def _items(kubectl: kube.Kubectl, namespace: str, kinds: str) -> list[dict[str, Any]]:
    return kube.get_json(kubectl, kinds, "-n", namespace)["items"]


@dataclass
class Snapshot:
    objects: dict[str, dict[str, Any]]  # "namespace/Kind/name" -> object
    pods: dict[str, set[str]]  # workload key -> uids of its pods
    profiles: dict[str, dict[str, Any]]  # "namespace/name" -> profile


def _snapshot(kubectl: kube.Kubectl, namespaces: list[str]) -> Snapshot:
    objects: dict[str, dict[str, Any]] = {}
    pods: dict[str, set[str]] = {}
    found: dict[str, dict[str, Any]] = {}
    kinds = "deployments,statefulsets,services,configmaps,secrets,pdb,hpa,networkpolicies,pvc"
    for ns in namespaces:
        for obj in _items(kubectl, ns, kinds):
            objects[f"{ns}/{obj['kind']}/{obj['metadata']['name']}"] = obj
        every_pod = _items(kubectl, ns, "pods")
        for obj in _items(kubectl, ns, "deployments,statefulsets"):
            selector = obj["spec"]["selector"]["matchLabels"]
            pods[f"{ns}/{obj['kind']}/{obj['metadata']['name']}"] = {
                p["metadata"]["uid"]
                for p in every_pod
                if selector.items() <= (p["metadata"].get("labels") or {}).items()
                and not p["metadata"].get("deletionTimestamp")
            }
        for sp in _items(kubectl, ns, "scalingprofiles"):
            found[f"{ns}/{sp['metadata']['name']}"] = sp
    return Snapshot(objects=objects, pods=pods, profiles=found)


def _managed(obj: dict[str, Any]) -> bool:
    return (obj["metadata"].get("labels") or {}).get("app.kubernetes.io/managed-by") == "headroom"


def _changes(before: Any, after: Any, path: str = "") -> list[str]:
    """Paths where two JSON values differ."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: list[str] = []
        for key in sorted(set(before) | set(after)):
            out += _changes(before.get(key), after.get(key), f"{path}.{key}")
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            name = b.get("name") if isinstance(b, dict) and isinstance(b.get("name"), str) else i
            out += _changes(b, a, f"{path}[{name}]")
        return out
    return [] if before == after else [path or "."]


def _cause(path: str) -> str | None:
    """Why a change of this pod-template path restarts the pod, or None."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf in ("containers", "initContainers"):
        return IMAGE  # a program added or removed (the write pooler's agent)
    if ".containers[" in path or ".initContainers[" in path:
        if leaf == "image":
            return IMAGE
        if any(
            f".{part}" in path for part in ("command", "args", "env", "envFrom", "volumeMounts")
        ):
            return CONFIG
    if path.endswith((".spec.volumes", ".spec.serviceAccountName", ".spec.serviceAccount")):
        # what the pods mount, the identity an added agent reads with (the API
        # server mirrors serviceAccountName into the deprecated serviceAccount)
        return CONFIG
    if ".metadata.annotations." in path:
        if "config-hash" in path:
            return CONFIG
        if "revision" in path:
            return CREDENTIALS
    if ".volumes[" in path and (".configMap" in path or ".secret" in path):
        return CONFIG
    return None


def _defaults(node: Any, path: str = "") -> dict[str, Any]:
    """spec field path -> its CRD default (outside lists)."""
    found: dict[str, Any] = {}
    if isinstance(node, dict):
        if "default" in node and path:
            found[path] = node["default"]
        for key, sub in (node.get("properties") or {}).items():
            found |= _defaults(sub, f"{path}.{key}" if path else key)
    return found


def _stale_defaults(previous_crd: Path, after: Snapshot) -> list[str]:
    """Fields whose CRD default changed in this release but which the API
    server stored into existing profiles with the previous default when they
    were written: this release's default never reaches them. Reported, not
    asserted: what to do about persisted defaults is the API's decision."""

    def spec_defaults(crd: dict[str, Any]) -> dict[str, Any]:
        root = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return _defaults(root["properties"]["spec"], "spec")

    old = spec_defaults(yaml.safe_load(previous_crd.read_text()))
    new = spec_defaults(yaml.safe_load((REPO / "crds" / previous_crd.name).read_text()))
    stale = []
    for path, old_default in old.items():
        if path not in new or new[path] == old_default:
            continue
        for key, sp in after.profiles.items():
            value: Any = sp
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value == old_default:
                stale.append(
                    f"{key}: {path} is {old_default!r}, this release's default {new[path]!r}"
                )
    return sorted(stale)


def _images(workload: dict[str, Any]) -> list[str]:
    return [c["image"] for c in workload["spec"]["template"]["spec"]["containers"]]


def _metrics_idle(op: operator_process.OperatorProcess, profiles_count: int) -> bool:
    text = op.metrics()
    passes = sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("headroom_passes_total{")
    )
    return (
        passes >= profiles_count
        and op.metric("headroom_queue_depth") == 0
        and op.metric("headroom_passes_in_flight") == 0
    )


def _rolled_out(kubectl: kube.Kubectl, namespaces: list[str]) -> bool:
    for ns in namespaces:
        for obj in _items(kubectl, ns, "deployments,statefulsets"):
            spec, st = obj["spec"], obj.get("status") or {}
            want = spec.get("replicas", 1)
            if st.get("observedGeneration") != obj["metadata"]["generation"]:
                return False
            if st.get("updatedReplicas", 0) != want or st.get("readyReplicas", 0) != want:
                return False
            if obj["kind"] == "StatefulSet" and st.get("currentRevision") != st.get(
                "updateRevision"
            ):
                return False
    return True


def _conditions(sp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (sp.get("status") or {}).get("conditions") or []}


# ---------------------------------------------------------------- the test


def test_upgrade_from_the_previous_release_keeps_everything(
    cluster: Cluster, previous: Path, helm: str, tmp_path: Path
) -> None:
    kubectl = cluster.kubectl
    kubectl(
        "create", "namespace", SYSTEM,
    )  # fmt: skip
    kubectl("label", "namespace", SYSTEM, "pod-security.kubernetes.io/enforce=restricted")
    env = {**os.environ, "KUBECONFIG": cluster.kubeconfig}

    def run_helm(*args: str) -> str:
        done = subprocess.run([helm, *args], env=env, capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"helm {' '.join(args)}:\n{done.stdout}{done.stderr}"
        return done.stdout

    run_helm("install", RELEASE, str(previous / "charts" / "headroom"), "-n", SYSTEM)
    with kube.fresh_namespace(kubectl) as shop_ns, kube.fresh_namespace(kubectl) as other_ns:
        namespaces = [shop_ns, other_ns]
        kube.apply(
            kubectl,
            credentials(shop_ns),
            named_app(shop_ns, "shop-web"),
            named_app(shop_ns, "admin-web"),
        )
        kube.apply(kubectl, credentials(other_ns), named_app(other_ns, "sessions-web"))
        # -- the previous release converges them
        with operator_process.running(
            kubectl,
            kubeconfig=cluster.kubeconfig,
            workdir=tmp_path / "previous",
            install=False,
            source=previous / "operator",
        ) as old:
            old.wait_leader()
            kube.apply(kubectl, _shop(shop_ns), namespace=shop_ns)
            kube.apply(kubectl, _sessions(other_ns), _lonely(other_ns), namespace=other_ns)
            for ns, name in ((shop_ns, "shop"), (other_ns, "sessions")):
                kubectl(
                    "wait", "--for=condition=Ready", f"scalingprofile/{name}", "-n", ns,
                    "--timeout=180s",
                )  # fmt: skip
            kube.apply(kubectl, _admin(shop_ns), namespace=shop_ns)
            kubectl(
                "wait", "--for=condition=Ready", "scalingprofile/admin", "-n", shop_ns,
                "--timeout=180s",
            )  # fmt: skip
            kube.wait_for(
                lambda: _metrics_idle(old, 4) and _rolled_out(kubectl, namespaces),
                timeout=120,
                what="the previous release to converge",
            )
            before = _snapshot(kubectl, namespaces)
            # a field of this release: the previous CRD does not know it
            refused = kubectl(
                "apply", "--server-side", "--field-manager=e2e", "-f", "-",
                input=yaml.safe_dump(_renamed(_admin(shop_ns))), check=False,
            )  # fmt: skip
            assert refused.returncode != 0 and "bindingKeys" in refused.stderr, refused.stderr
        assert _conditions(before.profiles[f"{other_ns}/lonely"])["Ready"]["status"] == "False"

        # -- helm upgrade: this chart, its CRD (a template now: --take-ownership once)
        run_helm(
            "upgrade", RELEASE, str(REPO / "charts" / "headroom"), "-n", SYSTEM, "--take-ownership"
        )
        served = kube.get_json(kubectl, "crd", "scalingprofiles.headroom.dev")
        committed = yaml.safe_load(
            (REPO / "crds" / "headroom.dev_scalingprofiles.yaml").read_text()
        )
        assert served["spec"]["versions"] == committed["spec"]["versions"]

        # -- this release takes over
        with operator_process.running(
            kubectl, kubeconfig=cluster.kubeconfig, workdir=tmp_path / "current", install=False
        ) as new:
            new.wait_leader()
            kube.wait_for(
                lambda: _metrics_idle(new, 4) and _rolled_out(kubectl, namespaces),
                timeout=180,
                what="this release to converge",
            )
            after = _snapshot(kubectl, namespaces)
            report = _compare(before, after)
            report["stale_defaults"] = _stale_defaults(
                previous / "crds" / "headroom.dev_scalingprofiles.yaml", after
            )
            print(json.dumps(report, indent=2))  # the restarts and their causes, for the record
            assert not report["deleted"], report["deleted"]
            assert not report["unexplained_restarts"], report["unexplained_restarts"]
            assert not report["changed_credentials"], report["changed_credentials"]
            assert not report["status_lost"], report["status_lost"]
            for key in ("shop", "admin", "sessions"):
                ns = shop_ns if key != "sessions" else other_ns
                assert _conditions(after.profiles[f"{ns}/{key}"])["Ready"]["status"] == "True"
            # no Redis pod restarts: the agent that takes its config online arrives with
            # the next change that restarts them anyway (docs/operations.md); the
            # sentinels neither; nothing restarts for a revision annotation with no
            # credential changed (the workers roll for their renamed binding, the
            # poolers for their image)
            redis_restarts = {k: c for k, c in report["restarts"].items() if "-redis-" in k}
            assert not redis_restarts, redis_restarts
            by_revision = {
                k: causes
                for k, causes in report["restarts"].items()
                if CREDENTIALS in causes and not report["changed_credentials"]
            }
            assert not by_revision, by_revision
            # the previous CRD stored its PgBouncer default into every profile: read as
            # unset, so this release's default (a CVE fix) reaches them
            for key in ("shop", "admin", "sessions"):
                ns = shop_ns if key != "sessions" else other_ns
                pooler = after.objects[f"{ns}/Deployment/{key}-pooler"]
                assert _images(pooler)[0] == v1alpha1.PGBOUNCER_IMAGE, key
            # the shared server is inside its budget: what the two profiles hold there
            server = f"db.{shop_ns}.svc:5432"
            held = [
                h["connections"]
                for key in ("shop", "admin")
                for h in after.profiles[f"{shop_ns}/{key}"]["status"]["budget"]["held"]
                if h["server"] == server
            ]
            assert len(held) == 2 and sum(held) <= 100 - 3, held

            # this release's conditions: the profile waiting for its app now says it stalls
            lonely = _conditions(after.profiles[f"{other_ns}/lonely"])
            assert (lonely["Stalled"]["status"], lonely["Stalled"]["reason"]) == (
                "True",
                "AppDeploymentNotFound",
            )

            # the upgraded CRD keeps this release's fields, and the operator acts on them
            kube.apply(kubectl, _renamed(_admin(shop_ns)), namespace=shop_ns)
            stored = kube.get_json(kubectl, "scalingprofile", "admin", "-n", shop_ns)
            assert stored["spec"]["app"]["bindingKeys"] == RENAMED

            def renamed_binding() -> bool:
                keys = kube.get_json(kubectl, "secret", "admin-binding", "-n", shop_ns)["data"]
                return "ADMIN_DATABASE_URL" in keys and "DATABASE_URL_POOLED" not in keys

            kube.wait_for(renamed_binding, timeout=60, what="the binding under the app's key name")

            # the first change that restarts the earlier release's Redis pods anyway
            # (a new eviction policy: they read redis.conf only at start) brings the
            # agent, with an Event saying why they roll
            shop = _shop(shop_ns)
            shop["spec"]["cache"]["instances"][0]["evictionPolicy"] = "allkeys-lfu"
            kube.apply(kubectl, shop, namespace=shop_ns)

            def cache_rolled() -> bool:
                sts = kube.get_json(kubectl, "statefulset", "shop-redis-cache", "-n", shop_ns)
                containers = sts["spec"]["template"]["spec"]["containers"]
                return any(c["name"] == "agent" for c in containers) and (
                    sts["status"].get("updatedReplicas") == sts["spec"]["replicas"]
                )

            kube.wait_for(cache_rolled, timeout=120, what="the cache's pods to gain the agent")
            events = kube.get_json(
                kubectl, "events", "-n", shop_ns, "--field-selector", "reason=RedisRestart"
            )["items"]
            assert any(
                "without the config agent" in e["message"] and "redis.conf" in e["message"]
                for e in events
            ), [e["message"] for e in events]
            rolled = _snapshot(kubectl, namespaces)
            cache = f"{shop_ns}/StatefulSet/shop-redis-cache"
            assert rolled.pods[cache] and not rolled.pods[cache] & after.pods[cache]
            jobs = f"{shop_ns}/StatefulSet/shop-redis-jobs"
            assert rolled.pods[jobs] == after.pods[jobs]  # the other instance kept its pods
            assert urllib.request.urlopen(new.health_url, timeout=5).status == 200  # noqa: S310


def _credentials_kept(before: dict[str, str], after: dict[str, str]) -> bool:
    """Every value of a Secret is still there (a release may add one: the write
    pooler's agent password, and its line in the userlist)."""
    for key, value in before.items():
        if key == "userlist.txt" and key in after:
            lines = set(base64.b64decode(value).splitlines())
            if not lines <= set(base64.b64decode(after[key]).splitlines()):
                return False
        elif after.get(key) != value:
            return False
    return True


def _compare(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    deleted = sorted(
        key
        for key, obj in before.objects.items()
        if key not in after.objects
        or after.objects[key]["metadata"]["uid"] != obj["metadata"]["uid"]
    )
    restarts: dict[str, dict[str, list[str]]] = {}
    unexplained: dict[str, list[str]] = {}
    for key, uids in before.pods.items():
        if not uids - after.pods.get(key, set()):
            continue  # every pod still runs (an autoscaler may have added some)
        template_before = before.objects[key]["spec"]["template"]
        template_after = after.objects[key]["spec"]["template"]
        paths = _changes(template_before, template_after, ".spec.template")
        causes: dict[str, list[str]] = {}
        for path in paths:
            causes.setdefault(_cause(path) or "unexplained", []).append(path)
        restarts[key] = causes
        if "unexplained" in causes or not paths:
            unexplained[key] = causes.get("unexplained", ["pods replaced with no template change"])
    changed_credentials = sorted(
        key
        for key, obj in before.objects.items()
        if obj["kind"] == "Secret"
        and _managed(obj)
        and key.endswith("-auth")
        and key in after.objects
        and not _credentials_kept(obj.get("data") or {}, after.objects[key].get("data") or {})
    )
    status_lost: list[str] = []
    for key, sp in before.profiles.items():
        new = after.profiles[key]
        old_budget = (sp.get("status") or {}).get("budget") or {}
        new_budget = (new.get("status") or {}).get("budget") or {}
        if old_budget.get("plannedSince") != new_budget.get("plannedSince"):
            status_lost.append(f"{key}: budget.plannedSince")
        now = _conditions(new)
        ns, name = key.split("/", 1)
        # a workload that rolled out made its conditions (and Ready) pass
        # through False: their times are new, rightly
        rolled = any(
            k.startswith(f"{ns}/")
            and before.objects[k]["metadata"].get("labels", {}).get("app.kubernetes.io/instance")
            == name
            for k in restarts
        )
        for kind, cond in _conditions(sp).items():
            kept = now.get(kind)
            if kept is None:
                status_lost.append(f"{key}: condition {kind} gone")
            elif (
                not rolled
                and kept["status"] == cond["status"]
                and kept["lastTransitionTime"] != cond["lastTransitionTime"]
            ):
                status_lost.append(f"{key}: {kind}.lastTransitionTime")
    images = {
        key: [before_image, after_image]
        for key, obj in before.objects.items()
        if obj["kind"] in WORKLOADS and key in after.objects
        for before_image, after_image in zip(
            _images(obj), _images(after.objects[key]), strict=False
        )
        if before_image != after_image
    }
    return {
        "pods_compared": sum(len(uids) for uids in before.pods.values()),
        "deleted": deleted,
        "images_changed": images,
        "restarts": restarts,
        "unexplained_restarts": unexplained,
        "changed_credentials": changed_credentials,
        "status_lost": status_lost,
    }
