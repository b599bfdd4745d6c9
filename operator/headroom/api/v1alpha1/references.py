"""References to Secrets the user made (database credentials, a server's CA):
Headroom only reads them. Used by the database and read-replica sections."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from headroom.api.v1alpha1.schema import (
    DNS_SUBDOMAIN,
    SECRET_KEY,
    SECRET_KEY_MAX,
    Broken,
    Model,
    Rule,
)


def different_keys(first: str, second: str, *, what: str) -> Rule:
    """Two keys of one Secret that must hold different values: different keys."""
    mine, theirs = first[0].lower() + first[1:], second[0].lower() + second[1:]

    def check(ref: Model) -> Broken | None:
        a, b = getattr(ref, _snake(mine)), getattr(ref, _snake(theirs))
        if a != b:
            return None
        return Broken(theirs, lambda at: f"{b!r} is {at(mine)} too: {what}")

    return Rule(f"self.{mine} != self.{theirs}", f"{mine} and {theirs} must differ: {what}", check)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


class SecretKeyRef(Model):
    """Keys of an existing Secret holding the database credentials."""

    RULES = (
        different_keys(
            "usernameKey", "passwordKey", what="the username and the password are two values"
        ),
    )

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    username_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="username", description="Key of the username in the Secret."
    )
    password_key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="password", description="Key of the password in the Secret."
    )


class CASecretRef(Model):
    """A CA certificate (PEM) in an existing Secret, e.g. one cert-manager made."""

    name: Annotated[str, Field(pattern=DNS_SUBDOMAIN, max_length=253)] = Field(
        description="Name of a Secret in the profile's namespace. Headroom only reads it."
    )
    key: Annotated[str, Field(pattern=SECRET_KEY, max_length=SECRET_KEY_MAX)] = Field(
        default="ca.crt", description="Key of the PEM certificate(s) in the Secret."
    )
