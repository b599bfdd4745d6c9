"""What the agents that follow a ConfigMap share (headroom.agent.pooler for
PgBouncer, also run by headroom.agent.readpool in the read pooler's pod,
headroom.agent.redis for Redis): the watch of that one ConfigMap
through the API server, what they do with the text it offers
(:class:`FileAgent`: the newest is taken, one that changes a setting the
program reads only at start is left to the pod's roll, any other is written
atomically into the file the program runs from), the loop that steps an agent
when the watch offers a new text or something is pending, and the process
around them (the in-pod client from a projected service-account token,
SIGTERM).

The watch is restricted to one name by a fieldSelector, which is what the
agents' Roles allow (list/watch/get on that resourceName only).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from headroom.kube import errors, kubeconfig, sync_client
from headroom.planning import agentfile

log = logging.getLogger("headroom.agent.configmap")

RETRY_SECONDS = 2.0  # after a failed list or watch


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (temp file + rename in its dir)
    unless it holds that already; whether it wrote."""
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(text)
    partial.chmod(0o644)
    os.replace(partial, path)
    return True


class Stepped(Protocol):
    """An agent :func:`run` drives: ``offer`` takes the watch's text and sets
    ``wake``, ``step`` does what is due, ``next_wait`` says how long to sleep
    after a step."""

    wake: threading.Event

    def offer(self, text: str) -> None: ...

    def step(self, stop: threading.Event) -> None: ...

    def next_wait(self) -> float: ...


@dataclass(kw_only=True)
class FileAgent:
    """The file a program runs from and the newest text the watch offered.
    ``offer`` is called by the watch (another thread); the rest by the loop.
    A subclass says which settings its program reads only at start."""

    log: ClassVar[logging.Logger] = log  # a subclass logs as its agent

    output: Path
    loaded: str = ""  # the text the program runs (or is being given)
    refused: str | None = None  # a wanted text that needs a restart (logged once)
    _wanted: str | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    wake: threading.Event = field(default_factory=threading.Event, repr=False)

    def start(self) -> None:
        """The file as the init step (or an earlier agent) wrote it."""
        self.loaded = self.output.read_text()

    def offer(self, text: str) -> None:
        """The ConfigMap's config file, as the watch saw it."""
        with self._lock:
            self._wanted = text
        self.wake.set()

    def take_wanted(self) -> str | None:
        with self._lock:
            wanted, self._wanted = self._wanted, None
        return wanted

    @property
    def offered(self) -> bool:
        """Whether a text waits to be taken (a write that failed puts it back)."""
        with self._lock:
            return self._wanted is not None

    def start_only_changes(self, before: str, after: str) -> list[str]:
        raise NotImplementedError

    def write(self, wanted: str) -> bool:
        """Write ``wanted`` into the file unless it changes a setting the
        program reads only at start (the pod rolls for it: logged once);
        whether it did. A failed write is retried at the next step."""
        restart = self.start_only_changes(self.loaded, wanted)
        if restart:
            if wanted != self.refused:
                self.refused = wanted
                self.log.info(
                    "not applied: %s taken only at start (the pod rolls for it)",
                    ", ".join(restart),
                )
            return False
        try:
            write_if_changed(self.output, wanted)
        except OSError as err:
            self.log.warning("could not write %s (retried): %s", self.output, err)
            with self._lock:  # unless the watch has a newer one
                self._wanted = wanted if self._wanted is None else self._wanted
            return False
        self.log.info("wrote %s (config %s)", self.output, agentfile.content_hash(wanted))
        return True


def run(agent: Stepped, *, stop: threading.Event) -> None:
    """Step until ``stop`` is set: at once when the watch offers a config,
    else after ``agent.next_wait()`` seconds."""
    while not stop.is_set():
        agent.wake.clear()  # an offer during the step wakes the next wait at once
        try:
            agent.step(stop)
        except Exception:  # a bug must not leave the program unmanaged without a word
            log.exception("step failed; trying again")
        agent.wake.wait(agent.next_wait())


def watch(
    client: sync_client.Client,
    *,
    namespace: str,
    name: str,
    key: str,
    offer: Callable[[str], None],
    stop: threading.Event,
) -> None:
    """List, then watch, the one ConfigMap ``name``; offer each ``key`` it
    holds. Errors are logged (once per kind in a row) and retried."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    selector = {"fieldSelector": f"metadata.name={name}"}
    last_error = ""
    version = ""

    def take(obj: dict[str, Any]) -> None:
        text = (obj.get("data") or {}).get(key)
        if isinstance(text, str):
            offer(text)

    while not stop.is_set():
        try:
            if not version:
                listed = client.request("GET", path, query=selector)
                for item in listed.get("items") or []:
                    take(item)
                version = str((listed.get("metadata") or {}).get("resourceVersion") or "")
            for event in client.watch(
                path,
                query={**selector, "resourceVersion": version, "allowWatchBookmarks": "true"},
            ):
                obj = event.get("object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                if event.get("type") in ("ADDED", "MODIFIED"):
                    take(obj)
            last_error = ""
        except errors.KubeError as err:
            if isinstance(err, errors.ApiError) and err.status == 410:
                version = ""  # too old: list again
                continue
            if str(err) != last_error:
                log.warning("watching ConfigMap %s (retried): %s", name, err)
                last_error = str(err)
            version = ""
            stop.wait(RETRY_SECONDS)


def in_pod_client(token_dir: Path, *, who: str) -> tuple[sync_client.Client, str]:
    """The API client of an agent in its pod, and its namespace; exits
    (naming ``who``) when the projected token, CA or namespace is missing."""
    cluster = kubeconfig.in_cluster(token_dir)
    if cluster is None or not cluster.namespace:
        raise SystemExit(
            f"{who}: no service-account token, CA and namespace in {token_dir}, "
            "or no KUBERNETES_SERVICE_HOST/PORT"
        )
    return sync_client.Client(cluster), cluster.namespace


def follow(
    client: sync_client.Client,
    *,
    namespace: str,
    name: str,
    key: str,
    agent: Stepped,
    beside: Iterable[Callable[[threading.Event], None]] = (),
) -> None:
    """Watch ``key`` of the ConfigMap ``name`` for ``agent`` and run it, and
    the loops ``beside`` it (the read pool's lag loop), until SIGTERM or
    SIGINT; every thread ends with the process, at once."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    for target in (
        lambda: watch(
            client, namespace=namespace, name=name, key=key, offer=agent.offer, stop=stop
        ),
        lambda: run(agent, stop=stop),
        *(lambda loop=loop: loop(stop) for loop in beside),
    ):
        threading.Thread(target=target, daemon=True).start()
    stop.wait()


def arguments(
    *, agent: str, program: str, config_file: str, optional: bool = False
) -> argparse.ArgumentParser:
    """The command line the agents share: ``--once --source --output`` (the
    init step's copy) and ``--config-map --output --token-dir`` (the sidecar);
    ``optional``: an agent that also runs without following a ConfigMap."""
    found = argparse.ArgumentParser(prog=f"python -m headroom.agent.{agent}")
    found.add_argument(
        "--output", required=not optional, type=Path, help=f"the file {program} reads"
    )
    found.add_argument("--once", action="store_true", help="copy --source to --output, exit")
    found.add_argument("--source", type=Path, help=f"the mounted {config_file} (--once)")
    found.add_argument("--config-map", help=f"the ConfigMap holding {config_file}")
    found.add_argument(
        "--token-dir", type=Path, default=kubeconfig.SA_DIR, help="token, ca.crt, namespace"
    )
    return found


def begin(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    *,
    name: str,
    follows: bool = True,
) -> bool:
    """Log to stderr as ``name``; with ``--once``, copy ``--source`` to
    ``--output`` (the init step) and say so: True when that was all.
    ``follows``: the agent follows a ConfigMap (else only ``--once`` counts)."""
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format=f"%(asctime)s {name} %(levelname)s %(message)s",
    )
    if not follows:
        return bool(args.once)
    if args.output is None:
        parser.error("--output is needed")
    if not args.once:
        if not args.config_map:
            parser.error("--config-map is needed without --once")
        return False
    if args.source is None:
        parser.error("--once needs --source")
    write_if_changed(args.output, args.source.read_text())
    log.info("wrote %s from %s", args.output, args.source)
    return True
