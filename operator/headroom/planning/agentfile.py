"""What the config files of Headroom's agents share (``readpool.json`` in
planning.membership, ``buckets.json`` in planning.bucket_server): a frozen
camelCase pydantic model that refuses unknown keys, and string fields held to
a charset, so a value the agent later writes into a config file or an XML
body can never carry a newline or a metacharacter; and :func:`content_hash`,
the hash of a config file that the builders put on a pod template and an agent
reports for the file it loaded (headroom.agent.pooler). Pure."""

from __future__ import annotations

import hashlib
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


def content_hash(*parts: str) -> str:
    """Short stable hash of non-secret content (rolls pods when config changes)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
