"""The ScalingProfile itself: the spec's sections put together, the object's
identity (group, version, kind, name rules) and :func:`parse_profile`, which
every reader of a profile (the reconcile pass, admission, the CLI) calls."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, ValidationError, model_validator

from headroom.api.v1alpha1.alerts import Alerts
from headroom.api.v1alpha1.app import App
from headroom.api.v1alpha1.autoscaling import Autoscaling
from headroom.api.v1alpha1.cache import Cache
from headroom.api.v1alpha1.database import Database
from headroom.api.v1alpha1.load import Load
from headroom.api.v1alpha1.network import Network
from headroom.api.v1alpha1.pooler import Pooler
from headroom.api.v1alpha1.queues import Queue
from headroom.api.v1alpha1.schema import (
    DNS_LABEL,
    LIST_MAP,
    NAME_MAX,
    Broken,
    Model,
    Rule,
    RuleError,
    join,
    transition_problems,
    unique_names,
)
from headroom.api.v1alpha1.storage import Storage

GROUP = "headroom.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScalingProfile"
PLURAL = "scalingprofiles"
SINGULAR = "scalingprofile"
SHORT_NAMES = ("sp",)


def _reads_need_replicas(spec: ScalingProfileSpec) -> Broken | None:
    if spec.database.read_replicas is not None:
        return None
    reading = [(i, q.database_read_pool_size) for i, q in enumerate(spec.queues)]
    index, size = next(((i, n) for i, n in reading if n), (-1, 0))
    if not size:
        return None
    return Broken(
        f"queues[{index}].databaseReadPoolSize",
        lambda at: (
            f"{size}, but {at('database.readReplicas')} is not set: there is no read "
            "endpoint to open those connections to"
        ),
    )


class ScalingProfileSpec(Model):
    """What the app needs to scale."""

    RULES = (
        Rule(
            "has(self.database.readReplicas) || !has(self.queues) || "
            "self.queues.all(q, !has(q.databaseReadPoolSize) || q.databaseReadPoolSize == 0)",
            "spec.queues[].databaseReadPoolSize needs spec.database.readReplicas (the read "
            "endpoint its connections go to)",
            _reads_need_replicas,
        ),
    )

    app: App = Field(description="The app (its Deployment, replica ceiling, client pool).")
    database: Database = Field(description="The app's Postgres primary.")
    pooler: Pooler = Field(
        default_factory=Pooler, description="PgBouncer connection pooling in front of it."
    )
    cache: Cache | None = Field(default=None, description="Redis instances by use.")
    queues: Annotated[list[Queue], AfterValidator(unique_names)] = Field(
        default_factory=list,
        max_length=16,
        description="Queues and their workers, scaled on backlog.",
        json_schema_extra=LIST_MAP,
    )
    load: Load | None = Field(
        default=None,
        description="The peak load and the accepted chance of waiting: the pools are sized "
        "from it (queueing theory) instead of filling the budget.",
    )
    autoscaling: Autoscaling = Field(
        default_factory=Autoscaling, description="HPA and PDB for the app's Deployment."
    )
    network: Network = Field(
        default_factory=Network, description="NetworkPolicies: who may reach the pods."
    )
    storage: Storage | None = Field(
        default=None, description="Object storage: buckets and their credentials."
    )
    alerts: Alerts = Field(
        default_factory=Alerts,
        description="Alerts on the plan's numbers (PrometheusRule or a rule-file ConfigMap), "
        "monitors for the exporters and the app, a Grafana dashboard.",
    )
    in_use_protection: bool = Field(
        default=True,
        description="While pods that are not Headroom's read the binding (env, envFrom or a "
        "volume of <name>-binding or a worker binding), deleting the profile waits: the "
        "binding and the pooler stay, the Deletable condition names the workloads, and the "
        "deletion completes once they are gone. false: deleting the profile removes them "
        'at once. The annotation headroom.dev/force-delete: "true" ends one wait '
        "(docs/operations.md).",
    )


class ScalingProfile(Model):
    """A ScalingProfile as read from the API server or a file."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["headroom.dev/v1alpha1"] = "headroom.dev/v1alpha1"
    kind: Literal["ScalingProfile"] = "ScalingProfile"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ScalingProfileSpec

    @model_validator(mode="after")
    def _has_name(self) -> ScalingProfile:
        name = self.metadata.get("name", "")
        if not isinstance(name, str) or not re.fullmatch(DNS_LABEL, name) or len(name) > NAME_MAX:
            # Child names are "<profile>-pooler-rw" etc. and must stay valid DNS labels.
            raise ValueError(f"metadata.name must be a DNS label of at most {NAME_MAX} characters")
        return self

    @property
    def name(self) -> str:
        return str(self.metadata["name"])

    @property
    def namespace(self) -> str:
        return str(self.metadata.get("namespace") or "default")

    @property
    def uid(self) -> str:
        return str(self.metadata.get("uid", ""))

    @property
    def generation(self) -> int:
        return int(self.metadata.get("generation", 0))


class ProfileError(ValueError):
    """A profile that cannot be parsed; ``str()`` names every offending field."""


def parse_profile(body: dict[str, Any]) -> ScalingProfile:
    """Parse a ScalingProfile body (dict) or raise ProfileError naming the fields."""
    try:
        return ScalingProfile.model_validate(body)
    except ValidationError as err:
        raise ProfileError(format_validation_error(err)) from None


def format_validation_error(err: ValidationError) -> str:
    """Every problem on one line, each starting with the field path as the API
    server writes it (camelCase, ``instances[0]``); a broken Rule names its
    field, and any other it mentions, by the full path."""
    lines = []
    for problem in err.errors():
        path = field_path(problem["loc"])
        cause = (problem.get("ctx") or {}).get("error")
        if isinstance(cause, RuleError):
            lines.append(_broken_text(cause.broken, path))
            continue
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}" if path else message)
    return "; ".join(lines)


def _broken_text(broken: Broken, path: str) -> str:
    """A broken Rule of the object at ``path``: its field, then its message."""

    def at(name: str) -> str:
        return join(path, name)

    where = join(path, broken.field)
    message = broken.text(at)
    return f"{where}: {message}" if where else message


def profile_transition_problems(new: ScalingProfile, old: ScalingProfile) -> list[str]:
    """What an update from ``old`` to ``new`` may not do (the CRD's oldSelf rules)."""
    return transition_problems(new.spec, old.spec, path="spec")


_PART_MAX = 64
_PLAIN_PART = re.compile(r"[A-Za-z0-9_./:-]*")


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("spec", "queues", 0, "name")`` -> ``spec.queues[0].name``; a map key
    that is itself the problem (pydantic's ``[key]``) is named once, and one
    that is too long to repeat is cut."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
            continue
        if part == "[key]":
            continue
        name = part
        if len(part) > _PART_MAX:
            name = f"{part[:16]!r}...({len(part)} characters)"
        elif not _PLAIN_PART.fullmatch(part):
            name = repr(part)  # a map key with a newline stays on the one line
        text = f"{text}.{name}" if text else name
    return text
