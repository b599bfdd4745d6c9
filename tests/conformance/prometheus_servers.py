"""Debian's Prometheus and the exporters Headroom's pods run (pgbouncer_exporter,
redis_exporter, postgres_exporter), on 127.0.0.1, for the alert tests.

The exporters are the versions of the default exporter images, built from the Go
module proxy into a version-keyed cache by hack/build-exporters.sh (built here
when absent; ``$HEADROOM_EXPORTERS`` names another folder holding them). An
exporter runs what the rendered pod's ``exporter`` container says
(:func:`container_command`: its args and env, the Secret keys it reads, with the
pod's 127.0.0.1 ports moved to the test's), so a flag or variable the builder
gets wrong fails here.

:class:`Prometheus` loads a rule file Headroom rendered, scrapes static targets
that carry the ``namespace``/``pod`` labels a Kubernetes scrape would give them
(the rules filter on those), and answers the HTTP API the tests poll for
pending/firing alerts. Every server listens on 127.0.0.1 only, on a free port,
in a private temp dir. Must not import pytest (like servers.py).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml
from prometheus_client.parser import text_string_to_metric_families
from servers import HOST, ServerError, ServerProcess, ToolsMissingError, free_port, private_dir

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-exporters.sh"
VERSIONS = REPO / "hack" / "versions.env"
LISTEN_FLAG = "--web.listen-address"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


# --- binaries ------------------------------------------------------------------


def versions() -> dict[str, str]:
    """hack/versions.env as a dict."""
    pairs = (
        line.split("=", 1)
        for line in VERSIONS.read_text().splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    )
    return {key.strip(): value.strip() for key, value in pairs}


def cached_exporters_dir() -> Path:
    found = versions()
    cache = Path(os.environ.get("HEADROOM_CACHE") or Path.home() / ".cache" / "headroom")
    return cache / (
        f"exporters-pgbouncer-{found['PGBOUNCER_EXPORTER_VERSION']}"
        f"-redis-{found['REDIS_EXPORTER_VERSION']}"
        f"-postgres-{found['POSTGRES_EXPORTER_VERSION']}"
    )


@dataclass(frozen=True)
class Exporters:
    pgbouncer: Path
    redis: Path
    postgres: Path


def find_exporters(*, build: bool = False) -> Exporters:
    """``$HEADROOM_EXPORTERS``, else the cached build (made by hack/build-exporters.sh
    when absent and ``build``); ToolsMissingError when a binary is missing."""
    override = os.environ.get("HEADROOM_EXPORTERS")
    folder = Path(override) if override else cached_exporters_dir()
    found = Exporters(
        folder / "pgbouncer_exporter", folder / "redis_exporter", folder / "postgres_exporter"
    )

    def present() -> bool:
        return all(os.access(p, os.X_OK) for p in (found.pgbouncer, found.redis, found.postgres))

    if not present() and build and not override:
        proc = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
        )
        if proc.returncode != 0:
            raise ToolsMissingError(
                f"hack/build-exporters.sh failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
    if not present():
        raise ToolsMissingError(f"no exporters in {folder} (run hack/build-exporters.sh)")
    return found


@dataclass(frozen=True)
class PrometheusTools:
    prometheus: Path
    promtool: Path


def find_prometheus() -> PrometheusTools:
    """Debian's prometheus and promtool (``$HEADROOM_PROMETHEUS``/``$HEADROOM_PROMTOOL``
    override); ToolsMissingError naming what is missing."""
    found = {}
    for name in ("prometheus", "promtool"):
        path = os.environ.get(f"HEADROOM_{name.upper()}") or shutil.which(name)
        if not path or not os.access(path, os.X_OK):
            raise ToolsMissingError(
                f"missing {name} (on PATH or $HEADROOM_{name.upper()}; "
                "on Debian: apt-get install prometheus)"
            )
        found[name] = Path(path)
    return PrometheusTools(**found)


# --- a rendered container, run here ----------------------------------------------


def secret_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """A rendered Secret's data, decoded."""
    data = obj.get("data") or {}
    out = {key: base64.b64decode(value).decode() for key, value in data.items()}
    out.update(obj.get("stringData") or {})
    return out


def container_command(
    container: Mapping[str, Any],
    *,
    secrets: Mapping[str, Mapping[str, str]],
    moved: Mapping[str, str],
) -> tuple[list[str], dict[str, str]]:
    """(args, env) of a rendered container as the kubelet would start it: env
    values from ``value`` or ``secretKeyRef`` (``secrets``: name -> key -> value),
    ``$(VAR)`` in args expanded from that env; then every ``moved`` address
    (a pod's ``127.0.0.1:6432``) replaced by the test's in args and env.
    Anything else (a fieldRef, an unknown Secret key) is an error."""
    env: dict[str, str] = {}
    for item in container.get("env") or []:
        if "value" in item:
            value = str(item["value"])
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            try:
                value = secrets[ref["name"]][ref["key"]]
            except KeyError:
                raise ServerError(
                    f"env {item['name']}: no key {ref['key']} in Secret {ref['name']}"
                ) from None
        env[item["name"]] = value

    def expand(text: str) -> str:
        return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), text)

    def move(text: str) -> str:
        for old, new in moved.items():
            text = text.replace(old, new)
        return text

    args = [
        move(expand(str(arg)))
        for arg in [*container.get("command", []), *container.get("args", [])]
    ]
    return args, {key: move(value) for key, value in env.items()}


class Exporter(ServerProcess):
    """An exporter binary on 127.0.0.1 with ``args`` and ``env`` (from
    :func:`container_command`); its listen address is the test's (a rendered
    ``--web.listen-address`` is replaced, else one is added)."""

    def __init__(
        self, binary: Path, args: Sequence[str], env: Mapping[str, str], *, name: str
    ) -> None:
        super().__init__(program=name, log_name=f"{name}.log", start_timeout=60)
        self.binary = binary
        self.args = [a for a in args if not a.startswith(LISTEN_FLAG)]
        self.env = dict(env)
        self.command: list[str] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> Self:
        self.dir = private_dir(f"headroom-{self.program}-")
        self._launch_until_ready(self._launch, what=f"{self.program} on port {{port}}", attempts=3)
        return self

    def _launch(self) -> None:
        self.port = free_port()
        self.command = [str(self.binary), *self.args, f"{LISTEN_FLAG}={self.address}"]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **self.env}
        self._spawn(self.command, env=env)

    def _port_taken(self) -> bool:
        return "address already in use" in self.log_text().lower()

    def _accepting(self) -> bool:
        try:
            return _get(self.address, "/metrics")[0] == 200
        except OSError:
            return False

    def current_config(self) -> str:
        """The command line, secrets masked (the env is not shown)."""
        return " ".join(re.sub(r"://[^@/]*@", "://***@", arg) for arg in self.command)

    def samples(self, name: str) -> list[tuple[dict[str, str], float]]:
        """The current samples of metric ``name`` (labels, value), scraped now."""
        status, body = _get(self.address, "/metrics")
        if status != 200:
            raise ServerError(f"{self.program} /metrics answered {status}")
        out = []
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == name:
                    out.append((dict(sample.labels), float(sample.value)))
        return out


def _get(address: str, path: str, timeout: float = 10) -> tuple[int, str]:
    host, port = address.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


# --- Prometheus -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A scrape target with the target labels Kubernetes service discovery would give it."""

    job: str
    address: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Alert:
    name: str
    state: str  # pending | firing
    labels: dict[str, str]
    annotations: dict[str, str]
    value: str

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Alert:
        labels = dict(raw["labels"])
        return cls(
            name=labels["alertname"],
            state=raw["state"],
            labels=labels,
            annotations=dict(raw.get("annotations") or {}),
            value=str(raw.get("value", "")),
        )


class Prometheus(ServerProcess):
    """Debian's prometheus on 127.0.0.1 with ``rules`` (file name -> rule-file text)
    and ``targets``; scrapes every ``scrape_interval`` and evaluates the rules every
    ``evaluation_interval`` seconds."""

    def __init__(
        self,
        binary: Path,
        *,
        rules: Mapping[str, str],
        targets: Sequence[Target],
        scrape_interval: float = 1,
        evaluation_interval: float = 1,
    ) -> None:
        super().__init__(program="prometheus", log_name="prometheus.log", start_timeout=60)
        self.binary = binary
        self.rules = dict(rules)
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.config_text = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def config(self) -> dict[str, Any]:
        jobs: dict[str, list[Target]] = {}
        for target in self.targets:
            jobs.setdefault(target.job, []).append(target)
        return {
            "global": {
                "scrape_interval": f"{self.scrape_interval:g}s",
                "scrape_timeout": f"{self.scrape_interval:g}s",
                "evaluation_interval": f"{self.evaluation_interval:g}s",
            },
            "rule_files": sorted(self.rules),
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [t.address], "labels": dict(t.labels)} for t in targets
                    ],
                }
                for job, targets in sorted(jobs.items())
            ],
        }

    def start(self) -> Self:
        self.dir = private_dir("headroom-prometheus-")
        for name, text in self.rules.items():
            self.in_dir(name).write_text(text)
        self.config_text = yaml.safe_dump(self.config(), sort_keys=False)
        self.in_dir("prometheus.yml").write_text(self.config_text)
        self._launch_until_ready(self._launch, what="prometheus on port {port}", attempts=3)
        return self

    def _launch(self) -> None:
        self.port = free_port()
        self._spawn(
            [
                str(self.binary),
                f"--config.file={self.in_dir('prometheus.yml')}",
                f"--storage.tsdb.path={self.in_dir(f'data-{self.port}')}",
                f"--web.listen-address={self.address}",
                "--log.level=info",
            ]
        )

    def _port_taken(self) -> bool:
        return "address already in use" in self.log_text().lower()

    def _accepting(self) -> bool:
        try:
            return _get(self.address, "/-/ready")[0] == 200
        except OSError:
            return False

    def current_config(self) -> str:
        return self.config_text

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; its ``data`` (ServerError unless status is success)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        status, body = _get(self.address, f"/api/v1/{path}{query}")
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise ServerError(f"prometheus /api/v1/{path}: {status} {body[:2000]}")
        return answer["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's vector as (labels, value)."""
        data = self.api("query", query=expr)
        return [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]

    def history(self, expr: str, *, seconds: float) -> list[tuple[dict[str, str], list[float]]]:
        """The timestamps (unix seconds) of the samples of a range-vector selector
        ``expr`` over the last ``seconds`` (e.g. an alert's ALERTS series, which
        Prometheus writes at every evaluation while it is pending or firing)."""
        data = self.api("query", query=f"{expr}[{max(1, round(seconds))}s]")
        return [(dict(r["metric"]), [float(ts) for ts, _ in r["values"]]) for r in data["result"]]

    def alerts(self) -> list[Alert]:
        return [Alert.parse(raw) for raw in self.api("alerts")["alerts"]]

    def rule_health(self) -> dict[str, str]:
        """Each loaded rule's name -> its health ("ok", "unknown" before the first
        evaluation, "err" with lastError otherwise)."""
        out = {}
        for group in self.api("rules")["groups"]:
            for rule in group["rules"]:
                name = rule.get("name", "")
                out[name] = (
                    rule["health"]
                    if rule["health"] != "err"
                    else f"err: {rule.get('lastError', '')}"
                )
        return out

    def targets_health(self) -> dict[str, str]:
        """scrape address -> health ("up", "down", "unknown")."""
        active = self.api("targets", state="active")["activeTargets"]
        return {t["labels"]["instance"]: t["health"] for t in active}

    def matching(self, name: str, **labels: str) -> list[Alert]:
        return [
            a
            for a in self.alerts()
            if a.name == name and all(a.labels.get(k) == v for k, v in labels.items())
        ]

    def wait_for_alert(
        self, name: str, *, state: str = "firing", timeout: float, **labels: str
    ) -> tuple[Alert, float]:
        """Until alert ``name`` (with ``labels``) is in ``state``; (the alert, seconds
        waited). TimeoutError with the alerts seen and the expression's value."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            found = [a for a in self.matching(name, **labels) if a.state == state]
            if found:
                return found[0], time.monotonic() - start
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"alert {name} {labels} not {state} after {timeout:g}s; alerts now: "
                    f"{[(a.name, a.state, a.value) for a in self.alerts()]}"
                )
            time.sleep(0.2)

    def wait_for_no_alert(self, name: str, *, timeout: float, **labels: str) -> float:
        """Until alert ``name`` (with ``labels``) is neither pending nor firing;
        the seconds waited."""
        start = time.monotonic()
        deadline = start + timeout
        while True:
            found = self.matching(name, **labels)
            if not found:
                return time.monotonic() - start
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"alert {name} {labels} still {[a.state for a in found]} after {timeout:g}s"
                )
            time.sleep(0.2)

    def wait_for_targets_up(self, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            health = self.targets_health()
            if health and all(h == "up" for h in health.values()):
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"scrape targets not all up after {timeout:g}s: {health}")
            time.sleep(0.2)
