"""Fuzzed profiles (tests/fuzzing) judged by the real programs: every profile
the model and the planner accept renders configs PgBouncer (1.18, and the
default image's 1.26 from Debian's archive), redis-server, promtool and versitygw (through
the bucket agent) accept; and Prometheus' own grammar for durations and label
names agrees with the model's in promtool itself. ``make fuzz`` runs the same
long (bench/fuzz.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fuzz_programs
import pytest
import s3_servers
from hypothesis import example, given
from hypothesis import strategies as st
from tests import profiles
from tests.fuzzing import oracle, strategies
from tests.fuzzing.settings import fuzz_settings

from headroom import yamlfmt
from headroom.api import prometheus

pytestmark = pytest.mark.conformance


@pytest.fixture(scope="module")
def judges() -> Iterator[fuzz_programs.Judges]:
    versitygw = s3_servers.find_versitygw(build=False)
    with fuzz_programs.Judges.found(default_pgbouncer=True, versitygw=versitygw) as found:
        yield found


# Profiles each class of issue 20 found, rendered so the programs see them.
KNOWN = [
    profiles.base(**{"alerts.labels": {"team": "{{ $value }}", "env": "a{{b"}}),
    profiles.base(
        cache=profiles.instance(config={"notify-keyspace-events": "K$"}),
        queues=[{"name": "mail", "redis": "jobs", "listName": "{{bull}}:q", "image": "w:1"}],
    ),
    profiles.base(**{"alerts.app.for": "1y2w3d4h5m6s7ms", "alerts.cache.for": "0"}),
    profiles.base(
        storage=profiles.buckets(
            profiles.builtin_bucket(
                "photos",
                cors={"allowedOrigins": ["https://*.example.com", "http://localhost:3000"]},
            )
        )
    ),
]


def _judged(judges: fuzz_programs.Judges, found: list[tuple[Any, oracle.Artifacts]]) -> list[str]:
    """Every distinct config of ``found`` through its program; the refusals."""
    bouncers: dict[tuple[str, str, tuple[int, int]], Any] = {}
    confs: dict[str, Any] = {}
    rules: dict[str, Any] = {}
    buckets: dict[str, Any] = {}
    for body, art in found:
        for ini, include in art.pgbouncer:
            bouncers.setdefault((ini, include, art.pgbouncer_version), body)
        for conf in art.redis:
            confs.setdefault(conf, body)
        if art.rules:
            rules.setdefault(art.rules, body)
        if art.buckets:
            buckets.setdefault(art.buckets, body)
    refused = []
    verdicts = fuzz_programs.judge_all(judges.pgbouncer, bouncers)
    refused += [
        f"{p}\n{oracle.dump(b)}" for p, b in zip(verdicts, bouncers.values(), strict=True) if p
    ]
    verdicts = fuzz_programs.judge_all(judges.redis_conf, [(conf,) for conf in confs])
    refused += [
        f"{p}\n{oracle.dump(b)}" for p, b in zip(verdicts, confs.values(), strict=True) if p
    ]
    texts = list(rules)
    for text, problem in zip(texts, judges.rules(texts), strict=True):
        if problem:
            refused.append(f"{problem}\n{oracle.dump(rules[text])}")
    for config, body in buckets.items():
        if problem := judges.buckets(config):
            refused.append(f"{problem}\n{oracle.dump(body)}")
    return refused


def test_what_the_fuzzed_profiles_render_runs_in_the_real_programs(
    judges: fuzz_programs.Judges,
) -> None:
    found: list[tuple[Any, oracle.Artifacts]] = []

    @given(body=strategies.profiles())
    @fuzz_settings(short=60)
    def collect(body: Any) -> None:
        outcome = oracle.judge(body)
        if outcome.verdict == "planned":
            found.append((body, outcome.artifacts))

    collect()
    for body in KNOWN:
        outcome = oracle.judge(body)
        assert outcome.verdict == "planned", outcome.message
        found.append((body, outcome.artifacts))
    assert len(found) >= len(KNOWN) + 5
    refused = _judged(judges, found)
    assert not refused, "\n\n".join(refused[:5])


def _rule_file(**fields: Any) -> str:
    rule = {"alert": "Probe", "expr": "vector(1) > 0", **fields}
    return yamlfmt.dump({"groups": [{"name": "probe", "rules": [rule]}]})


def test_durations_and_label_names_are_prometheus_own(judges: fuzz_programs.Judges) -> None:
    """Whatever the model takes as a rule's ``for:`` or a label name, promtool
    takes too; whatever promtool refuses, the model refuses."""
    durations: list[str] = []
    names: list[str] = []

    @given(
        duration=st.one_of(strategies.durations(), st.text(st.sampled_from("019ymwdhs"))),
        name=strategies.label_names(),
    )
    @example(duration="106751d23h47m16s854ms", name="__name__")
    @example(duration="106751d23h47m16s855ms", name="team")
    @example(duration="5m1h", name="le")
    @fuzz_settings(short=150)
    def collect(duration: str, name: str) -> None:
        durations.append(duration)
        names.append(name)

    collect()
    files = [_rule_file(**{"for": d}) for d in durations]
    files += [_rule_file(labels={n: "x"}) for n in names]
    verdicts = judges.rules(files)
    checks = [prometheus.duration_problem] * len(durations) + [prometheus.label_name_problem] * len(
        names
    )
    wrong = [
        f"the model takes {text!r}, promtool refuses it: {verdict}"
        for text, verdict, check in zip([*durations, *names], verdicts, checks, strict=True)
        if check(text) is None and verdict is not None
    ]
    assert not wrong, "\n".join(wrong[:20])
    # promtool itself refuses what the issue met
    by_duration = dict(zip(durations, verdicts, strict=False))
    assert by_duration["5m1h"] is not None
    assert by_duration["106751d23h47m16s855ms"] is not None
    assert by_duration["106751d23h47m16s854ms"] is None


def test_the_judges_refuse_what_the_programs_refuse(judges: fuzz_programs.Judges) -> None:
    """The judges can fail: configs each program refuses (or ignores a line of)."""
    # rendered for 1.18: valid in every PgBouncer here
    body = profiles.base(cache=profiles.instance(), **{"pooler.image": "x/pgbouncer:1.18.0"})
    outcome = oracle.judge(body)
    assert outcome.verdict == "planned"
    ini, _ = outcome.artifacts.pgbouncer[0]
    conf = outcome.artifacts.redis[0]
    rules = outcome.artifacts.rules
    for version in judges.bouncers:
        bad_key = ini.replace("shop = host=", "shop$db = host=")
        assert "syntax error" in (judges.pgbouncer(bad_key, "", version) or "")
        unknown = ini.replace("[pgbouncer]\n", "[pgbouncer]\nno_such_setting = 1\n")
        assert "unknown parameter" in (judges.pgbouncer(unknown, "", version) or "")
        assert judges.pgbouncer(ini, "", version) is None
    assert "FATAL CONFIG FILE ERROR" in (judges.redis_conf(conf + "maxmemory lots\n") or "")
    assert judges.redis_conf(conf) is None
    bad_for, good = judges.rules([rules.replace("for: 5m", "for: 5m1h"), rules])
    assert bad_for is not None and "5m1h" in bad_for
    assert good is None
