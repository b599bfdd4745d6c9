"""A throwaway versitygw (the S3 server of the ``builtin`` storage provider) on
127.0.0.1, for the bucket conformance tests.

Like servers.py it must not import pytest. The binary is the cached build of
hack/build-versitygw.sh (``$HEADROOM_VERSITYGW`` overrides it);
``find_versitygw(build=True)`` runs that script when the cache is empty, so a
fresh machine's ``make test`` builds it (about two minutes on two cores).

``VersityGW`` runs it with the posix backend on a private temp dir, its root
credentials generated with ``secrets`` (or given), listening on a free port;
``localize`` turns a command Headroom renders into the same command with the
pod's paths and ports moved into that dir and onto 127.0.0.1, so a test runs
exactly what the StatefulSet would.
"""

from __future__ import annotations

import http.client
import os
import secrets
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from servers import (
    HOST,
    ServerError,
    ServerProcess,
    ToolsMissingError,
    free_port,
    private_dir,
    wait_until,
)

__all__ = [
    "HOST",
    "RootCredentials",
    "ServerError",
    "ToolsMissingError",
    "VersityGW",
    "find_versitygw",
    "localize",
    "wait_until",
]

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "hack" / "build-versitygw.sh"
VERSIONS = REPO / "hack" / "versions.env"
LOG_FILE = "versitygw.log"
HEALTH_PATH = "/health"
# Argv builder: (s3 listen address, admin listen address, private dir) -> argv after the binary.
Argv = Callable[[str, str, Path], Sequence[str]]


def versitygw_version() -> str:
    for line in VERSIONS.read_text().splitlines():
        if line.startswith("VERSITYGW_VERSION="):
            return line.split("=", 1)[1].strip()
    raise ToolsMissingError(f"no VERSITYGW_VERSION in {VERSIONS}")


def cached_binary() -> Path:
    cache = Path(os.environ.get("HEADROOM_CACHE") or Path.home() / ".cache" / "headroom")
    return cache / f"versitygw-{versitygw_version()}" / "versitygw"


def find_versitygw(*, build: bool = False) -> Path:
    """``$HEADROOM_VERSITYGW``, else the cached build; with ``build`` the cache is
    filled by hack/build-versitygw.sh when empty. ToolsMissingError otherwise."""
    override = os.environ.get("HEADROOM_VERSITYGW")
    if override:
        if not os.access(override, os.X_OK):
            raise ToolsMissingError(f"$HEADROOM_VERSITYGW={override} is not executable")
        return Path(override)
    binary = cached_binary()
    if not os.access(binary, os.X_OK) and build:
        proc = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False
        )
        if proc.returncode != 0:
            raise ToolsMissingError(
                f"hack/build-versitygw.sh failed ({proc.returncode}): {proc.stderr[-2000:]}"
            )
    if not os.access(binary, os.X_OK):
        raise ToolsMissingError(f"no versitygw at {binary} (run hack/build-versitygw.sh)")
    return binary


@dataclass(frozen=True)
class RootCredentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # no secret in a test report
        return f"RootCredentials({self.access_key})"

    @classmethod
    def generate(cls) -> RootCredentials:
        return cls(access_key=secrets.token_hex(10), secret_key=secrets.token_urlsafe(30))

    def env(self) -> dict[str, str]:
        return {"ROOT_ACCESS_KEY": self.access_key, "ROOT_SECRET_KEY": self.secret_key}


def default_argv(listen: str, admin_listen: str, directory: Path) -> list[str]:
    """What a plain test server runs: posix backend on ``directory/buckets``,
    internal IAM in ``directory/iam``, the admin API on its own address."""
    (directory / "buckets").mkdir()
    (directory / "iam").mkdir()
    return [
        "--port",
        listen,
        "--admin-port",
        admin_listen,
        "--iam-dir",
        str(directory / "iam"),
        "--health",
        HEALTH_PATH,
        "posix",
        str(directory / "buckets"),
    ]


def localize(
    args: Sequence[str], *, mount_path: str, directory: Path, addresses: Mapping[str, str]
) -> list[str]:
    """A rendered container's command or args as they run on this machine: an
    argument that is a key of ``addresses`` (a pod's listen address) becomes
    its value, and one under ``mount_path`` (the pod's data volume) moves into
    ``directory``. Nothing is created: the rendered init step does that."""
    prefix = mount_path.rstrip("/") + "/"
    out: list[str] = []
    for arg in args:
        if arg in addresses:
            out.append(addresses[arg])
        elif arg == mount_path or arg.startswith(prefix):
            out.append(str(directory / arg[len(prefix) :]))
        else:
            out.append(arg)
    return out


class VersityGW(ServerProcess):
    """versitygw on 127.0.0.1: ``endpoint`` (S3) and ``admin_endpoint`` (admin
    API), ``root`` its root credentials. ``argv`` (default: ``default_argv``) gets
    the two listen addresses and the private dir."""

    def __init__(
        self,
        binary: Path,
        *,
        root: RootCredentials | None = None,
        argv: Argv = default_argv,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(program="versitygw", log_name=LOG_FILE, start_timeout=30)
        self.binary = binary
        self.root = root or RootCredentials.generate()
        self.argv = argv
        self.extra_env = dict(env or {})
        self.admin_port = 0
        self.command: list[str] = []

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def admin_endpoint(self) -> str:
        return f"http://{HOST}:{self.admin_port}"

    def start(self) -> Self:
        self.dir = private_dir("headroom-versitygw-")
        self._launch_until_ready(self._launch, what="versitygw on port {port}", attempts=3)
        return self

    def _launch(self) -> None:
        assert self.dir is not None
        self.port, self.admin_port = free_port(), free_port()
        while self.admin_port == self.port:
            self.admin_port = free_port()
        data = self.dir / f"data-{self.port}"
        data.mkdir()
        self.command = [
            str(self.binary),
            *self.argv(f"{HOST}:{self.port}", f"{HOST}:{self.admin_port}", data),
        ]
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.dir)}
        env |= self.root.env() | self.extra_env
        self._spawn(self.command, env=env)

    def _port_taken(self) -> bool:
        return "address already in use" in self.log_text().lower()

    def _accepting(self) -> bool:
        return self.health() == 200

    def health(self) -> int | None:
        """The status of GET /health on the S3 port; None when nothing answers."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
        try:
            conn.request("GET", HEALTH_PATH)
            return conn.getresponse().status
        except OSError:
            return None
        finally:
            conn.close()

    def current_config(self) -> str:
        return " ".join(self.command)
