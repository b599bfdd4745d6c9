"""The docs are tested like code: README.md and docs/*.md.

- every fenced block but client code (ts, python) and commands (sh) carries a marker, an HTML
  comment on the line before it: ``<!-- docs-test: {...} -->`` (a YAML flow
  mapping), which says what the block is and how it is checked:

  * ``{profile: whole}``: a whole ScalingProfile, planned and rendered by the
    CLI; a ``status.budget`` or ``ConnectionBudget`` message shown beside it
    is the plan's;
  * ``{fragment: examples/X.yaml}``: part of a profile (under ``spec``),
    merged into that example and planned and rendered;
  * ``fails: "text"`` beside either: the block is meant to be refused, with
    that text in the CLI's message;
  * ``{refusal: examples/X.yaml, set: {dotted.path: value}}``: a refusal
    message shown for that example changed so;
  * ``{output: "headroom plan ..."}``: an output shown, compared with the
    CLI's (``...`` lines stand for lines left out);
  * ``{yaml: what it is}`` / ``{text: what it is}``: not a profile or an
    output of the CLI (parsed as YAML / not checked), saying why;
  * a ``sh`` block whose lines start with ``$ headroom`` is compared with the
    CLI's output itself;
- every field path of the CRD, with its default, is in docs/api.md;
- the generated tables of docs/api.md (fields, parameters, binding keys) are
  what ``make docs`` (hack/docs_tables.py) writes from the code now;
- every make target README names exists and is in ``make help``, every
  target of ``make help`` is in README's table, and every repository path
  README names exists (or is a result file a make target writes).
"""

from __future__ import annotations

import contextlib
import copy
import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from headroom import cli
from headroom.api import v1alpha1
from headroom.planning import planner
from headroom.reconcile import outcome
from tests import hack_scripts

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_LANGUAGES = ("ts", "python")  # client code: run by tests/conformance/test_clients.py
MARKER = re.compile(r"^<!-- docs-test: (?P<spec>\{.*\}) -->$")
FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>\S*)\s*$")


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    lang: str
    text: str
    marker: dict[str, Any] | None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found = []
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        end = index + 1
        while not lines[end].strip().startswith("```"):
            end += 1
        before = next((line for line in reversed(lines[:index]) if line.strip()), "")
        mark = MARKER.match(before.strip())
        marker = yaml.safe_load(mark["spec"]) if mark else None
        text = "\n".join(line[len(fence["indent"]) :] for line in lines[index + 1 : end])
        found.append(
            Block(
                doc=str(path.relative_to(ROOT)),
                line=index + 1,
                lang=fence["lang"],
                text=text + "\n",
                marker=marker,
            )
        )
        index = end + 1
    return found


BLOCKS = [block for doc in DOCS for block in blocks_of(doc)]


def _ids(blocks: list[Block]) -> list[str]:
    return [block.where for block in blocks]


def _checked(kind: str) -> list[Block]:
    return [b for b in BLOCKS if b.marker is not None and kind in b.marker]


def _shell_outputs() -> list[Block]:
    return [b for b in BLOCKS if b.lang == "sh" and b.text.startswith("$ headroom ")]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def _merge(base: Any, part: Any) -> Any:
    if isinstance(base, dict) and isinstance(part, dict):
        merged = dict(base)
        for key, value in part.items():
            merged[key] = _merge(base.get(key), value) if key in base else value
        return merged
    return part


def _example(path: str) -> dict[str, Any]:
    found: dict[str, Any] = yaml.safe_load((ROOT / path).read_text())
    return found


def _profile_of(block: Block) -> dict[str, Any]:
    assert block.marker is not None
    body = yaml.safe_load(block.text)
    if "fragment" in block.marker:
        if "spec" not in body:
            body = {"spec": body}
        merged: dict[str, Any] = _merge(_example(block.marker["fragment"]), body)
        return merged
    assert block.marker.get("profile") == "whole", f"{block.where}: unknown marker {block.marker}"
    return dict(body)


def _plan_and_render(body: dict[str, Any], tmp_path: Path) -> tuple[int, str, int, str]:
    spec = {k: v for k, v in body.items() if k != "status"}
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = _run(["plan", str(path)])
    selector = f"app={body['spec']['app']['deployment']}"
    rendered, _, render_err = _run(["render", str(path), "--app-selector", selector])
    return code, err, rendered, render_err


def test_every_block_says_how_it_is_checked() -> None:
    unmarked = [
        b.where for b in BLOCKS if b.marker is None and b.lang not in (*CODE_LANGUAGES, "sh")
    ]
    assert not unmarked, f"blocks without a <!-- docs-test: ... --> marker: {unmarked}"
    known = {"profile", "fragment", "fails", "refusal", "set", "output", "yaml", "text"}
    for block in BLOCKS:
        if block.marker is not None:
            assert set(block.marker) <= known, f"{block.where}: {block.marker}"


PROFILE_BLOCKS = [b for b in BLOCKS if b.marker and ({"profile", "fragment"} & set(b.marker))]


@pytest.mark.parametrize("block", PROFILE_BLOCKS, ids=_ids(PROFILE_BLOCKS))
def test_profile_blocks_plan_and_render(block: Block, tmp_path: Path) -> None:
    assert block.marker is not None
    body = _profile_of(block)
    code, err, rendered, render_err = _plan_and_render(body, tmp_path)
    expected = block.marker.get("fails")
    if expected is None:
        assert (code, err) == (0, ""), f"{block.where}: plan refused it: {err}"
        assert (rendered, render_err) == (0, ""), f"{block.where}: render refused it: {render_err}"
    else:
        assert code == 1, f"{block.where} is marked to fail, but plan accepts it"
        assert expected in err, f"{block.where}: {err}"
        assert rendered == 1 and expected in render_err


WHOLE_WITH_STATUS = [
    b
    for b in PROFILE_BLOCKS
    if "status" in (yaml.safe_load(b.text) or {}) and "fails" not in (b.marker or {})
]


@pytest.mark.parametrize("block", WHOLE_WITH_STATUS, ids=_ids(WHOLE_WITH_STATUS))
def test_status_shown_beside_a_profile_is_its_plan(block: Block) -> None:
    body = _profile_of(block)
    profile = v1alpha1.parse_profile({k: v for k, v in body.items() if k != "status"})
    plan = planner.plan(profile, facts=planner.Facts(keda=True, cosi="v1alpha1"))
    shown = body["status"]
    budget = outcome.budget_status(plan, since="")
    for key, value in shown.get("budget", {}).items():
        assert budget.get(key) == value, f"{block.where}: status.budget.{key}"
    message = outcome.within_budget(plan).message
    for cond in shown.get("conditions", []):
        if cond["type"] == "ConnectionBudget" and "message" in cond:
            assert cond["message"] == message, f"{block.where}: ConnectionBudget"


def _compare_output(shown: str, actual: str, *, where: str) -> None:
    """Shown lines in order; a ``...`` line stands for lines left out."""
    actual_lines = [line.rstrip() for line in actual.splitlines()]
    chunks: list[list[str]] = [[]]
    for line in shown.splitlines():
        if line.strip() == "...":
            chunks.append([])
        else:
            chunks[-1].append(line.rstrip())
    if len(chunks) == 1:
        assert chunks[0] == actual_lines, f"{where}: the CLI prints\n{actual}"
        return
    at = 0
    for chunk in chunks:
        if not chunk:
            continue
        for start in range(at, len(actual_lines) - len(chunk) + 1):
            if actual_lines[start : start + len(chunk)] == chunk:
                at = start + len(chunk)
                break
        else:
            raise AssertionError(f"{where}: {chunk} not in the CLI's output\n{actual}")


def _cli_output(command: str) -> str:
    argv = command.split()
    assert argv[0] == "headroom", command
    code, out, err = _run(argv[1:])
    assert code == 0, f"{command}: {err}"
    return out


OUTPUTS = _shell_outputs() + _checked("output")


@pytest.mark.parametrize("block", OUTPUTS, ids=_ids(OUTPUTS))
def test_outputs_shown_are_the_clis(block: Block) -> None:
    if block.marker and "output" in block.marker:
        command, shown = block.marker["output"], block.text
    else:
        first, _, shown = block.text.partition("\n")
        command = first.removeprefix("$ ")
    _compare_output(shown, _cli_output(command), where=block.where)


REFUSALS = _checked("refusal")


@pytest.mark.parametrize("block", REFUSALS, ids=_ids(REFUSALS))
def test_refusals_shown_are_the_clis(block: Block, tmp_path: Path) -> None:
    assert block.marker is not None
    body = copy.deepcopy(_example(block.marker["refusal"]))
    for dotted, value in block.marker.get("set", {}).items():
        node = body
        *parents, last = dotted.split(".")
        for name in parents:
            node = node.setdefault(name, {})
        node[last] = value
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(body))
    code, _, err = _run(["plan", str(path)])
    assert code == 1, f"{block.where}: plan accepts it"
    message = " ".join(block.text.split())
    at = 0
    for piece in (p.strip() for p in message.split("...")):
        if piece:
            found = err.find(piece, at)
            assert found >= 0, f"{block.where}: {piece!r} not in\n{err}"
            at = found + len(piece)


YAML_BLOCKS = [b for b in BLOCKS if b.lang == "yaml"]


@pytest.mark.parametrize("block", YAML_BLOCKS, ids=_ids(YAML_BLOCKS))
def test_yaml_blocks_parse(block: Block) -> None:
    assert list(yaml.safe_load_all(block.text)), block.where


# --- the CRD's fields and the generated tables


def _crd_paths() -> list[tuple[str, Any]]:
    text = (ROOT / "crds" / "headroom.dev_scalingprofiles.yaml").read_text()
    root = yaml.safe_load(text)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    found: list[tuple[str, Any]] = []

    def walk(node: dict[str, Any], path: str) -> None:
        found.append((path, node.get("default")))
        for name, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{name}")
        for key, suffix in (("items", "[]"), ("additionalProperties", ".*")):
            sub = node.get(key)
            if isinstance(sub, dict) and sub.get("properties"):
                walk(sub, path + suffix)

    for name, sub in root["properties"]["spec"]["properties"].items():
        walk(sub, f"spec.{name}")
    return found


def _default_words(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict | list):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    return str(value)


def test_every_crd_field_and_default_is_in_the_api_doc() -> None:
    doc = (ROOT / "docs" / "api.md").read_text().splitlines()
    missing = []
    for path, default in _crd_paths():
        lines = [line for line in doc if f"`{path}`" in line]
        if not lines:
            missing.append(path)
        elif default is not None and not any(f"`{_default_words(default)}`" in x for x in lines):
            missing.append(f"{path} (default {default})")
    assert not missing, f"docs/api.md does not document {missing} (make docs)"


def _docs_tables() -> ModuleType:
    return hack_scripts.load("docs_tables")


def test_generated_tables_are_current() -> None:
    tables = _docs_tables()
    found: set[str] = set()
    for path in tables.documents():
        doc = path.read_text()
        found |= set(tables.sections(doc))
        assert doc == tables.regenerate(doc), f"{path.name}'s generated tables are stale: make docs"
    assert found == set(tables.TABLES), "a generated table is in no document"


def test_binding_table_is_what_render_writes() -> None:
    """Every key the rendered bindings hold is a row, in every column it is
    written in, with the value render writes."""
    tables = _docs_tables()
    doc = (ROOT / "docs" / "api.md").read_text()
    rows = {
        line.split("|")[1].strip().strip("`"): [c.strip() for c in line.split("|")[3:-1]]
        for line in tables.sections(doc)["binding"].splitlines()[2:]
    }
    columns = tables.binding_rendered()
    for index, column in enumerate((*tables.DIALECTS, "worker")):
        for key, value in columns[column].items():
            assert key in rows, f"binding key {key} is not in docs/api.md's table"
            assert rows[key][index] == tables._value(value), f"{key} ({column})"
        for key, cells in rows.items():
            if cells[index] != "-":
                assert key in columns[column], f"{key} is not in the {column} binding"
    assert any("SENTINELS" in key for key in rows), "the Sentinel keys are in the table"


# --- README: make targets and paths

README = (ROOT / "README.md").read_text()


def _help_targets() -> set[str]:
    out = subprocess.run(
        ["make", "-s", "--no-print-directory", "help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[1] for line in out.splitlines() if line.strip().startswith("make ")}


def test_make_targets_named_in_the_readme_exist_and_are_listed() -> None:
    makefile = (ROOT / "Makefile").read_text()
    defined = set(re.findall(r"^([a-z0-9-]+):", makefile, re.M))
    named = set(re.findall(r"`make ([a-z0-9-]+)", README))
    listed = _help_targets()
    assert named, "README names make targets"
    assert not named - defined, f"README names targets the Makefile lacks: {named - defined}"
    assert not named - listed, f"`make help` omits {named - listed}"
    table = set(re.findall(r"^\| `make ([a-z0-9-]+)` \|", README, re.M))
    assert not listed - table, f"README's table of make targets lacks {listed - table}"


def _named_paths() -> set[str]:
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    candidates = set(re.findall(r"`([^`\s]+)`", prose)) | set(
        re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", prose)
    )
    tops = {p.name for p in ROOT.iterdir() if not p.name.startswith(".")}
    return {
        c.rstrip("/") for c in candidates if "/" in c and "://" not in c and c.split("/")[0] in tops
    }


def test_paths_named_in_the_readme_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    paths = _named_paths()
    assert len(paths) > 10, paths
    missing = []
    for path in sorted(paths):
        pattern = re.sub(r"<[^>]*>", "*", path).replace("[", "").replace("]", "")
        if any(ROOT.glob(pattern)):
            continue
        if path.startswith("bench/results/") and f"--out {path}" in makefile.replace(
            "$(CURDIR)/", "--out "
        ):
            continue  # a result file its make target writes
        missing.append(path)
    assert not missing, f"README names paths that do not exist: {missing}"
