"""Runs the pooler pods of a real API server on this machine, as kubelet would:
the kwok pods of every pooler Deployment in a namespace (the write pooler's
and the read pooler's, COMPONENTS) get their
containers run for real (PgBouncer of the default image's release, Headroom's
agent, the exporter when its binary is cached), so that e2e tests can send
pgbench through the poolers the operator sized and count what reaches a real
Postgres.

Used by tests/e2e/test_shares.py and bench/shares_bench.py. For each pod
(``PoolerPods`` polls the namespace's pods, ConfigMaps and Secrets):

- a sandbox: a network namespace of its own (``unshare --net``), so every
  container listens and connects as the pod spec says (PgBouncer on
  0.0.0.0:6432, the agent on 127.0.0.1:6432) without clashing with the
  pod beside it. Nothing of the pod is reachable at a 10.x address: its
  ports are forwarded from 127.0.0.1:<free port> of this machine
  (``PodRun.port``), and inside the pod 127.0.0.1:<port> of the database
  server and of the API server lead to the same ports here
  (``Node.egress_ports``);
- volumes written as kubelet writes them (files under a ``..data`` symlink
  swapped atomically): ConfigMap, Secret, emptyDir, downward API and
  projected volumes, the ServiceAccount token from ``kubectl create token``;
  ConfigMap and Secret volumes re-written when the objects change;
- each container in a mount namespace of its own: the volumes bound at their
  mountPaths, /etc an overlay whose /etc/hosts resolves the names in
  ``Node.hosts`` to 127.0.0.1 (what the pod's DNS would answer), /run a
  tmpfs; its command (image entrypoint resolved by ``Node.program``), args
  and env with ``$(VAR)`` expanded, the downward API and Secret/ConfigMap
  references resolved, KUBERNETES_SERVICE_HOST/PORT naming the local API
  server; run as the container's runAsUser. Init containers first, each to
  completion; a container that exits is started again and counted
  (``PodRun.restarts``), as kubelet's restartCount;
- stopped when the pod is deleted or being deleted: SIGTERM, SIGKILL after
  the pod's grace period.

Needs root (namespaces, mounts), ``unshare``/``nsenter``/``setpriv``/``ip``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import datetime
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kube
from tests.conformance import servers

CLONE_NEWNET = 0x40000000
POLL_SECONDS = 0.5
# the poolers' pods (app.kubernetes.io/component): the write pooler and the read
# pooler, whose agent measures its replicas (unreachable here: it keeps the
# fallback) and RELOADs PgBouncer as the write pooler's does
COMPONENTS = ("pooler", "pooler-ro")
DEFAULT_UID = 65534  # an image with no USER and a pod with no runAsUser: nobody
# Roots under which a mountPath may be created: /etc is an overlay and /run a
# tmpfs in every container, so nothing is made on this machine's own tree.
MOUNT_ROOTS = ("/etc/", "/run/", "/var/run/")
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")

_libc = ctypes.CDLL(None, use_errno=True)


class PodError(RuntimeError):
    """A pod spec the harness cannot run as kubelet would (it names why)."""


def _in_netns(netns: str | None, make: Callable[[], socket.socket]) -> socket.socket:
    """``make()`` run in network namespace ``netns`` (a /proc/<pid>/ns/net
    path; None: this process's). setns changes only the calling thread, so a
    thread of its own enters it and ends there; the socket it made stays in
    that namespace."""
    if netns is None:
        return make()
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter() -> None:
        try:
            fd = os.open(netns, os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}")
            finally:
                os.close(fd)
            made.append(make())
        except BaseException as err:  # handed to the caller
            failed.append(err)

    thread = threading.Thread(target=enter, daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]
    return made[0]


Target = Callable[[], "tuple[str | None, int] | None"]  # (netns, port) now, None: refuse


class Forwarder:
    """TCP forwarding between network namespaces on 127.0.0.1, on an asyncio
    loop of its own thread: a listener in one namespace connects each client
    to ``target()`` in another (evaluated per connection, so a Service-like
    listener follows the pods that run now)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: dict[str, list[asyncio.base_events.Server]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def listen(self, *, owner: str, netns: str | None, port: int, target: Target) -> int:
        """Listen on 127.0.0.1:``port`` (0: a free one) in ``netns`` until
        ``close(owner)``; the port."""

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((servers.HOST, port))
            sock.listen(512)
            sock.setblocking(False)
            return sock

        sock = _in_netns(netns, make)
        bound: int = sock.getsockname()[1]

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # held here: the server keeps only a weak reference to a handler's task
            task = self._loop.create_task(self._pipe(reader, writer, target))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        async def serve() -> asyncio.base_events.Server:
            return await asyncio.start_server(connected, sock=sock, limit=1 << 16)

        server = asyncio.run_coroutine_threadsafe(serve(), self._loop).result(30)
        self._servers.setdefault(owner, []).append(server)
        return bound

    def close(self, owner: str) -> None:
        """Stop the listeners of ``owner`` (connections already made go on
        until either end closes)."""
        for server in self._servers.pop(owner, []):
            self._loop.call_soon_threadsafe(server.close)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: Target
    ) -> None:
        where = target()
        if where is None:
            writer.close()
            return
        netns, port = where

        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            return sock

        try:
            sock = await self._loop.run_in_executor(None, _in_netns, netns, make)
            await self._loop.sock_connect(sock, (servers.HOST, port))
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError:
            writer.close()  # as a refused connection: the client sees it closed
            return

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(1 << 16):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    if dst.can_write_eof():
                        dst.write_eof()
                    else:
                        dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
        for w in (writer, up_writer):
            w.close()

    def shutdown(self) -> None:
        """Close every listener and connection, then end the loop's thread."""
        for owner in list(self._servers):
            self.close(owner)

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@dataclass
class Node:
    """What the harness stands for: this machine as the node the pods run on.

    ``hosts``: names the pods' DNS answers with 127.0.0.1 (the database
    server's Service name); ``egress_ports``: ports of 127.0.0.1 here that
    pods reach at 127.0.0.1 (the database server's, the API server's);
    ``programs``: image entrypoint or command[0] -> the binary here.
    """

    kubectl: kube.Kubectl
    apiserver_port: int
    hosts: tuple[str, ...]
    egress_ports: tuple[int, ...]
    programs: dict[str, str]
    workdir: Path

    def program(self, container: dict[str, Any]) -> list[str] | None:
        """The argv of ``container`` with its program resolved here (args not
        yet expanded); None when its program is not on this machine (skipped)."""
        command = list(container.get("command") or [])
        args = list(container.get("args") or [])
        if command:
            binary = self.programs.get(command[0])
            if binary is None:
                raise PodError(f"container {container['name']}: no program for {command[0]!r}")
            return [binary, *command[1:], *args]
        image = container["image"].rsplit("/", 1)[-1].split(":", 1)[0].split("@", 1)[0]
        if image not in self.programs:
            return None
        return [self.programs[image], *args]


def default_programs(workdir: Path) -> dict[str, str]:
    """The pooler pod's programs from the cache (~/.cache/headroom): PgBouncer
    of the default image's release, Python with Headroom (the agent), and
    pgbouncer_exporter when it was built; copied where the pods' users may
    run them."""
    where = workdir / "bin"
    where.mkdir(mode=0o755, parents=True, exist_ok=True)
    programs = {
        "pgbouncer": str(servers.default_pgbouncer(where, None)),
        "python": sys.executable,
        "python3": sys.executable,
    }
    cache = Path(os.environ.get("HEADROOM_CACHE", Path.home() / ".cache" / "headroom"))
    for exporter in sorted(cache.glob("exporters-*/pgbouncer_exporter"), reverse=True):
        copy = where / "pgbouncer_exporter"
        shutil.copy2(exporter, copy)
        copy.chmod(0o755)
        programs["pgbouncer-exporter"] = str(copy)
        break
    return programs


def _decode(obj: dict[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's or Secret's keys -> bytes."""
    if obj["kind"] == "Secret":
        return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    found = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
    found |= {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
    return found


def _field(pod: dict[str, Any], path: str) -> str:
    """A downward API fieldRef of ``pod``."""
    meta = pod["metadata"]
    if found := re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path):
        return str((meta.get(found[1]) or {}).get(found[2], ""))
    simple = {
        "metadata.name": meta["name"],
        "metadata.namespace": meta["namespace"],
        "metadata.uid": meta["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": (pod.get("status") or {}).get("podIP", ""),
        "status.hostIP": (pod.get("status") or {}).get("hostIP", ""),
    }
    if path not in simple:
        raise PodError(f"downward API field {path!r} is not supported by the harness")
    return str(simple[path])


def _expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: a defined variable is replaced, $$ is $,
    anything else is left as written."""

    def one(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return VAR_REF.sub(one, text)


class Volume:
    """One pod volume's files in ``path``, written as kubelet's atomic writer
    does: a timestamped dir, ``..data`` pointing at it, each top-level name a
    symlink into ``..data``; a new content swaps ``..data`` in one rename."""

    def __init__(self, path: Path, *, mode: int = 0o755) -> None:
        self.path = path
        path.mkdir(mode=mode, parents=True)
        path.chmod(mode)
        self.files: dict[str, bytes] | None = None

    def write(self, files: dict[str, bytes], *, file_mode: int = 0o644) -> bool:
        """Write ``files`` (relative path -> content) unless they are there; whether it wrote."""
        if files == self.files:
            return False
        stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        folder = Path(tempfile.mkdtemp(prefix=stamp, dir=self.path))
        folder.chmod(0o755)
        for rel, content in files.items():
            target = folder / rel
            target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            target.write_bytes(content)
            target.chmod(file_mode)
        link = self.path / "..data_tmp"
        link.unlink(missing_ok=True)
        link.symlink_to(folder.name)
        os.replace(link, self.path / "..data")
        for top in {rel.split("/", 1)[0] for rel in files}:
            entry = self.path / top
            if not entry.is_symlink():
                entry.symlink_to(f"..data/{top}")
        old, self.files = self.files, dict(files)
        for stale in self.path.glob("..[0-9]*"):
            if stale != folder:
                shutil.rmtree(stale, ignore_errors=True)
        if old:
            for top in {rel.split("/", 1)[0] for rel in old} - {r.split("/", 1)[0] for r in files}:
                (self.path / top).unlink(missing_ok=True)
        return True


@dataclass
class Container:
    name: str
    argv: list[str]
    env: dict[str, str]
    uid: int
    gid: int
    mounts: list[tuple[str, str, bool]]  # (source dir, mountPath, readOnly)
    dir: Path
    proc: subprocess.Popen[bytes] | None = None
    exits: list[int] = field(default_factory=list)
    exited_at: float | None = None

    @property
    def log(self) -> Path:
        return self.dir / "log"


class PodRun:
    """One kwok pod run here: its sandbox, volumes and containers."""

    def __init__(self, node: Node, pod: dict[str, Any], forwarder: Forwarder) -> None:
        self.node = node
        self.pod = pod
        self.name: str = pod["metadata"]["name"]
        self.uid: str = pod["metadata"]["uid"]
        self.namespace: str = pod["metadata"]["namespace"]
        self.dir = node.workdir / "pods" / f"{self.name}-{self.uid[:8]}"
        self.dir.mkdir(mode=0o755, parents=True)
        self._forwarder = forwarder
        self.sandbox: subprocess.Popen[bytes] | None = None
        self.volumes: dict[str, Volume] = {}
        self.containers: list[Container] = []
        self.skipped: list[str] = []  # containers whose program is not here
        self.ports: dict[str, int] = {}  # container port name (or number) -> port here
        self.stopping = False

    @property
    def netns(self) -> str:
        assert self.sandbox is not None
        return f"/proc/{self.sandbox.pid}/ns/net"

    @property
    def restarts(self) -> int:
        return sum(len(c.exits) for c in self.containers)

    def port(self, name: str) -> int:
        """127.0.0.1's port here that reaches the container port ``name``."""
        return self.ports[name]

    def start(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Sandbox, volumes, ports, init containers to completion, containers."""
        self.sandbox = subprocess.Popen(
            ["unshare", "--net", "--", "sleep", "infinity"], start_new_session=True
        )
        kube.wait_for(
            lambda: os.readlink(self.netns) != os.readlink("/proc/self/ns/net"),
            timeout=10,
            interval=0.02,
            what=f"pod {self.name}'s network namespace",
        )
        subprocess.run(
            ["nsenter", f"--net={self.netns}", "--", "ip", "link", "set", "lo", "up"], check=True
        )
        for port in self.node.egress_ports:
            self._forwarder.listen(
                owner=self.uid, netns=self.netns, port=port, target=lambda p=port: (None, p)
            )
        self.sync_volumes(objects)
        spec = self.pod["spec"]
        for c in spec.get("containers") or []:
            for p in c.get("ports") or []:
                inside = int(p["containerPort"])
                here = self._forwarder.listen(
                    owner=self.uid, netns=None, port=0, target=lambda i=inside: self._inside(i)
                )
                self.ports[p.get("name") or str(inside)] = here
                self.ports[str(inside)] = here
        for c in spec.get("initContainers") or []:
            container = self._container(c, objects)
            if container is None:
                raise PodError(f"init container {c['name']}: its program is not here")
            code = self._spawn(container).wait(timeout=120)
            if code != 0:
                raise PodError(
                    f"pod {self.name}: init container {c['name']} exited {code}:\n"
                    + container.log.read_text(errors="replace")[-3000:]
                )
        for c in spec.get("containers") or []:
            container = self._container(c, objects)
            if container is None:
                self.skipped.append(c["name"])
                continue
            self.containers.append(container)
            self._spawn(container)

    def _inside(self, port: int) -> tuple[str | None, int] | None:
        return None if self.stopping or self.sandbox is None else (self.netns, port)

    def sync_volumes(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Write every volume from ``objects`` ((kind, name) -> object) as it is now."""
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            if name not in self.volumes:
                self.volumes[name] = Volume(
                    self.dir / "volumes" / name,
                    mode=0o777 if "emptyDir" in volume else 0o755,
                )
            if "emptyDir" in volume:
                continue
            try:
                files = self._files(volume, objects)
            except PodError:
                if self.volumes[name].files is None:
                    raise
                continue  # its object is gone (being deleted with the pod): kept as it was
            if files is not None:
                self.volumes[name].write(files)

    def _files(
        self, volume: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
    ) -> dict[str, bytes] | None:
        """The files of a ConfigMap/Secret/downwardAPI/projected volume now;
        None for a projected one already written (its token is not renewed)."""
        if "configMap" in volume:
            return self._object_files("ConfigMap", volume["configMap"], objects)
        if "secret" in volume:
            ref = {**volume["secret"], "name": volume["secret"]["secretName"]}
            return self._object_files("Secret", ref, objects)
        if "downwardAPI" in volume:
            return self._downward(volume["downwardAPI"]["items"])
        if "projected" in volume:
            if self.volumes[volume["name"]].files is not None:
                return None
            files: dict[str, bytes] = {}
            for source in volume["projected"]["sources"]:
                if "serviceAccountToken" in source:
                    files[source["serviceAccountToken"]["path"]] = self._token(
                        source["serviceAccountToken"]
                    )
                elif "configMap" in source:
                    files |= self._object_files("ConfigMap", source["configMap"], objects)
                elif "secret" in source:
                    files |= self._object_files("Secret", source["secret"], objects)
                elif "downwardAPI" in source:
                    files |= self._downward(source["downwardAPI"]["items"])
                else:
                    raise PodError(f"projected source {sorted(source)} is not supported")
            return files
        raise PodError(f"volume {volume['name']}: {sorted(volume)} is not supported")

    def _object_files(
        self,
        kind: str,
        ref: dict[str, Any],
        objects: dict[tuple[str, str], dict[str, Any]],
    ) -> dict[str, bytes]:
        obj = objects.get((kind, ref["name"]))
        if obj is None:
            if ref.get("optional"):
                return {}
            raise PodError(f"{kind} {ref['name']} of pod {self.name} does not exist")
        data = _decode(obj)
        if not ref.get("items"):
            return data
        return {item["path"]: data[item["key"]] for item in ref["items"]}

    def _downward(self, items: list[dict[str, Any]]) -> dict[str, bytes]:
        return {i["path"]: _field(self.pod, i["fieldRef"]["fieldPath"]).encode() for i in items}

    def _token(self, source: dict[str, Any]) -> bytes:
        account = self.pod["spec"].get("serviceAccountName") or "default"
        seconds = max(int(source.get("expirationSeconds", 3600)), 600)
        args = ["create", "token", account, "-n", self.namespace, f"--duration={seconds}s"]
        if source.get("audience"):
            args.append(f"--audience={source['audience']}")
        args += ["--bound-object-kind=Pod", f"--bound-object-name={self.name}"]
        args.append(f"--bound-object-uid={self.uid}")
        return self.node.kubectl(*args).stdout.strip().encode()

    def _container(
        self, c: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
    ) -> Container | None:
        argv = self.node.program(c)
        if argv is None:
            return None
        env = self._env(c, objects)
        argv = [argv[0], *(_expand(a, env) for a in argv[1:])]
        pod_security = self.pod["spec"].get("securityContext") or {}
        security = c.get("securityContext") or {}
        uid = int(security.get("runAsUser", pod_security.get("runAsUser", DEFAULT_UID)))
        gid = int(security.get("runAsGroup", pod_security.get("runAsGroup", uid)))
        mounts = []
        for m in c.get("volumeMounts") or []:
            path = m["mountPath"]
            if not path.startswith(MOUNT_ROOTS) or m.get("subPath"):
                raise PodError(f"container {c['name']}: mount at {path} is not supported")
            mounts.append((str(self.volumes[m["name"]].path), path, bool(m.get("readOnly"))))
        folder = self.dir / "containers" / c["name"]
        folder.mkdir(parents=True, exist_ok=True)
        return Container(c["name"], argv, env, uid, gid, mounts, folder)

    def _env(
        self, c: dict[str, Any], objects: dict[tuple[str, str], dict[str, Any]]
    ) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.name,
            "HOME": "/run",
            "KUBERNETES_SERVICE_HOST": servers.HOST,
            "KUBERNETES_SERVICE_PORT": str(self.node.apiserver_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.node.apiserver_port),
        }
        for source in c.get("envFrom") or []:
            kind, ref = (
                ("ConfigMap", source["configMapRef"])
                if "configMapRef" in source
                else ("Secret", source["secretRef"])
            )
            values = self._object_files(kind, ref, objects)
            env |= {source.get("prefix", "") + k: v.decode() for k, v in values.items()}
        for item in c.get("env") or []:
            if "value" in item or "valueFrom" not in item:
                env[item["name"]] = _expand(item.get("value", ""), env)
                continue
            ref = item["valueFrom"]
            if "fieldRef" in ref:
                env[item["name"]] = _field(self.pod, ref["fieldRef"]["fieldPath"])
            elif "secretKeyRef" in ref or "configMapKeyRef" in ref:
                kind = "Secret" if "secretKeyRef" in ref else "ConfigMap"
                key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
                values = self._object_files(kind, {"name": key_ref["name"]}, objects)
                if key_ref["key"] not in values:
                    raise PodError(f"env {item['name']}: no key {key_ref['key']} in {kind}")
                env[item["name"]] = values[key_ref["key"]].decode()
            else:
                raise PodError(f"env {item['name']}: {sorted(ref)} is not supported")
        return env

    def _spawn(self, container: Container) -> subprocess.Popen[bytes]:
        """Start ``container`` in the sandbox's network namespace and a mount
        namespace of its own (see the module docstring)."""
        upper, work = container.dir / "etc-upper", container.dir / "etc-work"
        for folder in (upper, work):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        hosts = container.dir / "hosts"
        hosts.write_text(
            f"127.0.0.1\tlocalhost\n127.0.0.1\t{self.name}\n"
            + "".join(f"127.0.0.1\t{name}\n" for name in self.node.hosts)
        )
        hosts.chmod(0o644)
        lines = [
            "set -e",
            f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper},workdir={work} /etc",
            f"cat {hosts} > /etc/hosts",
            "mount -t tmpfs -o mode=755 tmpfs /run",
        ]
        for source, path, read_only in container.mounts:
            q = shlex.quote(path)
            lines += [f"mkdir -p {q}", f"mount --bind {shlex.quote(source)} {q}"]
            if read_only:
                lines.append(f"mount -o remount,bind,ro {q}")
        lines.append(
            f'exec setpriv --reuid={container.uid} --regid={container.gid} --clear-groups -- "$@"'
        )
        argv = [
            "nsenter", f"--net={self.netns}", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            "/bin/sh", "-c", "\n".join(lines), container.name, *container.argv,
        ]  # fmt: skip
        with container.log.open("ab") as log:
            container.proc = subprocess.Popen(
                argv,
                env=container.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd="/",
            )
        return container.proc

    def keep_running(self) -> None:
        """Start again every container that exited (restartPolicy Always), counted."""
        if self.stopping:
            return
        now = time.monotonic()
        for container in self.containers:
            if container.exited_at is None:
                if container.proc is None or (code := container.proc.poll()) is None:
                    continue
                container.exits.append(code)
                container.exited_at = now
            # kubelet's back-off: 0.5 s doubled per restart, at most 10 s here
            if now - container.exited_at >= min(0.5 * 2 ** len(container.exits), 10):
                container.exited_at = None
                self._spawn(container)

    def stop(self) -> None:
        """SIGTERM every container, SIGKILL after the pod's grace period; the
        sandbox and the forwarded ports go last."""
        self.stopping = True
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        running = [c.proc for c in self.containers if c.proc is not None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self._forwarder.close(self.uid)
        if self.sandbox is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sandbox.pid, signal.SIGKILL)
            self.sandbox.wait()

    def logs(self) -> str:
        parts = []
        for folder in sorted((self.dir / "containers").glob("*")):
            text = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else ""
            parts.append(f"--- {self.name}/{folder.name} ---\n{text[-3000:]}")
        return "\n".join(parts)


class PoolerPods:
    """Runs every pooler pod of ``namespace`` while entered: started
    when the API server has it, stopped when it is deleted or being deleted,
    its ConfigMap and Secret volumes kept as the objects are."""

    def __init__(self, node: Node, namespace: str) -> None:
        self.node = node
        self.namespace = namespace
        self.forwarder = Forwarder()
        self.pods: dict[str, PodRun] = {}  # uid -> run
        self.ended: list[PodRun] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> PoolerPods:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=120)
        for run in list(self.pods.values()):
            run.stop()
        self.forwarder.shutdown()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception as err:  # kept for the test to show; the loop goes on
                self.errors.append(f"{type(err).__name__}: {err}")
            self._stop.wait(POLL_SECONDS)

    def _sync(self) -> None:
        listed = json.loads(
            self.node.kubectl(
                "get", "pods,configmaps,secrets", "-n", self.namespace, "-o", "json"
            ).stdout
        )["items"]
        objects = {(o["kind"], o["metadata"]["name"]): o for o in listed if o["kind"] != "Pod"}
        pods = {
            o["metadata"]["uid"]: o
            for o in listed
            if o["kind"] == "Pod"
            and o["metadata"].get("labels", {}).get("app.kubernetes.io/component") in COMPONENTS
            and not o["metadata"].get("deletionTimestamp")
        }
        for uid in set(self.pods) - set(pods):
            run = self.pods[uid]
            with self._lock:
                del self.pods[uid]
            run.stop()
            self.ended.append(run)
        for uid, pod in pods.items():
            run = self.pods.get(uid)
            if run is None:
                if not pod["spec"].get("nodeName"):
                    continue  # not scheduled yet: kubelet would not see it either
                run = PodRun(self.node, pod, self.forwarder)
                try:
                    run.start(objects)
                except Exception:
                    run.stop()
                    raise
                with self._lock:
                    self.pods[uid] = run
            else:
                run.sync_volumes(objects)
                run.keep_running()

    def running(self, deployment: str | None = None) -> list[PodRun]:
        """The pods running now (of ``deployment``: their name's prefix)."""
        with self._lock:
            runs = list(self.pods.values())
        if deployment is None:
            return runs
        return [r for r in runs if r.name.rsplit("-", 2)[0] == deployment]

    def service(self, deployment: str, port: str) -> int:
        """A port here that, like the Deployment's Service, takes each new
        connection to one of its pods running now (round robin)."""
        turn = iter(range(1 << 62))

        def target() -> tuple[str | None, int] | None:
            runs = [r for r in self.running(deployment) if not r.stopping]
            if not runs:
                return None
            run = runs[next(turn) % len(runs)]
            inside = next(
                (
                    int(p["containerPort"])
                    for c in run.pod["spec"]["containers"]
                    for p in c.get("ports") or []
                    if p.get("name") == port or str(p["containerPort"]) == port
                ),
                None,
            )
            return None if inside is None else (run.netns, inside)

        return self.forwarder.listen(
            owner=f"service/{deployment}", netns=None, port=0, target=target
        )

    def restarts(self) -> int:
        """Container restarts of every pod run so far."""
        return sum(r.restarts for r in [*self.pods.values(), *self.ended])


@contextlib.contextmanager
def node_dir() -> Iterator[Path]:
    """A fresh folder for the pods' files and programs that the pods' users
    may enter (pytest's tmp_path is private to root); removed at exit."""
    path = Path(tempfile.mkdtemp(prefix="headroom-pods-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def running(node: Node, namespace: str) -> Iterator[PoolerPods]:
    with PoolerPods(node, namespace) as pods:
        yield pods
