"""Fixtures for the e2e suite, which needs a real Kubernetes API server.

* ``KUBECONFIG`` set: the tests use that cluster and start nothing (kubectl from PATH).
* otherwise: ``hack/cluster.sh up`` starts (or reuses, ~1s) the local control
  plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok)
  and the tests use its kubeconfig and the kubectl built next to it. The
  cluster is left running for the next session; ``make cluster-down`` stops it.

Every test under tests/e2e is marked ``e2e`` (``-m 'not e2e'`` skips them).
When a test fails against the local cluster, the tail of every component log
is attached to the failure report, and so is the operator's log when the test
used the session's one ``operator`` process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

E2E_DIR = Path(__file__).resolve().parent
# Tests do `import kube`; make that work whatever the import mode and whether
# or not tests/ is a package.
if str(E2E_DIR) not in sys.path:
    sys.path.insert(0, str(E2E_DIR))

import kube  # noqa: E402
import operator_process  # noqa: E402

REPO = E2E_DIR.parents[1]
CLUSTER_SH = REPO / "hack" / "cluster.sh"
BUILD_SH = REPO / "hack" / "build-binaries.sh"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
LOG_TAIL_LINES = 30
OPERATOR_LOG_LINES = 80

# Set once this session starts (or reuses) the local cluster: its state dir.
LOCAL_CLUSTER_DIR = pytest.StashKey[Path]()


def _in_e2e(item: pytest.Item) -> bool:
    return E2E_DIR in Path(str(item.path)).resolve().parents


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: the mark must be present before `-m` deselection runs.
    for item in items:
        if _in_e2e(item):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    op = getattr(item, "funcargs", {}).get("operator")
    if report.failed and isinstance(op, operator_process.OperatorProcess):
        report.sections.append(
            (f"operator log, last {OPERATOR_LOG_LINES} lines", op.log_tail(OPERATOR_LOG_LINES))
        )
    cluster_dir = item.config.stash.get(LOCAL_CLUSTER_DIR, None)
    if report.failed and cluster_dir is not None and _in_e2e(item):
        for component in COMPONENTS:
            path = cluster_dir / "logs" / f"{component}.log"
            if path.is_file():
                lines = path.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
                report.sections.append(
                    (f"{component} log, last {LOG_TAIL_LINES} lines ({path})", "\n".join(lines))
                )
    return report


def _run_script(script: Path, *args: str) -> str:
    """Run a hack/ script; return its stdout (last line); fail the session clearly."""
    proc = subprocess.run(
        [str(script), *args], capture_output=True, text=True, cwd=REPO, check=False
    )
    if proc.returncode != 0:
        pytest.fail(
            f"{script.relative_to(REPO)} {' '.join(args)} exited {proc.returncode}:\n"
            f"{proc.stderr[-6000:]}",
            pytrace=False,
        )
    lines = proc.stdout.strip().splitlines()
    if not lines:
        pytest.fail(f"{script.relative_to(REPO)} {' '.join(args)} printed nothing", pytrace=False)
    return lines[-1]


@pytest.fixture(scope="session")
def _cluster(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Which cluster this session talks to: the user's ($KUBECONFIG) or the local one."""
    env = os.environ.get("KUBECONFIG")
    if env:
        return {"kubeconfig": env, "bin_dir": None}
    cache = Path(os.environ.get("HEADROOM_CACHE", Path.home() / ".cache" / "headroom"))
    # Stashed before `up` so that a failed start still attaches the logs.
    request.config.stash[LOCAL_CLUSTER_DIR] = Path(os.environ.get("CLUSTER_DIR", cache / "cluster"))
    kubeconfig = _run_script(CLUSTER_SH, "up")
    request.config.stash[LOCAL_CLUSTER_DIR] = Path(kubeconfig).parent
    bin_dir = _run_script(BUILD_SH)  # instant: the binaries are cached by now
    os.environ["KUBECONFIG"] = kubeconfig
    return {"kubeconfig": kubeconfig, "bin_dir": bin_dir}


@pytest.fixture(scope="session")
def kubeconfig(_cluster: dict[str, Any]) -> str:
    """Path of the kubeconfig the e2e tests use (also exported as $KUBECONFIG)."""
    path: str = _cluster["kubeconfig"]
    return path


@pytest.fixture(scope="session")
def kubectl(_cluster: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> kube.Kubectl:
    """``kubectl(*args, input=None, check=True) -> CompletedProcess[str]``.

    Raises kube.KubectlError (a CalledProcessError showing stderr) when check is
    true and kubectl fails.
    """
    if _cluster["bin_dir"]:
        binary = str(Path(_cluster["bin_dir"]) / "kubectl")
    else:
        found = shutil.which("kubectl")
        if found is None:
            pytest.fail("KUBECONFIG is set but no kubectl on PATH", pytrace=False)
        binary = found
    kubeconfig: str = _cluster["kubeconfig"]
    base = [binary]
    if os.pathsep not in kubeconfig:  # a KUBECONFIG list is left to the environment
        base.append(f"--kubeconfig={kubeconfig}")
    # A private discovery cache: a cluster recreated on the same address must
    # not be described by the previous one's cached API list.
    base.append(f"--cache-dir={tmp_path_factory.mktemp('kubectl-cache')}")
    return kube.kubectl_runner(base)


@pytest.fixture
def namespace(kubectl: kube.Kubectl) -> Iterator[str]:
    """A fresh namespace (restricted Pod Security) for one test."""
    with kube.fresh_namespace(kubectl) as name:
        yield name


@pytest.fixture
def pooler_agents(kubectl: kube.Kubectl, namespace: str) -> Iterator[Any]:
    """The namespace's pooler pods (write and read) run here for real
    (tests/e2e/pooler_pods.py: PgBouncer and its agent), for a test where one
    profile's pool (on a primary or a replica) shrinks so that
    another's grows: the growth waits until the agents have confirmed the shrink.
    Nobody connects through them, so no database server is needed; the hosts
    the tests' profiles name resolve to 127.0.0.1 in them."""
    import shared_server

    shared_server.needs_root()
    hosts = ("db", "pg-main", "shared-db", "reports-db")
    with shared_server.pooler_pods_here(kubectl, namespace, hosts=hosts) as pods:
        yield pods


@pytest.fixture(scope="session")
def operator(
    kubectl: kube.Kubectl, kubeconfig: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[operator_process.OperatorProcess]:
    """The real operator (``headroom run``), one process for the whole session.

    Its webhook listens on 127.0.0.1; its log is attached to failing tests.
    """
    workdir = tmp_path_factory.mktemp("operator")
    with operator_process.running(kubectl, kubeconfig=kubeconfig, workdir=workdir) as op:
        yield op
        assert op.alive(), "the operator crashed:\n" + op.log_tail()


@pytest.fixture(scope="session")
def helm() -> str:
    """Path of helm (HELM_VERSION), built from the Go module proxy when not cached."""
    return _run_script(REPO / "hack" / "build-helm.sh")


@pytest.fixture(scope="session")
def upstream_crds_dir() -> Path:
    """Folder of upstream CRDs ($HEADROOM_FIXTURES_CRDS or <repo>/../shared/fixtures/crds)."""
    default = REPO.parent / "shared" / "fixtures" / "crds"
    path = Path(os.environ.get("HEADROOM_FIXTURES_CRDS") or default)
    if not path.is_dir():
        pytest.skip(
            f"upstream CRD fixtures not found at {path} "
            "(set HEADROOM_FIXTURES_CRDS to the folder holding e.g. keda.sh_scaledobjects.yaml)"
        )
    return path
