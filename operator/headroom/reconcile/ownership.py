"""Is an object Headroom's? Proven, never claimed (pure).

An object is a profile's child when it carries the profile's owner reference.
The one kind Headroom keeps without one, a ``cosi`` bucket's BucketClaim with
deletionPolicy Retain (so the bucket outlives the profile, and a profile of
the same name takes the claim back), carries a proof instead: an HMAC of its
kind, namespace, name and profile under a key only the operator holds (a
Secret in its own namespace, :mod:`headroom.runtime.ownership_key`). Labels and
the retain annotation, which anyone who can create the object can write,
prove nothing; a copied proof names another object.

A claim made before proofs existed is taken as Headroom's only while the
profile's own BucketAccess (owner reference) of that name stands beside it;
the next apply stamps its proof. Called by :mod:`headroom.reconcile.reconciler`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from headroom.planning import object_storage

Obj = dict[str, Any]
PROOF_ANNOTATION = "headroom.dev/retained-proof"


def owned_by(obj: Obj, uid: str) -> bool:
    return any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences") or [])


def proof(key: bytes, *, kind: str, namespace: str, name: str, profile: str) -> str:
    message = "\0".join(("headroom.dev/retained", kind, namespace, name, profile))
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()[:40]


def _proof_of(obj: Obj, *, key: bytes, profile: str) -> str:
    meta = obj["metadata"]
    return proof(
        key,
        kind=obj["kind"],
        namespace=str(meta.get("namespace", "")),
        name=str(meta["name"]),
        profile=profile,
    )


def stamp_proofs(objects: dict[str, Obj], *, key: bytes, profile: str) -> dict[str, Obj]:
    """``objects`` with the proof on each one that is retained."""
    stamped = dict(objects)
    for child_key, obj in objects.items():
        if not object_storage.is_retained(obj):
            continue
        meta = obj["metadata"]
        value = _proof_of(obj, key=key, profile=profile)
        annotations = {**(meta.get("annotations") or {}), PROOF_ANNOTATION: value}
        stamped[child_key] = {**obj, "metadata": {**meta, "annotations": annotations}}
    return stamped


def retained_children(
    found: dict[str, Obj],
    *,
    allowed: frozenset[str],
    owned: dict[str, Obj],
    key: bytes,
    profile: str,
) -> dict[str, Obj]:
    """Of ``found`` (objects with the profile's labels and the retain
    annotation), those that are its retained children: of a kind and name it
    retains (``allowed``), with a valid proof, or made before proofs and
    vouched for by an ``owned`` BucketAccess of the same name."""
    kept: dict[str, Obj] = {}
    for child_key, obj in found.items():
        if child_key not in allowed:
            continue
        have = (obj["metadata"].get("annotations") or {}).get(PROOF_ANNOTATION)
        if have is None:
            name = child_key.split("/", 1)[1]
            if f"BucketAccess/{name}" in owned:
                kept[child_key] = obj
            continue
        if hmac.compare_digest(str(have), _proof_of(obj, key=key, profile=profile)):
            kept[child_key] = obj
    return kept
