"""The URLs a profile gives Headroom: S3 endpoints (the app's SDK and the
operator's own bucket check call them) and CORS origins (a browser sends them).
One grammar for the model, the CRD (patterns and CEL) and the runtime, and one
policy for addresses inside the cluster's or the cloud's own network.

Grammar: ``http[s]://host[:port]``, where host is a dotted IPv4 address
(0-255, no leading zeros) or a DNS name whose labels are 1-63 letters, digits
and inner hyphens and whose last label starts with a letter (so no
``0x7f000001``, ``2130706433`` or ``127.1``, which resolvers read as IPv4),
and port is 1-65535 without leading zeros. A CORS origin is that, in lower
case, or ``*``; a wildcard ``*.`` needs two labels after it (``*.example.com``,
not ``*.com``), and a scheme's default port never appears in an Origin header,
so ``https://app.example.com:443`` would never match and is refused.

Policy: an endpoint on a loopback, link-local (169.254/16: every major
cloud's metadata service), "this network" (0/8) or known metadata address or
name is refused, by the model and the CRD alike. A name can still resolve to
one: :func:`internal_address` is what the operator checks the resolved
addresses with before it connects (``headroom.s3``), so it never contacts them
unless the operator is told it may (``HEADROOM_ALLOW_INTERNAL_ENDPOINTS``, for
tests on 127.0.0.1).

Patterns use ``[.]`` and ``[*]``, never a backslash: the same text is a CEL
string literal.
"""

from __future__ import annotations

import ipaddress
import re

_LABEL = "[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_LAST_LABEL = "[A-Za-z]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_LABEL_LOWER = "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_LAST_LABEL_LOWER = "[a-z]([-a-z0-9]{0,61}[a-z0-9])?"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = f"{_OCTET}([.]{_OCTET}){{3}}"
PORT = (
    "(6553[0-5]|655[0-2][0-9]|65[0-4][0-9][0-9]|6[0-4][0-9][0-9][0-9]"
    "|[1-5][0-9][0-9][0-9][0-9]|[1-9][0-9]{0,3})"
)
DNS_NAME = f"({_LABEL}[.])*{_LAST_LABEL}"
ENDPOINT = f"^https?://({IPV4}|{DNS_NAME})(:{PORT})?$"
ENDPOINT_MAX = 253
# A base URL browsers read objects at: an endpoint with a path (Headroom never calls it).
PUBLIC_URL = f"^https?://({IPV4}|{DNS_NAME})(:{PORT})?(/[A-Za-z0-9._~%/-]*)?$"
_WILDCARD = f"[*][.]({_LABEL_LOWER}[.])+{_LAST_LABEL_LOWER}"
_ORIGIN_HOST = f"({_WILDCARD}|{IPV4}|({_LABEL_LOWER}[.])*{_LAST_LABEL_LOWER})"
CORS_ORIGIN = f"^([*]|https?://{_ORIGIN_HOST}(:{PORT})?)$"
ORIGIN_MAX = 253

ENDPOINT_MESSAGE = (
    "must be http(s)://host[:port]: a DNS name or an IPv4 address, a port 1-65535, "
    "no path (e.g. https://s3.eu-west-1.amazonaws.com)"
)
ORIGIN_MESSAGE = (
    "must be * or http(s)://host[:port] in lower case, a DNS name (or *. and at least two "
    "labels) or an IPv4 address, a port 1-65535 (e.g. https://app.example.com)"
)

# Names for the cluster's own host or a cloud's metadata service.
INTERNAL_NAMES = (
    "localhost",
    "metadata",
    "metadata.google.internal",
    "metadata.goog",
    "instance-data",
    "instance-data.ec2.internal",
)
# IPv4 prefixes (as text: the grammar allows no other spelling) of loopback,
# link-local (cloud metadata) and "this network", and Alibaba's metadata address.
INTERNAL_PREFIXES = ("127.", "169.254.", "0.")
INTERNAL_ADDRESSES = ("100.100.100.200",)
_IPV4_TEXT = "^[0-9.]+$"
INTERNAL_MESSAGE = (
    "must not be a loopback, link-local or cloud metadata address (the cluster's or the "
    "cloud's own): Headroom never contacts those"
)


def host(url: str) -> str:
    """The host of a URL that matches :data:`ENDPOINT` (or an origin)."""
    return url.split("://", 1)[-1].split(":", 1)[0]


def endpoint_problem(url: str) -> str | None:
    if not re.fullmatch(ENDPOINT, url):
        return ENDPOINT_MESSAGE
    name = host(url).lower()
    if name in INTERNAL_NAMES or name.endswith(".localhost"):
        return f"{name}: {INTERNAL_MESSAGE}"
    if re.fullmatch(_IPV4_TEXT, name) and (
        name.startswith(INTERNAL_PREFIXES) or name in INTERNAL_ADDRESSES
    ):
        return f"{name}: {INTERNAL_MESSAGE}"
    return None


def endpoint_cel() -> str:
    """CEL: :func:`endpoint_problem`'s address policy, on a value that matches the grammar."""
    name = "self.split('://')[1].split(':')[0].lowerAscii()"
    names = ", ".join(f"'{n}'" for n in INTERNAL_NAMES)
    prefixes = " || ".join(f"{name}.startsWith('{p}')" for p in INTERNAL_PREFIXES)
    addresses = ", ".join(f"'{a}'" for a in INTERNAL_ADDRESSES)
    return (
        f"!self.matches('{ENDPOINT}') || !({name} in [{names}] || "
        f"{name}.endsWith('.localhost') || ({name}.matches('{_IPV4_TEXT}') && "
        f"({prefixes} || {name} in [{addresses}])))"
    )


def origin_problem(origin: str) -> str | None:
    if not re.fullmatch(CORS_ORIGIN, origin):
        return ORIGIN_MESSAGE
    if (origin.startswith("https://") and origin.endswith(":443")) or (
        origin.startswith("http://") and origin.endswith(":80")
    ):
        return (
            f"{origin}: a browser never sends the scheme's default port in an Origin "
            "header; leave it out"
        )
    return None


ORIGIN_PORT_CEL = (
    "!(self.startsWith('https://') && self.endsWith(':443')) && "
    "!(self.startsWith('http://') && self.endsWith(':80'))"
)
ORIGIN_PORT_MESSAGE = "a browser never sends the scheme's default port (:443, :80): leave it out"


def internal_address(address: str) -> bool:
    """Whether a resolved address (IPv4 or IPv6) is the cluster's or the cloud's
    own: loopback, link-local, unspecified, multicast, or a metadata service."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_loopback
        or ip.is_link_local
        or ip.is_unspecified
        or ip.is_multicast
        or ip in ipaddress.ip_network("0.0.0.0/8")
        or str(ip) in INTERNAL_ADDRESSES
        or ip == ipaddress.ip_address("fd00:ec2::254")  # AWS' metadata service over IPv6
    )
