"""Run the unit tests and the Postgres-client conformance tests against the
lowest versions pyproject.toml allows (``make floors``; CI runs it), so a
floor we claim is one the code really runs on.

Every ``name>=X`` runtime dependency is pinned to ``name==X`` in a venv of
its own under $HEADROOM_CACHE/floors-<hash of the pins> (built once, reused
while the floors stay the same); Headroom itself comes from this work tree.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOR = re.compile(r"^(?P<name>[A-Za-z0-9_.\-]+(\[[A-Za-z0-9_,\-]+\])?)>=(?P<version>[^,;\s]+)$")
TESTS = [
    "tests/unit",
    "tests/conformance/test_primary_limits.py",
    "tests/conformance/test_server_tls.py",
    "tests/conformance/test_replica_lag.py",
]


def pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = []
    for requirement in project["dependencies"]:
        match = FLOOR.match(requirement.replace(" ", ""))
        if match is None:
            raise SystemExit(f"floors: {requirement!r} has no plain >= floor to test")
        found.append(f"{match['name']}=={match['version']}")
    return found


def main() -> int:
    wanted = pins()
    cache = Path(os.environ.get("HEADROOM_CACHE", Path.home() / ".cache" / "headroom"))
    # the tools the unit tests run with (not floors: the newest that install)
    tools = ["pytest>=8.0", "hypothesis>=6.100"]
    key = hashlib.sha256("\n".join([sys.version, *wanted, *tools]).encode()).hexdigest()[:12]
    venv = cache / f"floors-{key}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *wanted, *tools], check=True)
        (venv / ".installed").write_text("\n".join(wanted) + "\n")
    print("floors:", " ".join(wanted), flush=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
        cwd=ROOT,
        env=env,
        check=False,
    ).returncode


if __name__ == "__main__":
    raise SystemExit(main())
