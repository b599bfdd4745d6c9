"""The building blocks every section of the ScalingProfile API shares: the base
model (camelCase, strict, frozen), the patterns of names, hosts, keys and images,
the quantity types, and :class:`Rule`: a rule across fields written once for
both judges, the model (a Python check) and the API server (CEL).

Model and CRD refuse the same profiles: every CEL rule of the CRD is a
:class:`Rule` of a model, or comes from a type here that checks the same in
Python (:func:`paired` records which; tests/unit/test_crd.py holds every rule
of the CRD to it), and every check of a model is in the CRD. Whatever the API
server cannot check (the connection budget, cross-section names) is the
planner's, which admission runs too.

Imported by the section modules of this package; the crd generator reads the
patterns it checks metadata.name against.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from headroom.api import quantity, resources

# RFC 1123 label / subdomain: what Kubernetes accepts for object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 40  # of metadata.name: room for the child names' suffixes
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A host is a DNS name or an IPv4 address; nothing that could carry a space,
# a quote or a newline into pgbouncer.ini.
HOST = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
# Postgres database and role names we accept unquoted in pgbouncer.ini (its
# [databases] keys: PgBouncer 1.18 and 1.24 stop at a "$" with a syntax error,
# quoted or not).
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
# A Secret key (IsConfigMapKey): not ".", "..", nor starting with "..".
SECRET_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"  # noqa: S105 - a key-name pattern
SECRET_KEY_MAX = 253
IMAGE = r"^[a-z0-9][a-z0-9./_:@-]*$"
# An image field's type; a defaulted one adds ``images.defaulted(...)`` after it.
ImageRef = Annotated[str, Field(pattern=IMAGE, max_length=512)]
# Names of cache instances and queues: short, as they end up inside child names.
SHORT_NAME = r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$"
SHORT_NAME_MAX = 20
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Keys and values of the allowlisted config maps (pgbouncer.ini, redis.conf):
# the planner's allowlists decide what is valid; these bounds keep a huge body
# from ever reaching them.
ConfigKey = Annotated[str, Field(max_length=64)]
ConfigValue = Annotated[str, Field(max_length=256)]


# A field relative to the object a rule checks -> its full path, for messages
# that name other fields (``spec.alerts.pooler.connectionsCriticalPercent``).
PathOf = Callable[[str], str]


@dataclass(frozen=True)
class Broken:
    """A rule broken: the field it names (relative to the object, camelCase;
    ``[2].name`` inside a list; "" for the object itself) and the message,
    built with the full path of any other field it names."""

    field: str
    text: Callable[[PathOf], str]


class RuleError(ValueError):
    """Raised by the model when a :class:`Rule` is broken; the profile's error
    message names ``broken.field`` by its full path."""

    def __init__(self, broken: Broken) -> None:
        super().__init__(broken.text(_as_given))
        self.broken = broken


def _as_given(name: str) -> str:
    return name


@dataclass(frozen=True)
class Rule:
    """One rule across fields of a model, checked by the model (``check``) and by
    the API server (``cel``, with ``message`` naming the fields by full path).
    ``transition``: a rule on updates (CEL ``oldSelf``); its check gets (new, old)."""

    cel: str
    message: str
    check: Callable[..., Broken | None]
    expression: bool = False  # message is a CEL messageExpression
    transition: bool = False

    def schema(self) -> JsonDict:
        return {
            "rule": self.cel,
            "messageExpression" if self.expression else "message": self.message,
        }


def exactly_one_of(first: str, second: str, *, path: str) -> Rule:
    """The Rule of two exclusive optional fields (camelCase names) of the object at
    ``path``: exactly one is set."""

    def check(model: BaseModel) -> Broken | None:
        given = _field_by_alias(model, first) is not None
        if given != (_field_by_alias(model, second) is not None):
            return None
        return Broken(
            "",
            lambda at: (
                f"set exactly one of {at(first)} or {at(second)}" + (", not both" if given else "")
            ),
        )

    return Rule(
        f"has(self.{first}) != has(self.{second})",
        f"set exactly one of {path}.{first} or {path}.{second}",
        check,
    )


def _field_by_alias(model: BaseModel, alias: str) -> Any:
    name = next(n for n, info in type(model).model_fields.items() if (info.alias or n) == alias)
    return getattr(model, name)


# CEL rules the CRD carries beside the models' Rules, each with a Python twin
# in the same type (see paired)
_PAIRED: set[str] = set()


def paired(rule: str, message: str, *, expression: bool = False) -> JsonDict:
    """A CEL rule of a type whose Python validator checks the same (a quantity
    bound, map keys): recorded, so the CRD test knows every rule has a twin."""
    _PAIRED.add(rule)
    return {"rule": rule, "messageExpression" if expression else "message": message}


def paired_rules() -> frozenset[str]:
    return frozenset(_PAIRED)


def _rules_schema(schema: dict[str, Any], cls: type[Any]) -> None:
    """json_schema_extra of every model: its Rules as x-kubernetes-validations."""
    rules = [rule.schema() for rule in getattr(cls, "RULES", ())]
    if rules:
        schema.setdefault("x-kubernetes-validations", []).extend(rules)


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, snake_case in Python.
    Strict, as the API server is: "10" is not an integer, "false" not a boolean.
    A field given as null is absent, as the API server prunes nulls before
    defaulting and client-side apply drops them: a null means the default on
    every path."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        json_schema_extra=_rules_schema,
    )

    RULES: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        if isinstance(data, dict) and any(v is None for v in data.values()):
            return {k: v for k, v in data.items() if v is not None}
        return data

    @model_validator(mode="after")
    def _rules(self) -> Model:
        for rule in type(self).RULES:
            if rule.transition:
                continue
            broken = rule.check(self)
            if broken is not None:
                raise RuleError(broken)
        return self


def transition_problems(new: Model, old: Model, *, path: str) -> list[str]:
    """The transition Rules (CEL ``oldSelf``) ``new`` breaks against ``old``,
    recursively through fields present in both (list entries matched by their
    ``name``), as messages naming the field by its full path."""
    found: list[str] = []
    for rule in type(new).RULES:
        if rule.transition:
            broken = rule.check(new, old)
            if broken is not None:
                where = join(path, broken.field)
                found.append(f"{where}: {broken.text(lambda name: join(path, name))}")
    for name, info in type(new).model_fields.items():
        alias = info.alias or name
        mine, theirs = getattr(new, name), getattr(old, name, None)
        if isinstance(mine, Model) and isinstance(theirs, type(mine)):
            found += transition_problems(mine, theirs, path=join(path, alias))
        elif isinstance(mine, list) and isinstance(theirs, list):
            before = {getattr(o, "name", None): o for o in theirs if isinstance(o, Model)}
            for index, item in enumerate(mine):
                match = before.get(getattr(item, "name", None))
                if isinstance(item, Model) and isinstance(match, type(item)):
                    found += transition_problems(item, match, path=f"{join(path, alias)}[{index}]")
    return found


def join(path: str, field: str) -> str:
    """``spec.alerts`` + ``pooler`` -> ``spec.alerts.pooler``; ``[2].name`` attaches."""
    if not field:
        return path
    if not path or field.startswith("["):
        return f"{path}{field}"
    return f"{path}.{field}"


# -- quantities ------------------------------------------------------------------------


def _int_or_string(value: Any) -> Any:
    # The CRD declares quantities int-or-string, as Kubernetes does: 1073741824
    # is as good as "1Gi" (a bool or a float is neither, and stays refused).
    return str(value) if type(value) is int else value


# Quantity fields are int-or-string: CEL sees either, string() makes it text.
# A text that is no quantity is the pattern's to report, and the API server
# runs the rules even then: they only parse what matches it.
_AS_TEXT = "string(self)"


def is_quantity(text: str) -> str:
    """CEL: whether ``text`` (a CEL string expression) is a quantity."""
    return f"{text}.matches('{quantity.PATTERN}')"


def within_range(text: str) -> str:
    """CEL: a quantity (``text``, a CEL string expression) Kubernetes represents
    (quantity.parse refuses a larger one as out of range)."""
    return (
        f"!{is_quantity(text)} || "
        f"(quantity({text}).compareTo(quantity('{quantity.MAX_VALUE}')) < 0 && "
        f"quantity({text}).compareTo(quantity('-{quantity.MAX_VALUE}')) > 0)"
    )


QUANTITY_RANGE = paired(within_range(_AS_TEXT), f"must be below {quantity.MAX_VALUE}")


@dataclass(frozen=True)
class Checked:
    """One annotation for a string type's two judges: ``check`` (the model's, a
    ValueError on a bad value) and ``schema`` (the CRD's: its pattern, bounds and
    CEL rules, every rule ``paired``). ``before``: a conversion first (an
    int-or-string quantity becomes text)."""

    check: Callable[[str], object]
    schema: JsonDict
    before: Callable[[Any], Any] | None = None

    def _run(self, value: str) -> str:
        self.check(value)
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        inner = core_schema.no_info_after_validator_function(self._run, handler(source))
        if self.before is None:
            return inner
        return core_schema.no_info_before_validator_function(self.before, inner)

    def __get_pydantic_json_schema__(
        self, core: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return dict(self.schema)


def quantity_checked(*rules: JsonDict, check: Callable[[str], object] | None = None) -> Checked:
    """A Kubernetes quantity (headroom.api.quantity), kept as the text given,
    with more rules (and the check that mirrors them)."""

    def checked(text: str) -> None:
        quantity.parse(text)  # QuantityError is a ValueError: reported on the field
        if check is not None:
            check(text)

    return Checked(
        checked,
        {
            "x-kubernetes-int-or-string": True,
            "pattern": quantity.PATTERN,
            "maxLength": quantity.MAX_LENGTH,
            "x-kubernetes-validations": [QUANTITY_RANGE, *rules],
        },
        before=_int_or_string,
    )


Quantity = Annotated[str, quantity_checked()]

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def bounded_quantity(bound: str, message: str) -> Checked:
    """A quantity that must compare with a bound such as ``>= 32Mi``: the
    model's check and the CRD rule, from the one bound."""
    sign, limit = bound.split()
    compare, floor = _COMPARE[sign], quantity.parse(limit)

    def checked(text: str) -> None:
        if not compare(quantity.parse(text), floor):
            raise ValueError(message)

    rule = paired(
        f"!{is_quantity(_AS_TEXT)} || quantity({_AS_TEXT}).compareTo(quantity('{limit}')) {sign} 0",
        message,
    )
    return quantity_checked(rule, check=checked)


PositiveQuantity = Annotated[str, bounded_quantity("> 0", "must be > 0")]


# -- container resource names ------------------------------------------------------------

# What the CRD checks of a resource name: a standard one, huge pages or an
# extended resource (with a domain). The full grammar of each (a page size, a
# qualified name outside kubernetes.io) is the planner's (headroom.api.resources).
RESOURCE_NAME_RULE = paired(
    "self.all(k, k in ['cpu', 'memory', 'ephemeral-storage'] || k.startsWith('hugepages-')"
    " || k.contains('/'))",
    resources.NAME_MESSAGE,
)


def _checked_resource_name(name: str) -> str:
    if not (
        name in resources.STANDARD or name.startswith(resources.HUGEPAGES_PREFIX) or "/" in name
    ):
        raise ValueError(resources.NAME_MESSAGE)
    return name


ResourceName = Annotated[
    str, Field(max_length=resources.NAME_MAX), AfterValidator(_checked_resource_name)
]


# -- lists keyed by name (x-kubernetes-list-type: map) ----------------------------------

LIST_MAP: JsonDict = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}


def unique_names(items: list[Any]) -> list[Any]:
    """A list-map's entries have distinct names, as the API server demands."""
    seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first = seen.setdefault(item.name, index)
        if first != index:
            raise RuleError(_listed_twice(index, item.name, first))
    return items


def _listed_twice(index: int, name: str, first: int) -> Broken:
    return Broken(
        f"[{index}].name", lambda at: f"{name!r} is listed twice (also {at(f'[{first}]')})"
    )
