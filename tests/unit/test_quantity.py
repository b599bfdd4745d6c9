"""Kubernetes quantities: the grammar of resource.Quantity, exact values, and
bounds that keep every conversion cheap (issue 9)."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest

from headroom.api import quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("512Mi", 512 * 2**20),
        ("0.5Gi", 2**29),
        ("1.5Gi", 3 * 2**29),
        ("64000k", 64_000_000),
        ("1P", 10**15),
        ("1E", 10**18),
        ("1Ei", 2**60),
        ("7Ei", 7 * 2**60),
        ("1e3", 1000),
        ("1E3", 1000),
        ("1e+3", 1000),
        ("25e-1", Fraction(5, 2)),
        ("500m", Fraction(1, 2)),
        ("1n", Fraction(1, 10**9)),
        ("1u", Fraction(1, 10**6)),
        ("+1", 1),
        ("-1Gi", -(2**30)),
        (".5", Fraction(1, 2)),
        ("1.", 1),
        ("1.e3", 1000),
        ("9223372036854775806", 2**63 - 2),
        ("0" * 64, 0),
    ],
)
def test_quantities_parse_to_their_exact_value(text: str, value: int | Fraction) -> None:
    assert quantity.parse(text) == value


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("64000K", "must be a Kubernetes quantity"),  # Kubernetes' kilo is a lowercase k
        ("1KI", "must be a Kubernetes quantity"),
        ("1ki", "must be a Kubernetes quantity"),
        ("1e1.5", "must be a Kubernetes quantity"),  # ParseQuantity takes whole exponents
        ("1e999999999", "must be a Kubernetes quantity"),  # no 10^999999999, here or in CEL
        (".", "must be a Kubernetes quantity"),
        ("", "must be a Kubernetes quantity"),
        ("Gi", "must be a Kubernetes quantity"),
        ("1 Gi", "must be a Kubernetes quantity"),
        (" 1Gi", "must be a Kubernetes quantity"),
        ("1Gi\nfoo", "must be a Kubernetes quantity"),
        ("0x10", "must be a Kubernetes quantity"),
        ("8Ei", "out of range"),
        # what Kubernetes reads 8Ei as (it caps it): refused as 8Ei is
        ("9223372036854775807", "out of range"),
        ("-9223372036854775807", "out of range"),
        ("1e99", "out of range"),
        ("1" * 65, "at most 64 characters"),
        ("1" * 5000, "at most 64 characters"),  # no int conversion, no traceback
    ],
)
def test_what_is_not_a_quantity_is_refused_with_a_reason(text: str, needle: str) -> None:
    with pytest.raises(quantity.QuantityError, match=needle):
        quantity.parse(text)


def test_the_crd_pattern_is_the_parser() -> None:
    pattern = re.compile(quantity.PATTERN)
    for text in ("0.5Gi", "64000k", "1e3", "-1", ".5", "1."):
        assert pattern.fullmatch(text) and quantity.is_quantity(text)
    for text in ("64000K", "1e1.5", ".", "1e100"):
        assert not pattern.fullmatch(text) and not quantity.is_quantity(text)
