"""A small blocking S3 client over http.client, for what Headroom itself does
on an S3 server: check a bucket, create one, set its CORS, and versitygw's
admin API (create/update users, create a bucket for an owner, change a
bucket's owner). Called by ``headroom.agent.bucket`` (the builtin provider's
sidecar). Paths are always path-style (``/bucket``).

No secret is ever put in an exception or a log line: errors carry the S3
error code and message the server sent, and the request's method and path.

With ``refuse_internal`` (the operator's own bucket check) the endpoint's name is
resolved first and the connection goes to an address that was checked: none of
loopback, link-local, unspecified, multicast or a cloud's metadata service
(:func:`headroom.api.endpoints.internal_address`), so no profile can make the
operator call into the cluster's or the cloud's internals, not even by a name
that resolves there.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import socket
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.etree import ElementTree

from headroom.api import endpoints
from headroom.s3 import sigv4

DEFAULT_TIMEOUT_SECONDS = 10.0


class S3Error(RuntimeError):
    """The server answered with an error status (or not at all: status 0)."""

    def __init__(self, *, status: int, code: str, message: str, request: str) -> None:
        super().__init__(f"{request}: {status} {code}: {message}".strip())
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True)
class Client:
    """Requests to ``endpoint`` (``http[s]://host[:port]``) signed with one key pair."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"
    timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS
    refuse_internal: bool = False  # the operator's check: never an internal address

    def _connection(self, what: str) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.endpoint)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as err:  # a port out of 0-65535
            raise S3Error(
                status=0, code="InvalidEndpoint", message=str(err), request=what
            ) from None
        host = url.hostname or ""
        https = url.scheme == "https"
        if not self.refuse_internal:
            conn_type = http.client.HTTPSConnection if https else http.client.HTTPConnection
            return conn_type(host, port, timeout=self.timeout_seconds)
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as err:
            raise S3Error(
                status=0, code=type(err).__name__, message=str(err), request=what
            ) from None
        addresses = [str(info[4][0]) for info in found]
        internal = [a for a in addresses if endpoints.internal_address(a)]
        if internal or not addresses:
            raise S3Error(
                status=0,
                code="InternalAddress",
                message=f"{host} resolves to {', '.join(internal) or 'nothing'}: "
                "Headroom does not contact the cluster's or the cloud's own addresses",
                request=what,
            )
        pinned = _PinnedHTTPS if https else _PinnedHTTP
        return pinned(host, port, address=addresses[0], timeout=self.timeout_seconds)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Response:
        """Send one signed request; S3Error unless its status is in ``ok``."""
        url = urllib.parse.urlsplit(self.endpoint)
        host = url.netloc
        query = dict(query or {})
        signed = sigv4.sign(
            method=method,
            host=host,
            path=path,
            query=query,
            headers={**(headers or {}), "content-length": str(len(body))},
            body=body,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            now=datetime.datetime.now(datetime.UTC),
        )
        target = urllib.parse.quote(path, safe="/-_.~")
        if query:
            target += "?" + sigv4.canonical_query(query)
        what = f"{method} {path}"
        conn = self._connection(what)
        try:
            conn.request(method, target, body=body, headers=signed)
            raw = conn.getresponse()
            response = Response(
                status=raw.status,
                headers={k.lower(): v for k, v in raw.getheaders()},
                body=raw.read(),
            )
        except OSError as err:
            raise S3Error(
                status=0, code=type(err).__name__, message=str(err), request=what
            ) from None
        finally:
            conn.close()
        if response.status not in ok:
            code, message = error_of(response.body)
            raise S3Error(
                status=response.status,
                code=code or http.client.responses.get(response.status, ""),
                message=message,
                request=what,
            )
        return response

    # --- S3 ---------------------------------------------------------------

    def bucket_exists(self, bucket: str) -> bool:
        """HEAD the bucket: True (200), False (404); S3Error for anything else
        (403: it exists but these keys may not use it, or the keys are wrong)."""
        try:
            self.request("HEAD", f"/{bucket}")
        except S3Error as err:
            if err.status == 404:
                return False
            if err.status == 0:
                raise
            # a HEAD answer has no body: ask again with a GET to learn why
            # (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, ...)
            try:
                self.request("GET", f"/{bucket}", query={"location": ""})
            except S3Error as detailed:
                if detailed.code and detailed.status == err.status:
                    raise detailed from None
            raise
        return True

    def put_bucket_cors(self, bucket: str, document: str) -> None:
        body = document.encode()
        md5 = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
        self.request(
            "PUT",
            f"/{bucket}",
            query={"cors": ""},
            headers={"content-type": "application/xml", "content-md5": md5},
            body=body,
        )

    def delete_bucket_cors(self, bucket: str) -> None:
        self.request("DELETE", f"/{bucket}", query={"cors": ""})

    def get_bucket_cors(self, bucket: str) -> str | None:
        """The bucket's CORS document, None when it has none."""
        try:
            return self.request("GET", f"/{bucket}", query={"cors": ""}).body.decode()
        except S3Error as err:
            if err.code == "NoSuchCORSConfiguration" or err.status == 404:
                return None
            raise

    # --- versitygw admin API (root credentials, admin endpoint) -----------

    def create_user(self, *, access_key: str, secret_key: str, role: str) -> bool:
        """Create an IAM user; False (nothing done) when it exists already."""
        body = _xml("Account", Access=access_key, Secret=secret_key, Role=role)
        try:
            self.request("PATCH", "/create-user", body=body)
        except S3Error as err:
            if err.code == "XAdminUserExists":
                return False
            raise
        return True

    def update_user(self, *, access_key: str, secret_key: str, role: str) -> None:
        body = _xml("MutableProps", Secret=secret_key, Role=role)
        self.request("PATCH", "/update-user", query={"access": access_key}, body=body)

    def list_bucket_owners(self) -> dict[str, str]:
        """Every bucket's owner (access key), by bucket name."""
        root = ElementTree.fromstring(self.request("PATCH", "/list-buckets").body)  # noqa: S314 - our server
        owners: dict[str, str] = {}
        for bucket in root.iter():
            if _local(bucket.tag) != "Buckets":
                continue
            name = owner = ""
            for child in bucket:
                if _local(child.tag) == "Name":
                    name = child.text or ""
                elif _local(child.tag) == "Owner":
                    owner = child.text or ""
            if name:
                owners[name] = owner
        return owners

    def create_bucket_for(self, bucket: str, *, owner: str) -> bool:
        """Create ``bucket`` owned by ``owner``; False when it exists already."""
        try:
            self.request("PATCH", f"/{bucket}/create", headers={"x-vgw-owner": owner})
        except S3Error as err:
            if err.code in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
                return False
            raise
        return True

    def change_bucket_owner(self, bucket: str, *, owner: str) -> None:
        self.request("PATCH", "/change-bucket-owner/", query={"bucket": bucket, "owner": owner})


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _xml(root: str, **fields: str) -> bytes:
    element = ElementTree.Element(root)
    for name, value in fields.items():
        ElementTree.SubElement(element, name).text = value
    return ElementTree.tostring(element)


def error_of(body: bytes) -> tuple[str, str]:
    """(Code, Message) of an S3 XML error body; empty strings when there is none."""
    if not body.strip():
        return "", ""
    try:
        root = ElementTree.fromstring(body)  # noqa: S314 - an S3 error document
    except ElementTree.ParseError:
        return "", body[:200].decode(errors="replace")
    found = {_local(child.tag): (child.text or "") for child in root}
    return found.get("Code", ""), found.get("Message", "")


class _PinnedHTTP(http.client.HTTPConnection):
    """Connects to ``address`` (checked), says ``host`` in the Host header."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """Connects to ``address`` (checked); TLS verifies the certificate for ``host``."""

    def __init__(self, host: str, port: int, *, address: str, timeout: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self._tls)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)
