"""What every profile body must satisfy, without a server: it is refused with a
message naming a field, or it plans and renders without a crash anywhere a
user or the operator would take it (``headroom plan``, ``headroom render``, the
reconcile pass's builders, the admission verdict).

:func:`judge` returns an :class:`Outcome`: the verdict, and for a profile that
plans, the files the real programs must accept (:class:`Artifacts`:
pgbouncer.ini of both poolers, redis.conf of every instance, the rule file,
the bucket agent's config), rendered with placeholders for the paths and ports
the program checks fill in (tests/conformance/fuzz_programs.py). A crash or a
refusal that names no field raises :class:`OracleError`, with the body.

Pure; used by tests/unit/test_fuzz.py, the conformance and e2e fuzz tests and
bench/fuzz.py.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from typing import Any

import yaml
from pydantic import ValidationError

from headroom import cli, yamlfmt
from headroom.api import v1alpha1
from headroom.builders import alert_rules, desired, pgbouncer, redis, s3_server
from headroom.planning import admission, credentials, membership, planner, read_plan, versitygw

# placeholders the program checks replace with a real port and files
LISTEN_PORT = 6432
PLACEHOLDER_DIR = "/headroom-fuzz"
AUTH_FILE = f"{PLACEHOLDER_DIR}/userlist.txt"
CA_FILE = f"{PLACEHOLDER_DIR}/ca.crt"
INCLUDE_FILE = f"{PLACEHOLDER_DIR}/databases.ini"
DATA_DIR = f"{PLACEHOLDER_DIR}/data"
REDIS_PORT = 6379
APP_SELECTOR = {"matchLabels": {"app": "web"}}

# How the planner is run: alone (CLI, admission), and in a cluster with every
# composed engine installed and a CloudNativePG Cluster to read.
FACTS = (
    planner.Facts(),
    planner.Facts(
        keda=True,
        cnpg=True,
        cnpg_cluster=read_plan.CnpgCluster(name="pg", instances=3, max_connections=None),
        prometheus_operator=True,
        cosi="v1alpha2",
    ),
)
# A field path as format_validation_error and the planner write them.
_FIELD = re.compile(r"^(spec|metadata)(\.[^ ]+|\[[0-9]+\])*")


class OracleError(AssertionError):
    """The body broke a promise; ``str()`` says which, and shows the body."""

    def __init__(self, what: str, body: Any) -> None:
        shown = json.dumps(body, ensure_ascii=True, default=repr)
        super().__init__(f"{what}\nbody: {shown[:4000]}")


@dataclasses.dataclass(frozen=True)
class Artifacts:
    """What the real programs read, as text (placeholders for paths and ports)."""

    pgbouncer: tuple[tuple[str, str], ...] = ()  # (pgbouncer.ini, include file or "")
    redis: tuple[str, ...] = ()  # redis.conf
    rules: str = ""  # the rule file (groups:), "" when there are no rules
    buckets: str = ""  # the bucket agent's buckets.json, "" without builtin buckets
    pgbouncer_version: tuple[int, int] = (1, 18)


@dataclasses.dataclass(frozen=True)
class Outcome:
    verdict: str  # "model" (refused by the schema), "planner" (refused), "planned"
    message: str = ""
    artifacts: Artifacts = Artifacts()


def _names_fields(err: ValidationError) -> str | None:
    """The first error that names no field, or None."""
    for problem in err.errors():
        path = v1alpha1.field_path(problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        if not path and not _FIELD.match(message):
            return message
    return None


def _yaml_round_trip(body: Any) -> None:
    """What ``headroom plan`` reads from a file is what was written."""
    text = yaml.safe_dump(body, allow_unicode=True)
    loaded = cli.parse_documents(text, name="<fuzz>")
    if loaded != [body]:
        raise AssertionError("YAML round trip changed the body")


def judge(body: Any) -> Outcome:
    """The verdict on ``body``; OracleError on a crash or a nameless refusal."""
    try:
        return _judge(body)
    except OracleError:
        raise
    except Exception as err:
        raise OracleError(f"crash: {type(err).__name__}: {err}", body) from err


def _judge(body: Any) -> Outcome:
    try:
        profile = v1alpha1.ScalingProfile.model_validate(body)
    except ValidationError as err:
        nameless = _names_fields(err)
        if nameless is not None:
            raise OracleError(f"refused without naming a field: {nameless}", body) from None
        message = v1alpha1.format_validation_error(err)
        if admission.review(body) != message:
            raise OracleError("the admission verdict differs from the model's", body) from None
        return Outcome("model", message)
    if isinstance(body, dict) and body.get("kind") == v1alpha1.KIND:
        _yaml_round_trip(body)
    verdicts = []
    artifacts = Artifacts()
    for facts in FACTS:
        planned = planner.plan(profile, facts=facts)
        cli.format_plan(planned)  # `headroom plan` prints every plan, refused or not
        for problem in planned.problems:
            if not _FIELD.fullmatch(problem.field):
                raise OracleError(f"a problem names no field: {problem}", body)
        if not planned.ok:
            verdicts.append(("planner", planned.problem_text()))
            continue
        creds = cli.placeholder_credentials(profile, planned)
        objects = desired.build(planned, creds, app_pod_selector=APP_SELECTOR)
        yamlfmt.dump_all(list(objects.values()))
        groups = alert_rules.rule_groups(planned)
        if facts == FACTS[0]:
            artifacts = _artifacts(planned, groups, creds)
        verdicts.append(("planned", ""))
    if verdicts[0][0] == "planner":
        if admission.review(body) != verdicts[0][1]:
            raise OracleError("the admission verdict differs from the plan's", body)
        return Outcome("planner", verdicts[0][1])
    if admission.review(body) is not None:
        raise OracleError("admission refuses a profile that plans", body)
    return Outcome("planned", artifacts=artifacts)


def _artifacts(
    planned: planner.Plan, groups: list[dict[str, Any]], creds: credentials.Credentials
) -> Artifacts:
    ini = pgbouncer.render_ini(
        planned,
        listen_addr="127.0.0.1",
        listen_port=LISTEN_PORT,
        auth_file=AUTH_FILE,
        server_ca_file=CA_FILE,
    )
    bouncers = [(ini, "")]
    if planned.read_pooler is not None and not (planned.read and planned.read.cnpg_poolers):
        read_ini = pgbouncer.render_read_ini(
            planned,
            listen_addr="127.0.0.1",
            listen_port=LISTEN_PORT,
            auth_file=AUTH_FILE,
            server_ca_file=CA_FILE,
            include_file=INCLUDE_FILE,
        )
        config = membership.read_pool_config(planned)
        every = [r.name for r in config.replicas]
        bouncers.append((read_ini, membership.render_databases(config, every)))
        if config.fallback is not None:
            bouncers.append((read_ini, membership.render_databases(config, [])))
    confs = tuple(
        redis.render_conf(
            instance,
            bind="127.0.0.1",
            port=REDIS_PORT,
            data_dir=DATA_DIR,
            auth_file=f"{DATA_DIR}/auth.conf",
        )
        for instance in planned.redis
    )
    buckets = ""
    server = versitygw.server_plan(planned.buckets)
    if server is not None and creds.s3_server is not None:
        buckets = s3_server.agent_config(server, creds.s3_server).to_json()
        # the agent reads what the builder wrote
        versitygw.BucketServerConfig.model_validate_json(buckets)
    return Artifacts(
        pgbouncer=tuple(bouncers),
        redis=confs,
        rules=yamlfmt.dump({"groups": groups}) if groups else "",
        buckets=buckets,
        pgbouncer_version=planned.pooler.version,
    )


def dump(body: Any) -> str:
    """A body as the one-line JSON a failure report shows (and a test replays)."""
    out = io.StringIO()
    json.dump(body, out, ensure_ascii=True, sort_keys=True)
    return out.getvalue()
