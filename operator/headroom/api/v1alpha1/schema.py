"""The building blocks every section of the ScalingProfile API shares: the base
model (camelCase, strict, frozen), the patterns of names, hosts, keys and images,
the quantity types and the helpers that write CEL rules.

Imported by the section modules of this package; the crd generator reads the
patterns it checks metadata.name against.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from headroom.api import quantity, resources

# RFC 1123 label / subdomain: what Kubernetes accepts for object names.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME_MAX = 40  # of metadata.name: room for the child names' suffixes
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A host is a DNS name or an IPv4 address; nothing that could carry a space,
# a quote or a newline into pgbouncer.ini.
HOST = r"^[A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?$"
# Postgres database and role names we accept unquoted in pgbouncer.ini.
PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$"
# A Secret key (IsConfigMapKey): not ".", "..", nor starting with "..".
SECRET_KEY = r"^\.?[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"  # noqa: S105 - a key-name pattern
SECRET_KEY_MAX = 253
IMAGE = r"^[a-z0-9][a-z0-9./_:@-]*$"
# Names of cache instances and queues: short, as they end up inside child names.
SHORT_NAME = r"^[a-z]([-a-z0-9]{0,18}[a-z0-9])?$"
SHORT_NAME_MAX = 20
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

# Keys and values of the allowlisted config maps (pgbouncer.ini, redis.conf):
# the planner's allowlists decide what is valid; these bounds keep a huge body
# from ever reaching them.
ConfigKey = Annotated[str, Field(max_length=64)]
ConfigValue = Annotated[str, Field(max_length=256)]


def _int_or_string(value: Any) -> Any:
    # The CRD declares quantities int-or-string, as Kubernetes does: 1073741824
    # is as good as "1Gi" (a bool or a float is neither, and stays refused).
    return str(value) if type(value) is int else value


def _checked_quantity(text: str) -> str:
    quantity.parse(text)  # QuantityError is a ValueError: reported on the field
    return text


# A Kubernetes quantity (see headroom.api.quantity), kept as the text given.
Quantity = Annotated[
    str,
    BeforeValidator(_int_or_string),
    AfterValidator(_checked_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "pattern": quantity.PATTERN,
            "maxLength": quantity.MAX_LENGTH,
        }
    ),
]


def _checked_resource_name(name: str) -> str:
    problem = resources.name_problem(name)
    if problem:
        raise ValueError(problem)
    return name


ResourceName = Annotated[
    str, Field(max_length=resources.NAME_MAX), AfterValidator(_checked_resource_name)
]


class Model(BaseModel):
    """Base: camelCase on the wire, unknown fields rejected, snake_case in Python.
    Strict, as the API server is: "10" is not an integer, "false" not a boolean."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
    )


def cel(rule: str, message: str) -> JsonDict:
    """A CEL ``x-kubernetes-validations`` rule and the message the API server returns."""
    return {"rule": rule, "message": message}


# Quantity fields are int-or-string: CEL sees either, string() makes it text.
# A text that is no quantity is the pattern's to report, and the API server
# runs the rules even then: they only parse what matches it.
_AS_TEXT = "string(self)"


def is_quantity(text: str) -> str:
    """CEL: whether ``text`` (a CEL string expression) is a quantity."""
    return f"{text}.matches('{quantity.PATTERN}')"


def quantity_rule(bound: str, message: str) -> JsonDict:
    """A CEL rule comparing a quantity field with a bound such as ``>= 32Mi``."""
    operator, limit = bound.split()
    return cel(
        f"!{is_quantity(_AS_TEXT)} || "
        f"quantity({_AS_TEXT}).compareTo(quantity('{limit}')) {operator} 0",
        message,
    )
