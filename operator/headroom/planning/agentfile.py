"""What the config files of Headroom's agents share (``readpool.json`` in
planning.membership, ``buckets.json`` in planning.bucket_server): a frozen
camelCase pydantic model that refuses unknown keys, and string fields held to
a charset, so a value the agent later writes into a config file or an XML
body can never carry a newline or a metacharacter. Pure."""

from __future__ import annotations

import re

from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


def checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    # fullmatch: "$" alone would let a trailing newline through
    if not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not allowed (charset {pattern.pattern})")
    return value


def charset(pattern: re.Pattern[str], what: str) -> AfterValidator:
    """A field validator: ``value`` must match ``pattern`` (anchor it)."""
    return AfterValidator(lambda value: checked(value, pattern, what))


class AgentFile(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid"
    )

    def to_json(self) -> str:
        """The file as the builder writes it (camelCase keys, every field)."""
        return self.model_dump_json(by_alias=True, indent=2) + "\n"
