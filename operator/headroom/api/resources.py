"""Container resource requirements (requests/limits), checked as the API server
checks a Pod's.

A profile's ``spec.queues[].resources`` lands as-is in the workers' container;
these rules are the ones ``ValidateContainerResourceRequirements`` applies, so
a profile the webhook admits never yields a Deployment the API server refuses:

- names: ``cpu``, ``memory``, ``ephemeral-storage``, ``hugepages-<page size>``,
  or an extended resource ``<domain>/<name>`` (``nvidia.com/gpu``) outside
  ``kubernetes.io``;
- values: non-negative quantities; whole numbers for extended resources and
  whole multiples of the page size for huge pages;
- a request is at most its limit; extended resources and huge pages cannot be
  overcommitted (limit required, request equal to it); huge pages need cpu or
  memory beside them.

Used by :mod:`headroom.api.v1alpha1` (the pydantic validators) and by its CRD
rules, which carry :data:`NAME_MESSAGE` and :func:`over_limit` texts so the API
server and the webhook say the same thing.
"""

from __future__ import annotations

import re

from headroom.api import quantity

STANDARD = ("cpu", "memory", "ephemeral-storage")
HUGEPAGES_PREFIX = "hugepages-"
# A qualified name's part after the "/" (k8s.io/apimachinery IsQualifiedName).
_NAME_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# "requests.<name>" must still be a qualified name (the quota key of an
# extended resource), so the domain is at most 253 - len("requests.").
_DOMAIN_MAX = 253 - len("requests.")
NAME_MAX = _DOMAIN_MAX + 1 + 63
NAME_MESSAGE = (
    "resource names must be cpu, memory, ephemeral-storage, hugepages-<page size> or an "
    "extended resource <domain>/<name> (e.g. nvidia.com/gpu)"
)


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a container resource the API server takes, or None."""
    if name in STANDARD:
        return None
    if name.startswith(HUGEPAGES_PREFIX):
        size = name.removeprefix(HUGEPAGES_PREFIX)
        try:
            page = quantity.parse(size)
        except quantity.QuantityError:
            return NAME_MESSAGE
        if page <= 0 or page.denominator != 1:
            return "the page size must be a positive whole number of bytes"
        return None
    domain, slash, part = name.partition("/")
    if (
        not slash
        or not _SUBDOMAIN.fullmatch(domain)
        or len(domain) > _DOMAIN_MAX
        or domain.startswith("requests.")
        or domain == "kubernetes.io"
        or domain.endswith(".kubernetes.io")
        or len(part) > 63
        or not _NAME_PART.fullmatch(part)
    ):
        return NAME_MESSAGE
    return None


def _overcommit_allowed(name: str) -> bool:
    return name in STANDARD


def over_limit(name: str, request: str, limit: str) -> str:
    """The message for a request above its limit (the CRD rule builds the same)."""
    return f"requests.{name} {request} must be <= limits.{name} {limit}"


def problems(requests: dict[str, str], limits: dict[str, str]) -> list[str]:
    """Every broken rule of one container's requirements (names and quantities
    are already valid), each naming ``requests.<name>`` or ``limits.<name>``."""
    found: list[str] = []
    values = {
        ("requests", name): quantity.parse(text) for name, text in sorted(requests.items())
    } | {("limits", name): quantity.parse(text) for name, text in sorted(limits.items())}
    for (where, name), value in values.items():
        text = requests[name] if where == "requests" else limits[name]
        if value < 0:
            found.append(f"{where}.{name} {text} must not be negative")
        elif not _overcommit_allowed(name) and name.startswith(HUGEPAGES_PREFIX):
            page = quantity.parse(name.removeprefix(HUGEPAGES_PREFIX))
            if page > 0 and (value / page).denominator != 1:
                found.append(f"{where}.{name} {text} must be a whole multiple of the page size")
        elif not _overcommit_allowed(name) and value.denominator != 1:
            found.append(f"{where}.{name} {text} must be a whole number")
    for name, text in sorted(requests.items()):
        request = values["requests", name]
        if name not in limits:
            if not _overcommit_allowed(name):
                found.append(
                    f"limits.{name} is required: {name} cannot be overcommitted, set its limit "
                    f"equal to requests.{name} {text}"
                )
            continue
        limit = values["limits", name]
        if not _overcommit_allowed(name) and request != limit:
            found.append(
                f"requests.{name} {text} must equal limits.{name} {limits[name]}: {name} "
                "cannot be overcommitted"
            )
        elif request > limit:
            found.append(over_limit(name, text, limits[name]))
    names = set(requests) | set(limits)
    if any(n.startswith(HUGEPAGES_PREFIX) for n in names) and not names & {"cpu", "memory"}:
        found.append("huge pages need a cpu or memory request or limit beside them")
    return found
