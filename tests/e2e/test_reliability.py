"""Reliability: the operator killed (-9) at random moments while profiles
converge, the API server down for a minute in the middle of a change, and
drift on every child kind. The end state must equal a clean run's.

Bounded for CI (20 profiles, 5 kills, a 60 s outage); ``make chaos`` runs the
same test with HEADROOM_CHAOS_PROFILES=100 HEADROOM_CHAOS_KILLS=20 and writes
the measurements to HEADROOM_CHAOS_REPORT.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import copy
import json
import os
import random
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apps
import kube
import operator_process
import pytest
import yaml

from headroom.api import v1alpha1
from headroom.builders import desired
from headroom.planning import credentials, planner

REPO = Path(__file__).resolve().parents[2]
PROFILES = int(os.environ.get("HEADROOM_CHAOS_PROFILES", "20"))
KILLS = int(os.environ.get("HEADROOM_CHAOS_KILLS", "5"))
OUTAGE_SECONDS = int(os.environ.get("HEADROOM_CHAOS_OUTAGE_SECONDS", "60"))
# How long every fifth operator process leads between two kills (the others 0.5-3 s).
LONG_LIFE = (8.0, 12.0)
# A process that leads longer than this before its kill has passed every
# profile (restarts "more than a few seconds apart"); the first process, which
# saw the profiles created, is not a restart's.
FEW_SECONDS = 5.0
REPORT = os.environ.get("HEADROOM_CHAOS_REPORT", "")
OWNED = (
    "configmaps",
    "secrets",
    "services",
    "deployments.apps",
    "statefulsets.apps",
    "poddisruptionbudgets.policy",
    "networkpolicies.networking.k8s.io",
    "horizontalpodautoscalers.autoscaling",
    # the write pooler's agent: its identity and what it may read and report
    "serviceaccounts",
    "roles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
)
KEDA_KINDS = ("scaledobjects.keda.sh", "triggerauthentications.keda.sh")


def _profile(namespace: str) -> dict[str, Any]:
    """examples/shop-scaled.yaml on the e2e app (no PVC: there is no provisioner)."""
    body: dict[str, Any] = yaml.safe_load((REPO / "examples" / "shop-scaled.yaml").read_text())
    body["metadata"]["namespace"] = namespace
    body["spec"]["app"]["deployment"] = apps.APP_NAME
    body["spec"]["database"]["credentialsSecret"]["name"] = apps.CREDENTIALS
    body["spec"]["database"]["host"] = "shop-db"  # its own server: profiles share none
    for instance in body["spec"]["cache"]["instances"]:
        instance.pop("persistence", None)
    return body


def _labels(line: str, prefix: str) -> dict[str, str]:
    inside = line[len(prefix) : line.index("}")]
    return {k: v.strip('"') for k, v in (part.split("=", 1) for part in inside.split(","))}


def _passed(
    operator: operator_process.OperatorProcess, namespaces: list[str]
) -> tuple[set[str], collections.Counter[str]]:
    """The profiles (namespaces) the running process ended a pass of, and its
    passes by result (a confirmation, or a pass that waits for a server's
    first answer, is a pass: the profile was taken from the queue and run)."""
    last_pass = "headroom_profile_last_pass_timestamp_seconds{"
    passes = "headroom_passes_total{"
    seen, results = set(), collections.Counter[str]()
    for line in operator.metrics().splitlines():
        if line.startswith(last_pass):
            seen.add(_labels(line, last_pass)["namespace"])
        elif line.startswith(passes):
            results[_labels(line, passes)["result"]] += int(float(line.rsplit(" ", 1)[1]))
    return seen & set(namespaces), +results


def _expected(body: dict[str, Any], *, keda: bool) -> tuple[set[str], set[str]]:
    """Keys of the children and of the binding a clean run ends with."""
    planned = planner.plan(v1alpha1.parse_profile(body), facts=planner.Facts(keda=keda))
    creds = credentials.Credentials(
        username="u",
        password="p",
        stats_password="s",
        revision="1",
        redis_passwords={r.name: "x" * 24 for r in planned.redis},
    )
    objects = desired.build(planned, creds, app_pod_selector={"matchLabels": apps.APP_LABELS})
    binding = objects[f"Secret/{body['metadata']['name']}-binding"]
    return set(objects), set(binding["data"])


def _children(kubectl: kube.Kubectl, namespace: str, *, keda: bool) -> list[dict[str, Any]]:
    kinds = [*OWNED, *KEDA_KINDS] if keda else list(OWNED)
    # Right after an API server restart, discovery may lack custom kinds for a
    # moment, and kubectl would cache that for minutes: a fresh cache each time.
    found = kube.wait_for(
        lambda: kube.get_json(
            kubectl,
            ",".join(kinds),
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/managed-by=headroom",
            f"--cache-dir={tempfile.mkdtemp(prefix='kubectl-cache-')}",
        ),
        timeout=60,
        what=f"a listing of {namespace}",
    )
    items: list[dict[str, Any]] = found["items"]
    return items


def _all_ready(kubectl: kube.Kubectl, namespaces: list[str]) -> bool:
    listed = kube.get_json(kubectl, "scalingprofiles", "-A")["items"]
    mine = [p for p in listed if p["metadata"]["namespace"] in namespaces]
    return len(mine) == len(namespaces) and all(
        kube.condition(p, "Ready") == "True"
        and p["status"].get("observedGeneration") == p["metadata"]["generation"]
        for p in mine
    )


def _results(results: collections.Counter[str]) -> str:
    return ", ".join(f"{count} {result}" for result, count in sorted(results.items()))


@contextlib.contextmanager
def _namespaces(kubectl: kube.Kubectl, count: int) -> Iterator[list[str]]:
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(kube.fresh_namespace(kubectl)) for _ in range(count)]


def _report(section: str, lines: list[str]) -> None:
    text = f"## {section}\n\n" + "\n".join(lines) + "\n\n"
    print(text)
    if REPORT:
        path = Path(REPORT)
        if not path.exists():
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            path.write_text(
                "# Reliability (`make chaos`)\n\n"
                f"Run {stamp} on {os.cpu_count()} cores, local control plane (kwok nodes); "
                f"{PROFILES} profiles of examples/shop-scaled.yaml without its PVC.\n\n"
            )
        with path.open("a") as handle:
            handle.write(text)


def test_converges_through_kills_and_an_api_server_outage(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    local_cluster_dir: Path | None,
) -> None:
    rng = random.Random(int(os.environ.get("HEADROOM_CHAOS_SEED", "8")))
    with _namespaces(kubectl, PROFILES) as namespaces:
        tenants = [o for ns in namespaces for o in (apps.app_deployment(ns), apps.credentials(ns))]
        kube.apply(kubectl, *tenants)
        started = time.monotonic()
        kube.apply(kubectl, *(_profile(ns) for ns in namespaces))
        kills = []
        lives: list[float] = []  # seconds each process led
        passes: list[tuple[set[str], collections.Counter[str]]] = []  # before its kill
        led_from = time.monotonic()
        for kill in range(1, KILLS + 1):
            # a random moment of the convergence; every fifth process lives longer
            time.sleep(rng.uniform(*(LONG_LIFE if kill % 5 == 0 else (0.5, 3.0))))
            passes.append(_passed(operator, namespaces))
            lives.append(time.monotonic() - led_from)
            kills.append(round(time.monotonic() - started, 1))
            operator.kill_and_restart()
            led_from = time.monotonic()
        # No profile starves behind the others across restarts: a restarted
        # process that leads more than a few seconds passes every profile (when
        # every restart started from the same end, or worked again on the ones
        # it had just passed, the back of the queue got nothing)
        restarts = list(zip(lives[1:], passes[1:], strict=True))
        judged = [(led, seen, results) for led, (seen, results) in restarts if led > FEW_SECONDS]
        assert judged, f"no restarted process led more than {FEW_SECONDS:g} s"
        starved = [(round(led, 1), len(seen)) for led, seen, _ in judged if len(seen) < PROFILES]
        assert starved == [], (
            f"restarted processes that led more than {FEW_SECONDS:g} s and left profiles "
            f"without a pass (seconds led, profiles passed of {PROFILES}): {starved}"
        )
        kube.wait_for(
            lambda: _all_ready(kubectl, namespaces),
            timeout=600,
            interval=2,
            what=f"{PROFILES} profiles Ready after {KILLS} kills",
        )
        converged = time.monotonic() - started

        # A change to every profile, then the API server goes away mid-way.
        changed = [copy.deepcopy(_profile(ns)) for ns in namespaces]
        for body in changed:
            body["spec"]["pooler"]["parameters"] = {"server_idle_timeout": "321"}
        kube.apply(kubectl, *changed)
        outage = "not run (not the local control plane)"
        if local_cluster_dir is not None:
            time.sleep(rng.uniform(0.0, 0.2))  # while the passes of the change run
            env = {**os.environ, "CLUSTER_DIR": str(local_cluster_dir)}
            subprocess.run(
                [
                    str(REPO / "hack" / "cluster.sh"),
                    "outage",
                    "kube-apiserver",
                    str(OUTAGE_SECONDS),
                ],
                env=env,
                check=True,
                capture_output=True,
            )
            outage = f"{OUTAGE_SECONDS} s"
        back = time.monotonic()

        def changed_everywhere() -> bool:
            found = kube.get_json(
                kubectl, "configmaps", "-A", "-l", "app.kubernetes.io/component=pooler"
            )["items"]
            done = {
                c["metadata"]["namespace"]
                for c in found
                # the agents' state ConfigMaps carry the label too, without a config
                if "server_idle_timeout = 321" in (c.get("data") or {}).get("pgbouncer.ini", "")
            }
            return set(namespaces) <= done

        kube.wait_for(
            changed_everywhere,
            timeout=600,
            interval=0.5,
            what="every profile's ConfigMap to take the change after the outage",
        )
        applied = time.monotonic() - back
        kube.wait_for(
            lambda: _all_ready(kubectl, namespaces),
            timeout=600,
            interval=2,
            what="every profile Ready again after the outage",
        )
        recovered = time.monotonic() - back
        assert operator.alive(), "the operator died in the outage:\n" + operator.log_tail()
        # The controller-manager's controllers come back at their own pace (their
        # reflectors and rate-limited queues back off while the API server is
        # away): the next test needs a namespace's default ServiceAccount, so the
        # outage ends when a new namespace gets one.
        with kube.fresh_namespace(kubectl, timeout=300):
            controllers = time.monotonic() - back

        # The end state of a clean run: exactly the desired children, owned by
        # their profile, and bindings with exactly the desired keys.
        # KEDA counts as installed when both its kinds are (test_controlplane
        # leaves ScaledObject alone behind: then the HPA fallback is right)
        keda = all(kube.exists(kubectl, "crd", k.split(".", 1)[0] + ".keda.sh") for k in KEDA_KINDS)
        for ns, body in zip(namespaces, changed, strict=True):
            profile = kube.get_json(kubectl, "scalingprofile", "shop", "-n", ns)
            want_children, want_binding = _expected(body, keda=keda)
            children = _children(kubectl, ns, keda=keda)
            keys = [f"{c['kind']}/{c['metadata']['name']}" for c in children]
            assert len(keys) == len(set(keys)), f"duplicates in {ns}: {keys}"
            assert set(keys) == want_children, f"{ns}: {set(keys) ^ want_children}"
            orphans = [
                k
                for k, c in zip(keys, children, strict=True)
                if [r["uid"] for r in c["metadata"].get("ownerReferences") or []]
                != [profile["metadata"]["uid"]]
            ]
            assert orphans == [], f"children not owned by their profile in {ns}: {orphans}"
            secret = kube.get_json(kubectl, "secret", "shop-binding", "-n", ns)
            assert set(secret["data"]) == want_binding
            assert (
                base64.b64decode(secret["data"]["DATABASE_URL_POOLED"])
                .decode()
                .startswith("postgresql://")
            )
        assert "Traceback" not in operator.log_path.read_text()
        _report(
            f"Kills and an API server outage ({PROFILES} profiles)",
            [
                f"- {KILLS} kill -9 of the operator at {kills} s; "
                f"all Ready after {converged:.1f} s",
                f"- every restart that left the new process leading more than {FEW_SECONDS:g} s "
                "before the next kill: it passed every profile (seconds it led: profiles "
                "passed; its passes by result): "
                + "; ".join(
                    f"{led:.1f} s: {len(seen)}/{PROFILES} ({_results(results)})"
                    for led, seen, results in judged
                ),
                "- the other restarts (seconds led: profiles passed): "
                + ", ".join(
                    f"{led:.1f} s: {len(seen)}/{PROFILES}"
                    for led, (seen, _) in restarts
                    if led <= FEW_SECONDS
                )
                + f"; the first process (it saw the profiles created, then led "
                f"{lives[0]:.1f} s): {len(passes[0][0])}/{PROFILES}",
                f"- API server outage: {outage}; every ConfigMap had the change "
                f"{applied:.1f} s after it was back, every profile Ready (pods rolled by "
                f"the controller-manager and kwok) after {recovered:.1f} s; a new "
                f"namespace's default ServiceAccount (the controller-manager's "
                f"serviceaccount controller) after {controllers:.1f} s",
                f"- end state: {PROFILES} x {len(want_children)} children exactly as desired, "
                "0 duplicates, 0 orphans, every binding with exactly the desired keys",
            ],
        )


def _drift_cases(namespace: str) -> list[tuple[str, str, list[str]]]:
    """(what, kind/name, kubectl args that cause the drift)."""
    hash_key = "headroom.dev~1applied-hash"
    edits = [
        ("configmap", "shop-pooler-config"),
        ("secret", "shop-binding"),
        ("service", "shop-pooler-rw"),
        ("deployment", "shop-pooler"),
        ("statefulset", "shop-redis-cache"),
        ("poddisruptionbudget", "shop-pooler"),
        ("networkpolicy", "shop-redis-cache"),
        ("horizontalpodautoscaler", "shop-app"),
    ]
    cases = []
    for kind, name in edits:
        patch = json.dumps(
            [{"op": "replace", "path": f"/metadata/annotations/{hash_key}", "value": "x"}]
        )
        cases.append(
            (
                f"{kind} edited",
                f"{kind}/{name}",
                ["patch", kind, name, "-n", namespace, "--type=json", "-p", patch],
            )
        )
        cases.append(
            (
                f"{kind} deleted",
                f"{kind}/{name}",
                ["delete", kind, name, "-n", namespace, "--wait=false"],
            )
        )
    return cases


def test_drift_on_every_child_kind_is_repaired(
    operator: operator_process.OperatorProcess, kubectl: kube.Kubectl, namespace: str
) -> None:
    kube.apply(kubectl, apps.app_deployment(namespace), apps.credentials(namespace))
    kube.apply(kubectl, _profile(namespace))
    kubectl(
        "wait", "--for=condition=Ready", "scalingprofile/shop", "-n", namespace, "--timeout=120s"
    )
    timings = []
    for what, ref, args in _drift_cases(namespace):
        before = kube.get_json(kubectl, ref, "-n", namespace)
        wanted = before["metadata"]["annotations"]["headroom.dev/applied-hash"]
        started = time.monotonic()
        kubectl(*args)

        def repaired(
            ref: str = ref,
            uid: str = before["metadata"]["uid"],
            deleted: bool = "deleted" in what,
            wanted: str = wanted,
        ) -> bool:
            now = kube.get_json(kubectl, ref, "-n", namespace)
            same = now["metadata"]["annotations"].get("headroom.dev/applied-hash") == wanted
            return same and (now["metadata"]["uid"] != uid if deleted else True)

        kube.wait_for(repaired, timeout=30, interval=0.1, what=f"{what} to be repaired")
        timings.append((what, time.monotonic() - started))
    slowest = max(t for _, t in timings)
    _report(
        "Drift repair (one profile, operator idle)",
        [f"- {what}: {seconds:.2f} s" for what, seconds in timings]
        + [f"- slowest: {slowest:.2f} s"],
    )


@pytest.fixture
def local_cluster_dir(kubeconfig: str) -> Path | None:
    """The local control plane's state dir when the tests run on it (None on
    any other cluster: there is no API server process to stop)."""
    folder = Path(kubeconfig).parent
    is_local = (folder / ".headroom-cluster").exists() and (folder / "cmd").is_dir()
    return folder if is_local else None


def test_the_standby_takes_over_when_the_leader_dies(
    operator: operator_process.OperatorProcess,
    kubectl: kube.Kubectl,
    namespace: str,
    tmp_path: Path,
) -> None:
    kube.apply(kubectl, apps.app_deployment(namespace), apps.credentials(namespace))
    kube.apply(kubectl, _profile(namespace))
    kubectl(
        "wait", "--for=condition=Ready", "scalingprofile/shop", "-n", namespace, "--timeout=120s"
    )
    # A second replica; this one runs without admission (HEADROOM_WEBHOOK_ENABLED=false).
    second = operator_process.standby(operator, tmp_path, HEADROOM_WEBHOOK_ENABLED="false")
    try:
        kube.wait_for(
            lambda: second.metric("headroom_leader") == 0,
            timeout=60,
            what="the second replica to run as a standby",
        )
        # The leader dies without a word (kill -9): its lease runs out first.
        operator.kill()
        died = time.monotonic()
        kube.wait_for(
            lambda: second.metric("headroom_leader") == 1,
            timeout=60,
            interval=0.2,
            what="the standby to take the lease",
        )
        took_over = time.monotonic() - died
        # Admission is off on the new leader: it removed the dead one's configuration.
        kube.wait_for(
            lambda: not kube.exists(kubectl, "validatingwebhookconfiguration", "headroom.dev"),
            timeout=30,
            what="the webhook configuration to go",
        )
        body = _profile(namespace)
        body["spec"]["pooler"]["parameters"] = {"server_idle_timeout": "222"}
        changed = time.monotonic()
        kube.apply(kubectl, body)
        kube.wait_for(
            lambda: (
                "server_idle_timeout = 222"
                in kube.get_json(kubectl, "configmap", "shop-pooler-config", "-n", namespace)[
                    "data"
                ]["pgbouncer.ini"]
            ),
            timeout=60,
            interval=0.2,
            what="the new leader to apply a change",
        )
        applied = time.monotonic() - changed
        # The first replica comes back as the standby; a graceful stop of the
        # leader hands the lease over at once.
        operator.kill_and_restart(wait_for_lease=False)
        kube.wait_for(
            lambda: operator.metric("headroom_leader") == 0,
            timeout=60,
            what="the restarted replica to wait as the standby",
        )
        second.proc.terminate()
        handed = time.monotonic()
        operator.wait_leader()
        handed_over = time.monotonic() - handed
        kube.wait_for(
            lambda: kube.exists(kubectl, "validatingwebhookconfiguration", "headroom.dev"),
            timeout=30,
            what="the webhook to be registered again by the new leader",
        )
    finally:
        if second.alive():
            second.proc.kill()
    assert second.proc.wait(timeout=30) == 0, second.log_tail()
    _report(
        "Leader failover (two replicas)",
        [
            f"- leader killed (-9): the standby held the lease after {took_over:.1f} s "
            "(lease duration 15 s) and applied a spec change "
            f"{applied:.2f} s after it was made",
            f"- graceful stop of the leader: the other replica led after {handed_over:.1f} s",
        ],
    )
