"""Kubernetes resource quantities, parsed exactly as the API server reads them.

The grammar of ``k8s.io/apimachinery`` ``resource.Quantity``::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | <sign><number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <sign>            ::= "+" | "-"
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>

:data:`PATTERN` is this grammar with two bounds, so that everything it matches
the API server parses, quickly:

- exponents are whole numbers (``1e3``, not ``1e1.5``), as ``ParseQuantity``
  demands;
- they have at most two digits: within :data:`MAX_LENGTH` characters a larger
  one is either out of a quantity's range (above 2^63 - 1) or below its
  resolution (1n), and Kubernetes' own arithmetic on such an exponent (the CEL
  ``quantity()`` of a CRD rule, rounding to 1n) computes 10^exponent.

The value is an exact :class:`~fractions.Fraction`. Used by the models (every
quantity field, and their CRD rules), the planner (Redis ``maxmemory``) and
the reconcile compare (quantities are equal by value).
"""

from __future__ import annotations

import re
from fractions import Fraction

# The same in Python, Rust (pydantic), RE2 (the API server's OpenAPI check)
# and a CEL string literal (no backslash, no quote).
PATTERN = r"^[+-]?([0-9]+([.][0-9]*)?|[.][0-9]+)([KMGTPE]i|[numkMGTPE]|[eE][+-]?[0-9]{1,2})?$"
# Longer texts are refused before they are converted; 64 characters hold any
# useful quantity (2^63 - 1 has 19 digits).
MAX_LENGTH = 64
# The largest quantity Kubernetes represents. It reads a larger binary-suffixed one
# (8Ei) as exactly this (resource.ParseQuantity caps it), so a CRD rule cannot tell
# 8Ei from 2^63 - 1: both judges refuse this value and above.
MAX_VALUE = 2**63 - 1
EXAMPLES = "e.g. 512Mi, 0.5Gi, 64000k, 1e9, 250m"

_GRAMMAR = re.compile(PATTERN)
_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


class QuantityError(ValueError):
    """Not a Kubernetes quantity, or out of its range; ``str()`` says which."""


def parse(text: str) -> Fraction:
    """The exact value of ``text``, or QuantityError."""
    if len(text) > MAX_LENGTH:
        raise QuantityError(f"must be at most {MAX_LENGTH} characters, got {len(text)}")
    match = _GRAMMAR.fullmatch(text)
    if match is None:
        raise QuantityError(f"must be a Kubernetes quantity ({EXAMPLES}), got {text!r}")
    number, suffix = match.group(1), match.group(3) or ""
    sign = -1 if text.startswith("-") else 1
    whole, _, fraction = number.partition(".")
    mantissa = Fraction(int(whole + fraction or "0"), 10 ** len(fraction))
    if suffix in _BINARY:
        value = mantissa * (1 << _BINARY[suffix])
    else:
        exponent = _DECIMAL[suffix] if suffix in _DECIMAL else int(suffix[1:])
        value = mantissa * Fraction(10) ** exponent
    if value >= MAX_VALUE:
        raise QuantityError(f"{text!r} is out of range (below {MAX_VALUE})")
    return sign * value


def is_quantity(text: str) -> bool:
    try:
        parse(text)
    except QuantityError:
        return False
    return True
