"""headroom.yamlfmt: what `headroom render` prints reads back as the same
types in PyYAML and in kubectl's YAML (YAML 1.2 core, which also reads
exponent-only numbers, octal ``0o`` and ``.Inf`` as numbers)."""

from __future__ import annotations

import yaml

from headroom import yamlfmt

# each a string another YAML reader would take for a number, a boolean or null
LOOK_ALIKES = [
    "5900931026465e92",  # a content hash: digits and one e (kubectl read it as a float)
    "1e5",
    "1E+5",
    "-2e-3",
    "12345",
    "0x1F",
    "0o17",
    "0b101",
    ".5",
    ".Inf",
    "-.inf",
    ".NaN",
    "true",
    "Off",
    "y",
    "null",
    "~",
    "",
]
PLAIN = ["abc", "ghcr.io/cloudnative-pg/pgbouncer:1.26.0", "e5", "5e", "1.2.3", "0xZZ", "db-1"]


def test_a_string_another_reader_takes_for_something_else_is_quoted() -> None:
    for value in LOOK_ALIKES:
        text = yamlfmt.dump({"v": value})
        assert text.startswith("v: '"), (value, text)
        assert yaml.safe_load(text) == {"v": value}


def test_ordinary_strings_stay_plain_and_round_trip() -> None:
    for value in PLAIN:
        text = yamlfmt.dump({"v": value})
        assert text == f"v: {value}\n", (value, text)
        assert yaml.safe_load(text) == {"v": value}


def test_multi_line_strings_stay_literal_blocks() -> None:
    text = yamlfmt.dump({"ini": "[pgbouncer]\nlisten_port = 6432\n"})
    assert text.startswith("ini: |")
    assert yaml.safe_load(text) == {"ini": "[pgbouncer]\nlisten_port = 6432\n"}
