"""Fixtures for the conformance suite: Headroom's rendered configs run in the
real programs (Postgres 15, PgBouncer, redis-server and redis-sentinel 7.0) on
127.0.0.1.

* ``database`` (session): a throwaway Postgres 15 (SCRAM auth, max_connections
  100, superuser_reserved_connections 3) with role and database ``app``,
  initialised by ``pgbench -i -s 1``; stopped (``-m immediate``) and removed at
  the end of the session.
* ``start_pgbouncer`` (per test): ``start_pgbouncer(ini, userlist, pgbouncer=None)``
  runs pgbouncer (Debian 12's 1.18, the oldest supported, unless ``pgbouncer``
  names another) in a private dir, returns once it accepts connections and stops
  it at teardown. ``ini`` may be a function of (listen_port, auth_file).
* ``start_module_pgbouncer`` (module): the same, for a module's fixtures; every
  PgBouncer started is stopped after the module's last test.
* ``tls_primary`` (module): a Postgres 15 on 127.0.0.1 serving a certificate for
  127.0.0.1 and servers.TLS_PRIMARY_NAME from a private CA (servers.TLSPrimary:
  the CA's file and another's).
* ``default_pgbouncer`` (session): PgBouncer of the default image's release
  (1.26, from Debian's archive by hack/build-pgbouncer.sh), runnable by the
  servers' user.
* ``start_redis`` (per test): ``start_redis(conf, files=..., password=...,
  sentinel=False)`` runs redis-server (or redis-sentinel) on a free port in a
  private dir, returns once it answers PING and stops it at teardown. ``conf``
  may be a function of (port, private dir).
* ``start_pod`` (per test): ``start_pod(process)`` starts a
  redis_servers.PodProcess (Headroom's rendered scripts with a pod's
  environment pointed at 127.0.0.1) and stops it at teardown.
* ``start_versitygw`` (per test): ``start_versitygw(argv=..., root=..., env=...)`` runs
  the cached versitygw build (built by hack/build-versitygw.sh when absent) on
  free ports in a private dir, returns once GET /health answers and stops it
  at teardown.
* ``cluster`` (session): a real API server (api_server.find: $KUBECONFIG's,
  else the local control plane, started when down); ``namespace`` (per test):
  a fresh namespace there, deleted at teardown. The agents' tests watch
  ConfigMaps through it with their ServiceAccount's token.
* ``exporters`` / ``prometheus_tools`` (session): the cached pgbouncer_exporter and
  redis_exporter builds (hack/build-exporters.sh when absent), Debian's prometheus
  and promtool. ``start_exporter(binary, args, env, name=...)`` and
  ``start_prometheus(rules=..., targets=...)`` (per test) run them on free ports
  and stop them at teardown (prometheus_servers.py).

Postgres and PgBouncer run as the ``postgres`` user when the tests run as root
(Redis runs as whoever runs the tests). Without
the binaries the tests are skipped, unless $CI is set: then they fail. Every
test here is marked ``conformance``. When a test fails, the logs of the servers
it used are attached to the report.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

CONF_DIR = Path(__file__).resolve().parent
# Tests do `import servers`; bench/pooler_bench.py imports it the same way.
if str(CONF_DIR) not in sys.path:
    sys.path.insert(0, str(CONF_DIR))

import api_server  # noqa: E402
import pooler_agents  # noqa: E402
import prometheus_servers  # noqa: E402
import redis_servers  # noqa: E402
import s3_servers  # noqa: E402
import servers  # noqa: E402
from tests import certs  # noqa: E402
from tests.e2e import kube  # noqa: E402

APP_USER = "app"
APP_PASSWORD = "app-secret-1"
APP_DB = "app"
# Enough descriptors for thousands of clients in pgbouncer and pgbench.
NOFILE = 10_000
LOG_TAIL = 4000

_BOUNCERS = pytest.StashKey[list[servers.PgBouncer]]()
_POSTGRES = pytest.StashKey[servers.Postgres]()
_REDIS = pytest.StashKey[list[redis_servers.RedisProcess]]()
_PODS = pytest.StashKey[list[redis_servers.RedisProcess]]()
_S3 = pytest.StashKey[list[s3_servers.VersityGW]]()
_EXPORTERS = pytest.StashKey[list[prometheus_servers.Exporter]]()
_PROMETHEUS = pytest.StashKey[list[prometheus_servers.Prometheus]]()
Process = TypeVar("Process", bound=servers.ServerProcess)
Found = TypeVar("Found")


def _in_conformance(item: pytest.Item) -> bool:
    return CONF_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the mark must be present before `-m` deselection runs.
    for item in items:
        if _in_conformance(item):
            item.add_marker(pytest.mark.conformance)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and report.when == "call" and _in_conformance(item):
        module = item.getparent(pytest.Module)
        module_bouncers = module.stash.get(_BOUNCERS, []) if module is not None else []
        for bouncer in [*item.stash.get(_BOUNCERS, []), *module_bouncers]:
            report.sections.append(
                (f"pgbouncer log (port {bouncer.port})", bouncer.log_text()[-LOG_TAIL:])
            )
            report.sections.append((f"pgbouncer.ini (port {bouncer.port})", bouncer.ini_text))
        postgres = item.config.stash.get(_POSTGRES, None)
        if postgres is not None and postgres.dir is not None:
            report.sections.append(
                (f"postgres log (port {postgres.port})", postgres.log_text()[-LOG_TAIL:])
            )
        for process in [*item.stash.get(_REDIS, []), *item.stash.get(_PODS, [])]:
            name = f"{process.kind} (port {process.port})"
            report.sections.append((f"{name} log", process.log_text()[-LOG_TAIL:]))
            report.sections.append((f"{name} config", process.current_config()))
        for gateway in item.stash.get(_S3, []):
            name = f"versitygw (port {gateway.port})"
            report.sections.append((f"{name} log", gateway.log_text()[-LOG_TAIL:]))
            report.sections.append((f"{name} command", gateway.current_config()))
        for server in [*item.stash.get(_EXPORTERS, []), *item.stash.get(_PROMETHEUS, [])]:
            name = f"{server.program} (port {server.port})"
            report.sections.append((f"{name} log", server.log_text()[-LOG_TAIL:]))
            report.sections.append((f"{name} config", server.current_config()))
    return report


def _missing(err: Exception, what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"conformance tests cannot run on CI: {err}", pytrace=False)
    pytest.skip(f"conformance tests need {what}: {err}")


def _found(find: Callable[[], Found], what: str) -> Found:
    """``find()``; skip (fail on CI) when it raises ToolsMissingError."""
    try:
        return find()
    except servers.ToolsMissingError as err:
        _missing(err, what)
        raise


@contextlib.contextmanager
def _stopped_at_teardown(
    request: pytest.FixtureRequest, key: pytest.StashKey[list[Process]]
) -> Iterator[list[Process]]:
    """A list for the processes a fixture starts, stashed on the test under ``key``
    (for the failure report); every one is stopped, last started first, on exit."""
    started: list[Process] = []
    request.node.stash[key] = started
    try:
        yield started
    finally:
        for process in reversed(started):
            process.stop()


@pytest.fixture(scope="session")
def tools() -> servers.Tools:
    """The Postgres 15 and PgBouncer binaries; skip (fail on CI) without them."""
    return _found(servers.find_tools, "Postgres 15 and PgBouncer")


@pytest.fixture(scope="session")
def database(tools: servers.Tools, request: pytest.FixtureRequest) -> Iterator[servers.AppDatabase]:
    """Postgres 15 on 127.0.0.1 with role/database ``app`` and pgbench tables (scale 1)."""
    servers.raise_nofile(NOFILE)
    server = servers.Postgres(tools, max_connections=100, superuser_reserved_connections=3)
    request.config.stash[_POSTGRES] = server
    try:
        server.start()
        server.create_app(APP_USER, APP_PASSWORD, APP_DB, scale=1)
        yield servers.AppDatabase(server, APP_USER, APP_PASSWORD, APP_DB)
    finally:
        server.stop()


# the read poolers' primary and hot standby (hot_standby)
READ_USER, READ_PASSWORD, READ_DB = "ro_app", "ro-app-secret-3", "rodb"
READ_SLOT = "headroom_readreload_0"


@pytest.fixture(scope="session")
def hot_standby(tools: servers.Tools) -> Iterator[tuple[servers.AppDatabase, servers.Standby]]:
    """The app's database (role ``ro_app``, database ``rodb``, pgbench tables) on a
    Postgres 15 primary, and a hot standby streaming from it (max_connections 100
    each): what the read poolers' tests put their read pooler in front of
    (test_read_reload.py, test_read_recommendations.py)."""
    primary = servers.Postgres(tools, max_connections=100, superuser_reserved_connections=3)
    standby: servers.Standby | None = None
    try:
        primary.start()
        primary.create_app(READ_USER, READ_PASSWORD, READ_DB, scale=1)
        standby = servers.Standby(primary, slot=READ_SLOT).start()
        yield servers.AppDatabase(primary, READ_USER, READ_PASSWORD, READ_DB), standby
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


@pytest.fixture
def read_pod(
    hot_standby: tuple[servers.AppDatabase, servers.Standby],
    start_pgbouncer: servers.StartPgBouncer,
    default_pgbouncer: Path,
    cluster: api_server.Cluster,
    namespace: str,
    tmp_path: Path,
) -> Iterator[Callable[..., pooler_agents.ReadPod]]:
    """``read_pod(plans=..., start=..., pod=...) -> ReadPod``: a read-pooler pod in
    front of the hot standby (pooler_agents.read_pod), its agent stopped (and its
    log checked) when the test ends."""
    database, standby = hot_standby
    with contextlib.ExitStack() as stack:

        def start(**given: Any) -> pooler_agents.ReadPod:
            return stack.enter_context(
                pooler_agents.read_pod(
                    database=database,
                    standby=standby,
                    cluster=cluster,
                    namespace=namespace,
                    tmp_path=tmp_path,
                    start_pgbouncer=start_pgbouncer,
                    pgbouncer_binary=default_pgbouncer,
                    **given,
                )
            )

        yield start


@pytest.fixture(scope="module")
def tls_primary(tools: servers.Tools) -> Iterator[servers.TLSPrimary]:
    """Postgres 15 with TLS (max_connections 40) on 127.0.0.1, its certificate from a
    private CA; role servers.TLS_USER owns database servers.TLS_DBNAME."""
    folder = servers.private_dir("headroom-tls-", tools.owner)
    ca_key, ca = certs.ca("headroom test CA")
    _, other_ca = certs.ca("some other CA")
    key, cert = certs.server(ca_key, ca, ip=servers.HOST, dns=(servers.TLS_PRIMARY_NAME,))
    servers.write_private(folder / "server.key", certs.key_pem(key), tools.owner)
    servers.write_private(folder / "server.crt", certs.pem(cert), tools.owner)
    ca_file = servers.write_private(folder / "ca.crt", certs.pem(ca), tools.owner)
    other = servers.write_private(folder / "other-ca.crt", certs.pem(other_ca), tools.owner)
    server = servers.Postgres(
        tools,
        max_connections=40,
        extra_conf=(
            "ssl = on\n"
            f"ssl_cert_file = '{folder / 'server.crt'}'\n"
            f"ssl_key_file = '{folder / 'server.key'}'\n"
        ),
    )
    try:
        server.start()
        server.create_role(servers.TLS_USER, servers.TLS_PASSWORD)
        owner = servers.quote_ident(servers.TLS_USER)
        server.admin().rows(f"CREATE DATABASE {servers.TLS_DBNAME} OWNER {owner}")
        yield servers.TLSPrimary(server, ca_file, other)
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def default_pgbouncer(tools: servers.Tools) -> Iterator[Path]:
    """PgBouncer of the default image's release (hack/build-pgbouncer.sh, fetched or
    built now when the cache lacks it); skip (fail on CI) when it cannot be had."""
    where = Path(tempfile.mkdtemp(prefix="headroom-pgbouncer-bin-"))
    try:
        yield _found(lambda: servers.default_pgbouncer(where, tools.owner), "PgBouncer 1.26")
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _pgbouncers(
    tools: servers.Tools, request: pytest.FixtureRequest
) -> Iterator[servers.StartPgBouncer]:
    servers.raise_nofile(NOFILE)
    with _stopped_at_teardown(request, _BOUNCERS) as started:

        def start(
            ini: str | Callable[[int, str], str], userlist: str, pgbouncer: Path | None = None
        ) -> servers.PgBouncer:
            chosen = tools if pgbouncer is None else dataclasses.replace(tools, pgbouncer=pgbouncer)
            bouncer = servers.PgBouncer(chosen, ini, userlist)
            started.append(bouncer)
            return bouncer.start()

        yield start


@pytest.fixture
def start_pgbouncer(
    tools: servers.Tools, request: pytest.FixtureRequest
) -> Iterator[servers.StartPgBouncer]:
    """``start_pgbouncer(ini, userlist, pgbouncer=None) -> PgBouncer``, accepting
    connections; ``pgbouncer``: another binary than Debian's 1.18.

    Raises servers.ServerError (with pgbouncer's log) when it does not start.
    Every PgBouncer started is stopped at teardown.
    """
    yield from _pgbouncers(tools, request)


@pytest.fixture(scope="module")
def start_module_pgbouncer(
    tools: servers.Tools, request: pytest.FixtureRequest
) -> Iterator[servers.StartPgBouncer]:
    """``start_pgbouncer`` for a module's own fixtures (loads run once for several
    tests): its PgBouncers stop after the module's last test, and their logs go
    with any of its tests' failure reports."""
    yield from _pgbouncers(tools, request)


@pytest.fixture(scope="session")
def redis_tools() -> redis_servers.RedisTools:
    """redis-server (and redis-sentinel when installed); skip (fail on CI) without it."""
    return _found(redis_servers.find_redis, "redis-server")


@pytest.fixture
def need_sentinel(redis_tools: redis_servers.RedisTools) -> None:
    """Skip (fail on CI) up front when redis-sentinel or redis-cli (which Headroom's
    start script asks the sentinels with) is not installed."""
    if redis_tools.sentinel is None:
        _missing(_NO_SENTINEL, "redis-sentinel")
    if redis_tools.cli is None:
        _missing(_NO_CLI, "redis-cli")


_NO_SENTINEL = redis_servers.ToolsMissingError(
    "missing redis-sentinel (on PATH or $HEADROOM_REDIS_SENTINEL; "
    "on Debian: apt-get install redis-sentinel)"
)
_NO_CLI = redis_servers.ToolsMissingError(
    "missing redis-cli (on PATH or $HEADROOM_REDIS_CLI; on Debian: apt-get install redis-tools)"
)


@pytest.fixture
def start_redis(
    redis_tools: redis_servers.RedisTools, request: pytest.FixtureRequest
) -> Iterator[Callable[..., redis_servers.RedisProcess]]:
    """``start_redis(conf, *, files=None, password=None, sentinel=False) -> RedisProcess``.

    ``files`` (name -> text) are written beside the config; ``password`` is what
    ``.client()`` authenticates with. With ``sentinel`` it runs redis-sentinel
    (skipped, or failed on CI, when that is not installed). Raises ServerError
    (with the log) when the process does not start; every process started is
    stopped and its dir removed at teardown.
    """
    with _stopped_at_teardown(request, _REDIS) as started:

        def start(
            conf: redis_servers.Config,
            *,
            files: dict[str, str] | None = None,
            password: str | None = None,
            sentinel: bool = False,
        ) -> redis_servers.RedisProcess:
            binary = redis_tools.server
            if sentinel:
                if redis_tools.sentinel is None:
                    _missing(_NO_SENTINEL, "redis-sentinel")
                assert redis_tools.sentinel is not None
                binary = redis_tools.sentinel
            process = redis_servers.RedisProcess(
                binary,
                conf,
                files=files,
                password=password,
                kind="sentinel" if sentinel else "redis",
            )
            started.append(process)
            return process.start()

        yield start


@pytest.fixture
def start_pod(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[[redis_servers.PodProcess], redis_servers.PodProcess]]:
    """``start_pod(process) -> process``, started (ServerError with its log when it
    does not start); every process given is stopped and its dir removed at teardown."""
    with _stopped_at_teardown(request, _PODS) as started:

        def start(process: redis_servers.PodProcess) -> redis_servers.PodProcess:
            started.append(process)
            return process.start()

        yield start


@pytest.fixture(scope="session")
def versitygw_binary() -> Path:
    """The cached versitygw build (built now when absent); skip (fail on CI) when
    it cannot be had."""
    return _found(lambda: s3_servers.find_versitygw(build=True), "versitygw")


@pytest.fixture
def start_versitygw(
    versitygw_binary: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., s3_servers.VersityGW]]:
    """``start_versitygw(*, argv=default_argv, root=None, env=None) -> VersityGW``, answering
    GET /health (ServerError with its log when it does not start); every server
    started is stopped and its dir removed at teardown."""
    with _stopped_at_teardown(request, _S3) as started:

        def start(
            *,
            argv: s3_servers.Argv = s3_servers.default_argv,
            root: s3_servers.RootCredentials | None = None,
            env: dict[str, str] | None = None,
        ) -> s3_servers.VersityGW:
            gateway = s3_servers.VersityGW(versitygw_binary, argv=argv, root=root, env=env)
            started.append(gateway)
            return gateway.start()

        yield start


@pytest.fixture(scope="session")
def exporters() -> prometheus_servers.Exporters:
    """The cached exporter builds (built now when absent); skip (fail on CI) without them."""
    return _found(lambda: prometheus_servers.find_exporters(build=True), "the exporters")


@pytest.fixture(scope="session")
def prometheus_tools() -> prometheus_servers.PrometheusTools:
    """Debian's prometheus and promtool; skip (fail on CI) without them."""
    return _found(prometheus_servers.find_prometheus, "prometheus and promtool")


@pytest.fixture
def start_exporter(
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., prometheus_servers.Exporter]]:
    """``start_exporter(binary, args, env, *, name) -> Exporter``, answering /metrics;
    every exporter started is stopped at teardown."""
    with _stopped_at_teardown(request, _EXPORTERS) as started:

        def start(
            binary: Path, args: list[str], env: dict[str, str], *, name: str
        ) -> prometheus_servers.Exporter:
            exporter = prometheus_servers.Exporter(binary, args, env, name=name)
            started.append(exporter)
            return exporter.start()

        yield start


@pytest.fixture
def start_prometheus(
    prometheus_tools: prometheus_servers.PrometheusTools, request: pytest.FixtureRequest
) -> Iterator[Callable[..., prometheus_servers.Prometheus]]:
    """``start_prometheus(*, rules, targets, scrape_interval=1, evaluation_interval=1)
    -> Prometheus``, ready (GET /-/ready); stopped and its dir removed at teardown."""
    with _stopped_at_teardown(request, _PROMETHEUS) as started:

        def start(**kwargs: Any) -> prometheus_servers.Prometheus:
            server = prometheus_servers.Prometheus(prometheus_tools.prometheus, **kwargs)
            started.append(server)
            return server.start()

        yield start


@pytest.fixture(scope="session")
def cluster() -> api_server.Cluster:
    return api_server.find()


@pytest.fixture
def namespace(cluster: api_server.Cluster) -> Iterator[str]:
    with kube.fresh_namespace(cluster.kubectl) as name:
        yield name
