"""The bucket agent: provisions the builtin storage provider's versitygw
(issue 11). Runs as the sidecar ``agent`` of the ``<profile>-s3`` pod, as
``python -m headroom.agent.bucket --config /etc/headroom-s3/buckets.json``.

Every ``pollSeconds`` (every 2 s until the first pass succeeds) one idempotent
pass, against the server in the same pod (127.0.0.1):

1. (first pass only) the app's versitygw user (role ``user``) exists with the
   app's secret key (created, or its secret and role set again: the Secret is
   the truth);
2. every bucket exists and is owned by the app's user (created for it through
   the admin API, or handed to it with change-bucket-owner): the owner may use
   its bucket, and with role ``user`` it can create no other;
3. every bucket's CORS is the rendered one (PutBucketCors with the root keys,
   or DeleteBucketCors when it has none), sent again only when it changed
   since the last pass or a pass failed;

then it touches ``readyFile`` (the container's readiness probe checks it), so
the pod is Ready only once the app's keys can use every bucket.

Environment: ROOT_ACCESS_KEY / ROOT_SECRET_KEY (the server's root, for the
admin API), APP_SECRET_KEY (the app user's secret; its access key is in the
config). A failed pass is logged (without a key) and retried; SIGTERM stops
the loop at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from headroom.planning import versitygw
from headroom.s3 import rest

log = logging.getLogger("headroom.agent.bucket")

STARTUP_RETRY_SECONDS = 2.0


@dataclass(frozen=True)
class Keys:
    root_access_key: str
    root_secret_key: str = field(repr=False)
    app_secret_key: str = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Keys:
        names = ("ROOT_ACCESS_KEY", "ROOT_SECRET_KEY", "APP_SECRET_KEY")
        missing = [name for name in names if not env.get(name)]
        if missing:
            raise SystemExit(f"bucket agent: missing environment {', '.join(missing)}")
        return cls(env["ROOT_ACCESS_KEY"], env["ROOT_SECRET_KEY"], env["APP_SECRET_KEY"])


@dataclass
class Agent:
    """The state between passes: whether the user was set up, the CORS
    documents applied so far."""

    config: versitygw.BucketServerConfig
    keys: Keys
    user_ready: bool = False
    applied_cors: dict[str, str | None] = field(default_factory=dict)

    def _client(self, endpoint: str) -> rest.Client:
        return rest.Client(
            endpoint=endpoint,
            access_key=self.keys.root_access_key,
            secret_key=self.keys.root_secret_key,
            region=self.config.region,
        )

    def step(self) -> list[str]:
        """One pass; what it changed (empty when everything was in place).
        Raises rest.S3Error when the server refused or did not answer."""
        admin = self._client(self.config.admin_endpoint)
        root = self._client(self.config.s3_endpoint)
        app = self.config.app_access_key
        changes: list[str] = []
        if not self.user_ready:
            if admin.create_user(
                access_key=app, secret_key=self.keys.app_secret_key, role=self.config.app_role
            ):
                changes.append(f"created user {app}")
            else:  # made by an earlier pod: the Secret may have been made anew since
                admin.update_user(
                    access_key=app, secret_key=self.keys.app_secret_key, role=self.config.app_role
                )
            self.user_ready = True
        owners = admin.list_bucket_owners()
        for bucket in self.config.buckets:
            owner = owners.get(bucket.name)
            if owner is None:
                admin.create_bucket_for(bucket.name, owner=app)
                changes.append(f"created bucket {bucket.name}")
            elif owner != app:
                admin.change_bucket_owner(bucket.name, owner=app)
                changes.append(f"bucket {bucket.name}: owner {owner} -> {app}")
            document = versitygw.render_cors(bucket.cors) if bucket.cors else None
            if bucket.name in self.applied_cors and self.applied_cors[bucket.name] == document:
                continue
            self.applied_cors.pop(bucket.name, None)  # unknown until the call succeeds
            if document is None:
                root.delete_bucket_cors(bucket.name)
                changes.append(f"bucket {bucket.name}: no CORS")
            else:
                root.put_bucket_cors(bucket.name, document)
                changes.append(f"bucket {bucket.name}: CORS applied ({len(bucket.cors)} rules)")
            self.applied_cors[bucket.name] = document
        return changes


def mark_ready(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def run(agent: Agent, *, stop: threading.Event) -> None:
    """Pass until ``stop`` is set: every 2 s until one succeeds, then every pollSeconds."""
    ready = False
    while not stop.is_set():
        try:
            for change in agent.step():
                log.info("%s", change)
        except rest.S3Error as err:
            log.warning("pass failed (retried): %s", err)
        except Exception:  # a bug must not end provisioning without a word
            log.exception("pass failed (retried)")
        else:
            if not ready:
                mark_ready(Path(agent.config.ready_file))
                log.info("%d buckets provisioned", len(agent.config.buckets))
                ready = True
        stop.wait(agent.config.poll_seconds if ready else STARTUP_RETRY_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headroom.agent.bucket")
    parser.add_argument("--config", required=True, type=Path, help="buckets.json")
    parser.add_argument("--once", action="store_true", help="one pass; exit 1 if it fails")
    args = parser.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s bucket %(levelname)s %(message)s"
    )
    config = versitygw.BucketServerConfig.model_validate_json(args.config.read_text())
    agent = Agent(config=config, keys=Keys.from_env(os.environ))
    if args.once:
        try:
            for change in agent.step():
                log.info("%s", change)
        except rest.S3Error as err:
            log.error("pass failed: %s", err)
            return 1
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info("provisioning %d buckets every %gs", len(config.buckets), config.poll_seconds)
    run(agent, stop=stop)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
