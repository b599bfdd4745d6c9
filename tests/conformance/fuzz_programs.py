"""The real programs as judges of what fuzzed profiles render: every distinct
pgbouncer.ini in PgBouncer (Debian's 1.18, and the default image's 1.26 from
Debian's archive when it can be had), every distinct redis.conf in redis-server 7.0, every
distinct rule file in ``promtool check rules``, every distinct bucket agent
config through the agent into a real versitygw (bucket names and CORS).

A config is accepted when the program starts with it (PgBouncer, Redis: then
it is stopped) or says so (promtool, versitygw), and PgBouncer logs no
parameter it ignored. Each judge returns None or the program's own words.

Used by tests/conformance/test_fuzz_programs.py and bench/fuzz.py (``make
fuzz``); like servers.py it does not import pytest. Everything listens on
127.0.0.1, in private temp dirs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis_servers
import s3_servers
import servers
from tests import certs
from tests.fuzzing import oracle

from headroom.agent import bucket
from headroom.builders import redis
from headroom.planning import versitygw

# What PgBouncer logs when it skips a line it does not take (and starts anyway).
_IGNORED = re.compile(
    r"unknown parameter|invalid value|syntax error|WARNING.*(ignor|invalid)", re.I
)
_RULE_BATCH = 200
START_TIMEOUT_SECONDS = 30


@dataclasses.dataclass
class Judges:
    """The programs, found once; ``workdir`` holds the files every config names."""

    tools: servers.Tools
    bouncers: dict[tuple[int, int], Path]  # major.minor -> pgbouncer
    redis: Path
    promtool: Path
    workdir: Path
    versitygw: Path | None = None
    gateway: s3_servers.VersityGW | None = None

    @classmethod
    @contextlib.contextmanager
    def found(cls, *, default_pgbouncer: bool, versitygw: Path | None) -> Iterator[Judges]:
        """The judges; with ``default_pgbouncer``, PgBouncer of the default image's
        release beside Debian's 1.18 (when hack/build-pgbouncer.sh cannot have it,
        the 1.18 judge still runs)."""
        tools = servers.find_tools()
        redis = redis_servers.find_redis().server
        promtool = shutil.which("promtool") or "/usr/bin/promtool"
        workdir = Path(tempfile.mkdtemp(prefix="headroom-fuzz-"))
        bouncers = {servers.pgbouncer_version(tools.pgbouncer): tools.pgbouncer}
        if default_pgbouncer:
            with contextlib.suppress(servers.ToolsMissingError):
                built = servers.default_pgbouncer(workdir, tools.owner)
                bouncers[servers.pgbouncer_version(built)] = built
        judges = cls(tools, bouncers, redis, Path(promtool), workdir, versitygw)
        try:
            judges._prepare()
            yield judges
        finally:
            if judges.gateway is not None:
                judges.gateway.stop()
            shutil.rmtree(workdir, ignore_errors=True)

    def _prepare(self) -> None:
        _, ca = certs.ca("headroom-fuzz-ca")
        for name, text in (("ca.crt", certs.pem(ca)), ("userlist.txt", '"app" "app"\n')):
            servers.write_private(self.workdir / name, text, self.tools.owner)
        if self.tools.owner is not None:
            os.chown(self.workdir, *self.tools.owner)

    # -- PgBouncer ----------------------------------------------------------------

    def bouncer_for(self, version: tuple[int, int]) -> Path | None:
        """The oldest PgBouncer here that knows every setting of ``version``."""
        fit = sorted(v for v in self.bouncers if v >= version)
        return self.bouncers[fit[0]] if fit else None

    def pgbouncer(self, ini: str, include: str, version: tuple[int, int]) -> str | None:
        binary = self.bouncer_for(version)
        if binary is None:
            return None
        for _ in range(3):  # a port taken between choosing it and binding it: again
            folder = self._private("pgbouncer-")
            include_path = folder / "include.ini"
            if include:
                servers.write_private(include_path, include, self.tools.owner)
            text = ini.replace(oracle.AUTH_FILE, str(self.workdir / "userlist.txt"))
            text = text.replace(oracle.CA_FILE, str(self.workdir / "ca.crt"))
            text = text.replace(oracle.INCLUDE_FILE, str(include_path))
            text = re.sub(r"(?m)^listen_port = \d+$", f"listen_port = {servers.free_port()}", text)
            config = servers.write_private(folder / "pgbouncer.ini", text, self.tools.owner)
            up, log = _started(
                [str(binary), str(config)], folder, ready="process up", run_as=self.tools.run_as
            )
            if "Address already in use" not in log:
                break
        if not up:
            return f"PgBouncer {binary} refused it:\n{log[-3000:]}\n--- pgbouncer.ini ---\n{text}"
        ignored = [line for line in log.splitlines() if _IGNORED.search(line)]
        return f"PgBouncer {binary} ignored: {ignored}\n{ini}" if ignored else None

    # -- Redis -------------------------------------------------------------------------

    def redis_conf(self, conf: str) -> str | None:
        for _ in range(3):
            folder = self._private("redis-")
            text = conf.replace(oracle.DATA_DIR, str(folder))
            # Debian's redis-server is built without the jemalloc active defrag
            # needs (the redis image Headroom runs has it; test_redis.py shows
            # it on a build that does): here it proves the key parses.
            text = text.replace("\nactivedefrag yes\n", "\nactivedefrag no\n")
            text = re.sub(r"(?m)^port \d+$", f"port {servers.free_port()}", text)
            (folder / "auth.conf").write_text(redis.render_auth("fuzz-password-0123456789"))
            (folder / "redis.conf").write_text(text)
            up, log = _started(
                [str(self.redis), str(folder / "redis.conf")],
                folder,
                ready="Ready to accept connections",
            )
            if "Address already in use" not in log:
                break
        return (
            None if up else f"redis-server refused it:\n{log[-3000:]}\n--- redis.conf ---\n{text}"
        )

    def _private(self, prefix: str) -> Path:
        folder = Path(tempfile.mkdtemp(prefix=prefix, dir=self.workdir))
        if self.tools.owner is not None:
            os.chown(folder, *self.tools.owner)
        return folder

    # -- promtool ------------------------------------------------------------------------

    def rules(self, files: list[str]) -> list[str | None]:
        """``promtool check rules`` on each rule file (in batches)."""
        verdicts: list[str | None] = []
        for start in range(0, len(files), _RULE_BATCH):
            batch = files[start : start + _RULE_BATCH]
            paths = []
            for index, text in enumerate(batch):
                path = self.workdir / f"rules-{start + index}.yaml"
                path.write_text(text)
                paths.append(path)
            done = subprocess.run(
                [str(self.promtool), "check", "rules", *map(str, paths)],
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            verdicts += _per_file(done.stdout, done.stderr, paths)
            for path in paths:
                path.unlink()
        return verdicts

    # -- the bucket agent and versitygw ----------------------------------------------------------

    def buckets(self, config_json: str) -> str | None:
        """One pass of the bucket agent with this buckets.json against a real
        versitygw (started once): every bucket created and its CORS accepted."""
        if self.versitygw is None:
            return None
        if self.gateway is None:
            self.gateway = s3_servers.VersityGW(self.versitygw).start()
        gateway = self.gateway
        config = versitygw.BucketServerConfig.model_validate_json(config_json).model_copy(
            update={
                "s3_endpoint": gateway.endpoint,
                "admin_endpoint": gateway.admin_endpoint,
                "ready_file": str(self.workdir / "provisioned"),
            }
        )
        keys = bucket.Keys(
            root_access_key=gateway.root.access_key,
            root_secret_key=gateway.root.secret_key,
            app_secret_key="fuzz-app-secret-0123456789abcdef",
        )
        try:
            bucket.Agent(config=config, keys=keys).step()
        except Exception as err:  # any failure is the verdict
            return f"versitygw or the agent refused it: {type(err).__name__}: {err}"
        return None


def _started(
    argv: list[str], folder: Path, *, ready: str, run_as: Mapping[str, Any] | None = None
) -> tuple[bool, str]:
    """Run a server until its log says ``ready`` (True) or it exits (False),
    then stop it; its log either way. Cheaper than a client's probe: thousands
    of configs go through this."""
    log_path = folder / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv, cwd=folder, stdout=log, stderr=subprocess.STDOUT, **dict(run_as or {})
        )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    try:
        while True:
            text = log_path.read_text(errors="replace")
            if ready in text:
                return True, text
            if process.poll() is not None or time.monotonic() > deadline:
                return False, log_path.read_text(errors="replace")
            time.sleep(0.02)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def judge_all(
    check: Callable[..., str | None], items: Iterable[tuple[Any, ...]], *, workers: int = 4
) -> list[str | None]:
    """``check(*item)`` for every item, a few at once (each mostly waits on a process)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda item: check(*item), items))


def _per_file(stdout: str, stderr: str, paths: list[Path]) -> list[str | None]:
    """promtool's verdict on each file: None (SUCCESS on stdout) or the lines
    it wrote about the file on stderr (``<file>: <what is wrong>``)."""
    verdicts: list[str | None] = []
    for path in paths:
        start = stdout.find(f"Checking {path}")
        if start < 0:
            verdicts.append(f"promtool said nothing about {path}: {stdout[-1000:]}{stderr[-1000:]}")
            continue
        end = stdout.find("Checking ", start + 1)
        if "SUCCESS" in stdout[start : end if end > 0 else None]:
            verdicts.append(None)
            continue
        said = [line for line in stderr.splitlines() if str(path) in line]
        verdicts.append("promtool check rules: " + ("\n".join(said) or stderr[-2000:]))
    return verdicts
