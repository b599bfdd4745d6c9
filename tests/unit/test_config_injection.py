"""The planner's refusals that keep pgbouncer.ini and redis.conf whole: a value
that would start a new line (a directive of the user's choosing) is a problem
naming its field, and a queue that could evict is refused. Pure; the
conformance suite runs what these same plans render in the real programs."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import typing
from typing import Any

import pytest

from headroom.api import v1alpha1
from headroom.builders import pgbouncer
from headroom.planning import planner, redis_params
from headroom.reconcile import bucket_check, resolver
from tests import profiles

MEMORY = "32Mi"
# every maxmemory-policy the API accepts but noeviction
_POLICIES = typing.get_args(v1alpha1.CacheInstance.model_fields["eviction_policy"].annotation)[0]
EVICTING = [p for p in typing.get_args(_POLICIES) if p != "noeviction"]


def _pooler_plan(parameters: dict[str, str] | None = None) -> planner.Plan:
    body = profiles.base(**({"pooler.parameters": parameters} if parameters else {}))
    return planner.plan(v1alpha1.parse_profile(body))


def _cache_plan(*instances: dict[str, Any]) -> planner.Plan:
    body = profiles.base(**{"cache": {"instances": list(instances)}})
    return planner.plan(v1alpha1.parse_profile(body))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("server_lifetime", "300\nauth_type = trust"),
        ("server_check_query", "SELECT 1\nauth_type = trust"),
        ("ignore_startup_parameters", "extra_float_digits\r\nauth_type = trust"),
        ("server_reset_query", "DISCARD ALL\x00"),
    ],
)
def test_multiline_parameter_is_a_planner_problem(key: str, value: str) -> None:
    plan = _pooler_plan({key: value})
    assert not plan.ok
    assert [p.field for p in plan.problems] == [f"spec.pooler.parameters.{key}"]
    assert "single line" in plan.problems[0].message
    assert "trust" not in "".join(plan.pooler.settings.values())
    # And were the planner bypassed, the renderer itself refuses the line.
    good = _pooler_plan()
    bypass = dataclasses.replace(
        good,
        pooler=dataclasses.replace(good.pooler, settings={**good.pooler.settings, key: value}),
    )
    with pytest.raises(ValueError, match="unsafe"):
        pgbouncer.render_ini(bypass)


def test_samples_cover_every_allowed_setting() -> None:
    assert set(profiles.REDIS_SAMPLES) == set(redis_params.ALLOWED)
    for key, value in profiles.REDIS_SAMPLES.items():
        assert redis_params.check(key, value) is None, key


@pytest.mark.parametrize("key", sorted(redis_params.ALLOWED))
@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n"], ids=["lf", "cr", "crlf"])
def test_multiline_override_is_a_planner_problem(key: str, breaker: str) -> None:
    plan = _cache_plan(
        {
            "name": "cache",
            "use": "cache",
            "memory": MEMORY,
            "config": {key: f"{profiles.REDIS_SAMPLES[key]}{breaker}requirepass x{breaker}"},
        }
    )
    assert not plan.ok
    fields = [p.field for p in plan.problems]
    assert fields == [f"spec.cache.instances[0].config.{key}"], fields
    assert key not in plan.redis_named("cache").settings


@pytest.mark.parametrize("policy", EVICTING)
def test_an_evicting_queue_is_refused(policy: str) -> None:
    # the CRD's rule, and the model's twin: never planned
    with pytest.raises(v1alpha1.ProfileError) as refused:
        _cache_plan(
            {"name": "cache", "use": "cache", "memory": MEMORY},
            {"name": "jobs", "use": "queue", "memory": MEMORY, "evictionPolicy": policy},
        )
    assert str(refused.value).startswith(
        f"spec.cache.instances[1].evictionPolicy: {policy} on a queue instance (jobs)"
    )


def test_queue_with_noeviction_is_fine() -> None:
    plan = _cache_plan({"name": "jobs", "use": "queue", "evictionPolicy": "noeviction"})
    assert plan.ok, [str(p) for p in plan.problems]
    assert plan.redis_named("jobs").eviction_policy == "noeviction"


def test_an_endpoint_that_does_not_answer_is_a_note_not_a_failure() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    target = bucket_check.Target(
        endpoint=f"http://127.0.0.1:{port}",
        region="auto",
        bucket="b-1",
        access_key_id="AK",
        secret_access_key="SK",
    )

    async def check() -> bucket_check.Verdict:
        async with bucket_check.Checker(resolver.Resolver(), allow_internal=True) as checker:
            return await checker(target)

    verdict = asyncio.run(check())
    assert verdict.reason is None and not verdict.answered
    assert verdict.note.startswith("not checked:")
