#!/usr/bin/env python3
"""``make fuzz``: the long run of the API fuzzer (tests/fuzzing) with all three
judges, and its figures.

1. ``--examples`` generated profiles (Hypothesis, random seed unless
   ``HEADROOM_FUZZ_SEED``), each judged by the oracle: refused naming a field,
   or planned and rendered without a crash;
2. each also dry-run created on the API server (``$KUBECONFIG``, the CRD
   installed from crds/), compared with the model both ways, and what the API
   server would store planned again;
3. every distinct config the planned ones render run in the real programs:
   pgbouncer.ini in PgBouncer 1.18 (and the default image's 1.26), redis.conf
   in redis-server, rule files in ``promtool check rules``, the bucket agent's
   config through the agent into versitygw.

Crashes, configs a program refused and model/CRD disagreements are counted and
the first of each written out (their bodies replay in the unit, conformance or
e2e fuzz tests). Writes a Markdown report to --out and prints it; exits 1 when
anything broke a promise.

    KUBECONFIG=... .venv/bin/python bench/fuzz.py [--examples 10000] [--out bench/results/fuzz.md]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "operator", REPO / "tests" / "conformance", REPO / "tests" / "e2e"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import fuzz_api  # noqa: E402
import fuzz_programs  # noqa: E402
import s3_servers  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from tests.fuzzing import oracle, strategies  # noqa: E402

from headroom.api import crd  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "fuzz.md"
SHOWN = 3  # failures of each kind written out in full


class Run:
    def __init__(self, dry_run: fuzz_api.DryRun | None) -> None:
        self.dry_run = dry_run
        self.verdicts: collections.Counter[str] = collections.Counter()
        self.sections: collections.Counter[str] = collections.Counter()
        self.crashes: list[str] = []
        self.disagreements: collections.Counter[str] = collections.Counter()
        self.disagreed: list[str] = []
        self.dry_runs = 0
        self.planned: list[tuple[Any, oracle.Artifacts]] = []

    def judge(self, body: Any) -> None:
        done = sum(self.verdicts.values())
        if done and done % 1000 == 0:
            print(f"fuzz: {done} examples: {dict(self.verdicts)}", flush=True)
        try:
            outcome = oracle.judge(body)
        except oracle.OracleError as err:
            self.verdicts["crash"] += 1
            self.crashes.append(str(err))
            return
        self.verdicts[outcome.verdict] += 1
        if outcome.verdict == "planned":
            self.planned.append((body, outcome.artifacts))
            self.sections.update(_sections(body))
        if self.dry_run is not None:
            self.dry_runs += 1
            found = fuzz_api.compare(self.dry_run, body)
            if found is not None:
                self.disagreements[found.kind] += 1
                self.disagreed.append(str(found))


def _sections(body: dict[str, Any]) -> list[str]:
    """What a planned profile exercised (for the coverage table)."""
    spec = body["spec"]
    found = ["every profile"]
    rr = spec["database"].get("readReplicas")
    if rr:
        found.append(f"read replicas, mode {rr['mode']}")
    for bucket in (spec.get("storage") or {}).get("buckets", []):
        provider = next(p for p in ("cosi", "s3", "builtin") if p in bucket)
        found.append(f"a bucket, provider {provider}")
        if bucket.get("cors"):
            found.append("a bucket with CORS")
    alerts = spec.get("alerts") or {}
    if alerts.get("labels"):
        found.append("alert labels")
    if any(
        "for" in (alerts.get(g) or {}) for g in ("pooler", "database", "cache", "queues", "app")
    ):
        found.append("an alert group's for:")
    if (alerts.get("app") or {}).get("metrics"):
        found.append("app metrics (histogram, status label)")
    if spec.get("cache"):
        found.append("Redis instances")
    if spec.get("queues"):
        found.append("queues")
    if (spec.get("pooler") or {}).get("parameters"):
        found.append("pooler parameters")
    return sorted(set(found), key=found.index)


def _generate(run: Run, *, examples: int, chosen_seed: int) -> None:
    @seed(chosen_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(body=strategies.profiles())
    def each(body: Any) -> None:
        run.judge(body)

    each()


def _programs(run: Run) -> dict[str, Any]:
    distinct: dict[str, dict[Any, Any]] = {"pgbouncer": {}, "redis": {}, "rules": {}, "buckets": {}}
    for body, art in run.planned:
        for ini, include in art.pgbouncer:
            distinct["pgbouncer"].setdefault((ini, include, art.pgbouncer_version), body)
        for conf in art.redis:
            distinct["redis"].setdefault(conf, body)
        if art.rules:
            distinct["rules"].setdefault(art.rules, body)
        if art.buckets:
            distinct["buckets"].setdefault(art.buckets, body)
    refused: dict[str, list[str]] = {name: [] for name in distinct}
    seconds: dict[str, float] = {}
    versions: dict[str, str] = {}
    with fuzz_programs.Judges.found(
        default_pgbouncer=True,
        versitygw=s3_servers.find_versitygw(build=True),
    ) as judges:
        versions = _versions(judges)
        print(f"fuzz: { ({k: len(v) for k, v in distinct.items()}) } distinct configs", flush=True)
        started = time.monotonic()
        unchecked = sum(1 for _, _, v in distinct["pgbouncer"] if judges.bouncer_for(v) is None)
        verdicts = fuzz_programs.judge_all(judges.pgbouncer, distinct["pgbouncer"])
        refused["pgbouncer"] = [
            f"{problem}\n{oracle.dump(body)}"
            for problem, body in zip(verdicts, distinct["pgbouncer"].values(), strict=True)
            if problem
        ]
        seconds["pgbouncer"] = time.monotonic() - started
        started = time.monotonic()
        verdicts = fuzz_programs.judge_all(judges.redis_conf, [(c,) for c in distinct["redis"]])
        refused["redis"] = [
            f"{problem}\n{oracle.dump(body)}"
            for problem, body in zip(verdicts, distinct["redis"].values(), strict=True)
            if problem
        ]
        seconds["redis"] = time.monotonic() - started
        started = time.monotonic()
        texts = list(distinct["rules"])
        for text, problem in zip(texts, judges.rules(texts), strict=True):
            if problem:
                refused["rules"].append(f"{problem}\n{oracle.dump(distinct['rules'][text])}")
        seconds["rules"] = time.monotonic() - started
        started = time.monotonic()
        for config, body in distinct["buckets"].items():
            if problem := judges.buckets(config):
                refused["buckets"].append(f"{problem}\n{oracle.dump(body)}")
        seconds["buckets"] = time.monotonic() - started
    return {
        "distinct": {name: len(found) for name, found in distinct.items()},
        "refused": refused,
        "seconds": seconds,
        "unchecked": unchecked,
        "versions": versions,
    }


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return "not found"
    return ((done.stdout or done.stderr).strip().splitlines() or ["?"])[0]


def _versions(judges: fuzz_programs.Judges) -> dict[str, str]:
    found = {
        f"PgBouncer {'.'.join(map(str, v))}": _first_line([str(p), "--version"])
        for v, p in sorted(judges.bouncers.items())
    }
    found["redis-server"] = _first_line([str(judges.redis), "--version"])
    found["promtool"] = _first_line([str(judges.promtool), "--version"])
    if judges.versitygw is not None:
        found["versitygw"] = _first_line([str(judges.versitygw), "--version"])
    return found


def _report(
    run: Run, programs: dict[str, Any], *, examples: int, chosen_seed: int, seconds: float
) -> str:
    refused = programs["refused"]
    total_refused = sum(len(v) for v in refused.values())
    lines = [
        "# API fuzzing (`make fuzz`)",
        "",
        f"{datetime.date.today().isoformat()}, {platform.node() or 'this machine'} "
        f"({os.cpu_count()} cores), seed {chosen_seed}, {seconds / 60:.1f} min in all. "
        "Profiles generated by tests/fuzzing/strategies.py (every section, hostile "
        "strings, look-alike Unicode, huge values, values just past each bound of the CRD); "
        "command: `make fuzz` (`bench/fuzz.py --examples "
        f"{examples}`).",
        "",
        "| figure | count |",
        "|---|---|",
        f"| examples run | {sum(run.verdicts.values())} |",
        f"| refused by the model, naming a field | {run.verdicts['model']} |",
        f"| refused by the planner, naming a field | {run.verdicts['planner']} |",
        f"| planned and rendered | {run.verdicts['planned']} |",
        f"| **crashes** (or a refusal naming no field) | **{run.verdicts['crash']}** |",
        f"| dry runs on the API server | {run.dry_runs} |",
        f"| **model/CRD disagreements** | **{sum(run.disagreements.values())}** |",
        f"| distinct configs run in the real programs | {sum(programs['distinct'].values())} |",
        f"| **accepted, then refused by a program** | **{total_refused}** |",
        "",
        "| program | distinct configs | refused | seconds |",
        "|---|---|---|---|",
    ]
    names = {"pgbouncer": "PgBouncer", "redis": "redis-server", "rules": "promtool check rules",
             "buckets": "bucket agent + versitygw"}  # fmt: skip
    for key, name in names.items():
        lines.append(
            f"| {name} | {programs['distinct'][key]} | {len(refused[key])} | "
            f"{programs['seconds'][key]:.0f} |"
        )
    if programs["unchecked"]:
        lines += [
            "",
            f"{programs['unchecked']} pgbouncer.ini for a PgBouncer newer than any here were "
            "not run.",
        ]
    if run.disagreements:
        lines += ["", "Disagreements by kind: " + ", ".join(
            f"{k} {v}" for k, v in run.disagreements.items())]  # fmt: skip
    lines += ["", "What the planned profiles exercised:", "", "| section | planned profiles |",
              "|---|---|"]  # fmt: skip
    lines += [f"| {name} | {count} |" for name, count in run.sections.most_common()]
    lines += ["", "Programs:", ""]
    lines += [f"- {name}: {version}" for name, version in programs["versions"].items()]
    failures = (
        [("crash", c) for c in run.crashes[:SHOWN]]
        + [("disagreement", d) for d in run.disagreed[:SHOWN]]
        + [(k, r) for k, v in refused.items() for r in v[:SHOWN]]
    )
    if failures:
        lines += ["", "## First failures", ""]
        for kind, text in failures:
            lines += [f"### {kind}", "", "```", text[:4000], "```", ""]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-api", action="store_true", help="skip the API server judge")
    args = parser.parse_args()
    chosen_seed = int(os.environ.get("HEADROOM_FUZZ_SEED") or random.randrange(1 << 32))
    started = time.monotonic()
    dry_run = None
    if not args.no_api:
        dry_run = fuzz_api.DryRun(os.environ["KUBECONFIG"], "headroom-fuzz")
        dry_run.prepare(crd.build_crd())
    run = Run(dry_run)
    print(f"fuzz: {args.examples} examples, seed {chosen_seed}", flush=True)
    _generate(run, examples=args.examples, chosen_seed=chosen_seed)
    print(f"fuzz: {dict(run.verdicts)}; programs next", flush=True)
    programs = _programs(run)
    report = _report(
        run, programs, examples=args.examples, chosen_seed=chosen_seed,
        seconds=time.monotonic() - started,
    )  # fmt: skip
    args.out.write_text(report)
    print(report)
    broken = run.verdicts["crash"] + sum(run.disagreements.values())
    broken += sum(len(v) for v in programs["refused"].values())
    return 1 if broken else 0


if __name__ == "__main__":
    raise SystemExit(main())
