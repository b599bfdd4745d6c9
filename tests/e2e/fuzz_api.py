"""The real API server as the third judge of a fuzzed profile: a server-side
dry run of the body against the installed CRD, compared with the model.

Model and CRD must agree both ways: what :func:`headroom.api.v1alpha1.parse_profile`
accepts, the API server accepts, and what it refuses, the API server refuses
(the CRD's schema and CEL rules; the webhook is the planner's, and is looked
past: a webhook's denial means the schema accepted). What the API server
stores (defaults filled in) must plan exactly as what was sent.

One keep-alive HTTPS connection with the kubeconfig's credentials, so a dry run
costs milliseconds (bench/fuzz.py sends thousands). Used by
tests/e2e/test_fuzz_api.py and bench/fuzz.py; no pytest here.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pydantic
from tests.fuzzing import oracle

from headroom.api import v1alpha1
from headroom.kube import kubeconfig
from headroom.planning import planner

WEBHOOK_DENIAL = "admission webhook"


@dataclasses.dataclass(frozen=True)
class Verdict:
    accepted: bool
    status: int
    message: str = ""
    stored: dict[str, Any] | None = None  # the object as the API server would store it


@dataclasses.dataclass(frozen=True)
class Disagreement:
    kind: str  # "model-only-refuses", "crd-only-refuses", "stored-plans-otherwise"
    model: str
    api: str
    body: Any

    def __str__(self) -> str:
        return (
            f"{self.kind}\n  model: {self.model[:600]}\n  API server: {self.api[:600]}\n"
            f"  body: {oracle.dump(self.body)[:3000]}"
        )


class DryRun:
    """Server-side dry-run creates of ScalingProfiles in one namespace."""

    def __init__(self, path: str, namespace: str) -> None:
        cfg = kubeconfig.from_kubeconfig(Path(path))
        url = urllib.parse.urlsplit(cfg.server)
        self._host, self._port = url.hostname or "127.0.0.1", url.port or 443
        self._ssl = cfg.ssl_context
        self._auth = cfg.credentials.header()
        self.namespace = namespace
        self._path = (
            f"/apis/{v1alpha1.GROUP}/{v1alpha1.VERSION}/namespaces/{namespace}/"
            f"{v1alpha1.PLURAL}?dryRun=All&fieldValidation=Strict"
        )
        self._conn: http.client.HTTPSConnection | None = None

    def _connection(self) -> http.client.HTTPSConnection:
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                self._host, self._port, context=self._ssl, timeout=60
            )
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, method: str, path: str, body: Any, content_type: str) -> tuple[int, Any]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        data = json.dumps(body).encode() if body is not None else None
        conn = self._connection()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        try:
            return response.status, json.loads(payload)
        except ValueError:
            return response.status, {}

    def prepare(self, crd: dict[str, Any], *, timeout: float = 60) -> None:
        """Server-side apply ``crd`` (our CRD), wait until it is served, and make
        the namespace (``make fuzz`` runs without the e2e fixtures)."""
        name = crd["metadata"]["name"]
        path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
        status, answer = self._call(
            "PATCH", f"{path}?fieldManager=headroom-fuzz&force=true", crd,
            "application/apply-patch+yaml",
        )  # fmt: skip
        if status not in (200, 201):
            raise RuntimeError(f"applying the CRD: {status} {answer.get('message')}")
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}
        status, answer = self._call("POST", "/api/v1/namespaces", namespace, "application/json")
        if status not in (201, 409):
            raise RuntimeError(f"creating namespace {self.namespace}: {answer.get('message')}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, found = self._call("GET", path, None, "application/json")
            established = [
                c for c in (found.get("status") or {}).get("conditions") or []
                if c.get("type") == "Established" and c.get("status") == "True"
            ]  # fmt: skip
            listed, _ = self._call("GET", self._path.split("?")[0], None, "application/json")
            if established and listed == 200:
                return
            time.sleep(0.2)
        raise TimeoutError(f"CRD {name} not served after {timeout:g}s")

    def create(self, body: Any) -> Verdict:
        """The API server's verdict on creating ``body`` (namespace set to ours)."""
        if isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            body = {**body, "metadata": {**body["metadata"], "namespace": self.namespace}}
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._auth:
            headers["Authorization"] = self._auth
        for attempt in range(2):  # a keep-alive connection the server closed: once more
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=data, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                break
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt:
                    raise
        try:
            answer = json.loads(payload)
        except ValueError:
            answer = {"message": payload.decode(errors="replace")}
        if response.status in (200, 201):
            return Verdict(True, response.status, stored=answer)
        message = str(answer.get("message", ""))
        # the schema accepted; the webhook (the planner) refused
        accepted = WEBHOOK_DENIAL in message
        return Verdict(accepted, response.status, message)


def compare(dry_run: DryRun, body: Any) -> Disagreement | None:
    """Where the model and the API server disagree on ``body`` (None: they agree)."""
    try:
        profile = v1alpha1.parse_profile(body)
        model = ""
    except v1alpha1.ProfileError as err:
        profile, model = None, str(err)
    verdict = dry_run.create(body)
    if profile is None and verdict.accepted:
        return Disagreement("model-only-refuses", model, "accepted", body)
    if profile is not None and not verdict.accepted:
        return Disagreement("crd-only-refuses", "accepted", verdict.message, body)
    if profile is not None and verdict.stored is not None:
        stored = {**verdict.stored, "metadata": {**body["metadata"]}}
        try:
            again = v1alpha1.parse_profile(stored)
        except v1alpha1.ProfileError as err:
            return Disagreement("stored-plans-otherwise", "accepted", str(err), body)
        mine, theirs = planner.plan(profile), planner.plan(again)
        if mine != theirs:
            return Disagreement("stored-plans-otherwise", *_difference(mine, theirs), body)
    return None


def _difference(mine: Any, theirs: Any, path: str = "plan") -> tuple[str, str]:
    """The deepest field of two plans that differs, as each has it."""
    if dataclasses.is_dataclass(mine) and type(mine) is type(theirs):
        names = [f.name for f in dataclasses.fields(mine)]
    elif isinstance(mine, pydantic.BaseModel) and type(mine) is type(theirs):
        names = list(type(mine).model_fields)
    else:
        return f"{path}: {mine!r}", f"{path}: {theirs!r}"
    for name in names:
        a, b = getattr(mine, name), getattr(theirs, name)
        if a != b:
            return _difference(a, b, f"{path}.{name}")
    return f"{path}: {mine!r}", f"{path}: {theirs!r}"
