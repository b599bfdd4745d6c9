"""A small S3 client for what Headroom itself does on an S3 server: create a
bucket, set its CORS, and versitygw's admin API (create/update users, create a
bucket for an owner, change a bucket's owner), blocking over http.client, for
``headroom.agent.bucket`` (the builtin provider's sidecar); and check a bucket
(:meth:`Client.bucket_exists`), non-blocking over an aiohttp session, for the
operator's periodic bucket check. Paths are always path-style (``/bucket``).

No secret is ever put in an exception or a log line: errors carry the S3
error code and message the server sent, and the request's method and path.

Where the async requests connect is the session's: the operator's bucket check
resolves names itself and never connects to an internal address
(``headroom.reconcile.bucket_check``).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.client
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from headroom.s3 import sigv4

if TYPE_CHECKING:
    import aiohttp

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

    def _connection(self, what: str) -> http.client.HTTPConnection:
        url = urllib.parse.urlsplit(self.endpoint)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError as err:  # a port out of 0-65535
            raise S3Error(
                status=0, code="InvalidEndpoint", message=str(err), request=what
            ) from None
        https = url.scheme == "https"
        conn_type = http.client.HTTPSConnection if https else http.client.HTTPConnection
        return conn_type(url.hostname or "", port, timeout=self.timeout_seconds)

    def _prepare(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        body: bytes,
    ) -> tuple[str, str, dict[str, str]]:
        """(what it is, for errors; the request target; the signed headers)."""
        query = dict(query or {})
        signed = sigv4.sign(
            method=method,
            host=urllib.parse.urlsplit(self.endpoint).netloc,
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
        return f"{method} {path}", target, signed

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
        what, target, signed = self._prepare(method, path, query=query, headers=headers, body=body)
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
        return _checked(response, ok=ok, what=what)

    async def request_async(
        self,
        session: aiohttp.ClientSession,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 204),
    ) -> Response:
        """:meth:`request` (without a body), non-blocking: through ``session``,
        whose connector decides where the endpoint's host is reached."""
        # imported here: the agent (blocking requests only) never loads them
        import aiohttp  # noqa: PLC0415
        import yarl  # noqa: PLC0415

        what, target, signed = self._prepare(method, path, query=query, headers=None, body=b"")
        url = yarl.URL(self.endpoint.rstrip("/") + target, encoded=True)
        try:
            async with session.request(
                method,
                url,
                headers=signed,
                data=b"",
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_seconds),
            ) as raw:
                response = Response(
                    status=raw.status,
                    headers={k.lower(): v for k, v in raw.headers.items()},
                    body=await raw.read(),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as err:
            raise S3Error(
                status=0, code=type(err).__name__, message=str(err) or "no answer", request=what
            ) from None
        return _checked(response, ok=ok, what=what)

    # --- S3 ---------------------------------------------------------------

    async def bucket_exists(self, session: aiohttp.ClientSession, bucket: str) -> bool:
        """HEAD the bucket: True (200), False (404); S3Error for anything else
        (403: it exists but these keys may not use it, or the keys are wrong)."""
        try:
            await self.request_async(session, "HEAD", f"/{bucket}")
        except S3Error as err:
            if err.status == 404:
                return False
            if err.status == 0:
                raise
            # a HEAD answer has no body: ask again with a GET to learn why
            # (InvalidAccessKeyId, SignatureDoesNotMatch, AccessDenied, ...)
            try:
                await self.request_async(session, "GET", f"/{bucket}", query={"location": ""})
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


def _checked(response: Response, *, ok: tuple[int, ...], what: str) -> Response:
    if response.status not in ok:
        code, message = error_of(response.body)
        raise S3Error(
            status=response.status,
            code=code or http.client.responses.get(response.status, ""),
            message=message,
            request=what,
        )
    return response


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
