"""YAML output for humans and golden files: block style, multi-line strings as
literal blocks (so a rendered pgbouncer.ini reads like the file it is), keys in
insertion order. Used by the CLI and the golden tests.

PyYAML quotes a string only when YAML 1.1 would read it as another type;
kubectl (Go's YAML) also reads ``1e5``, ``5900931026465e92``, ``0o17`` or
``.Inf`` as numbers, so a content hash made of digits and one ``e`` reached the
API server as a float. A string any of these schemas would read as something
else is quoted."""

from __future__ import annotations

import re
from typing import Any

import yaml

# What YAML 1.2's core schema (and Go's YAML) resolves a plain scalar to, other
# than a string: numbers in every spelling, booleans and null.
_NOT_A_STRING = re.compile(
    r"[-+]?(\.[0-9]+|[0-9][0-9_]*(\.[0-9_]*)?)([eE][-+]?[0-9]+)?"
    r"|[-+]?\.(inf|Inf|INF)|\.(nan|NaN|NAN)"
    r"|0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?0b[01_]+"
    r"|y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE"
    r"|on|On|ON|off|Off|OFF|null|Null|NULL|~|"
)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    if _NOT_A_STRING.fullmatch(value):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="'")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def dump_all(docs: list[Any]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
