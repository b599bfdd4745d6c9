"""A Secret every replica shares, made by the first one that finds it missing
or unusable (generic: what it holds is the caller's).

Used by the runtime for the webhook's serving certificate and the ownership
key: each replica reads the Secret; one that finds nothing usable makes the
value and creates (or replaces) the Secret, and a replica that loses that race
(409) reads the winner's instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from headroom.kube import apiserver, errors, kinds

T = TypeVar("T")


async def settle(
    kube: apiserver.Kube,
    *,
    namespace: str,
    name: str,
    data_type: str,
    labels: dict[str, str],
    read: Callable[[dict[str, str]], T | None],
    make: Callable[[], tuple[dict[str, str], T]],
) -> T:
    """What ``read`` finds in the Secret's ``data``; else what ``make`` makes
    (its ``data``, and the value), stored first."""
    for _ in range(3):
        found = await kube.get(kinds.SECRET, namespace=namespace, name=name)
        if found is not None:
            value = read(found.get("data") or {})
            if value is not None:
                return value
        data, made = make()
        secret: apiserver.Obj = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "type": data_type,  # Opaque, kubernetes.io/tls
            "data": data,
        }
        try:
            if found is None:
                await kube.create(secret)
            else:  # not usable: replace it, unless another replica just did
                secret["metadata"]["resourceVersion"] = found["metadata"]["resourceVersion"]
                await kube.replace(secret)
        except errors.ApiError as err:
            if err.status == 409:
                continue  # another replica won: read its value
            raise
        return made
    raise errors.UnavailableError(f"could not settle Secret {namespace}/{name}")
