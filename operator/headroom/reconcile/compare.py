"""Does a desired child differ from the cached one? (pure)

Every desired object carries :data:`HASH_ANNOTATION`, a hash of what Headroom
wants (Secret values excluded). A child needs an apply when

- it is absent;
- its hash annotation differs (the profile or an input changed: this also
  catches fields Headroom stopped setting, which a subset check cannot see);
- a Secret's ``data`` is not exactly the desired ``data`` (keys that are no
  longer wanted must go);
- some field Headroom sets has another value in the cluster, or is missing
  (drift: somebody edited or removed it).

Fields other managers add (defaults, status, an HPA's replicas) are not drift.
Quantities compare by value ("0.5" is "500m"), as the API server stores them
in canonical form.
"""

from __future__ import annotations

import copy
import fractions
import hashlib
import json
from typing import Any

from headroom.api import quantity

HASH_ANNOTATION = "headroom.dev/applied-hash"
Obj = dict[str, Any]

# Keys under which strings are resource quantities.
_QUANTITY_PARENTS = frozenset({"requests", "limits", "capacity"})
_QUANTITY_KEYS = frozenset({"sizeLimit", "storage"})


def quantity_value(text: str) -> fractions.Fraction | None:
    try:
        return quantity.parse(text.strip())
    except quantity.QuantityError:
        return None


def _empty(value: Any) -> bool:
    return value is None or value in ({}, [])


def covers(live: Any, want: Any, *, parent: str = "", key: str = "") -> bool:
    """Whether ``live`` has every field of ``want`` with the same value."""
    if isinstance(want, dict):
        if not isinstance(live, dict):
            return live is None and _empty(want)
        for k, v in want.items():
            if k not in live:
                if _empty(v):
                    continue
                return False
            if not covers(live[k], v, parent=key, key=k):
                return False
        return True
    if isinstance(want, list):
        if not isinstance(live, list):
            return live is None and not want
        return len(live) == len(want) and all(
            covers(lv, wv, parent=parent, key=key) for lv, wv in zip(live, want, strict=True)
        )
    if want == live and type(want) is type(live):
        return True
    if (
        isinstance(want, str)
        and isinstance(live, str)
        and (parent in _QUANTITY_PARENTS or key in _QUANTITY_KEYS)
    ):
        a, b = quantity_value(want), quantity_value(live)
        return a is not None and a == b
    return bool(want == live) and not isinstance(want, bool) and not isinstance(live, bool)


def desired_hash(obj: Obj) -> str:
    """Hash of the desired object, Secret values left out (the applied-hash of
    a Secret is never a plain hash of the passwords in it; pods that must roll
    on a new password carry the revision of what they read, builders.revision)."""
    body = {
        k: v for k, v in obj.items() if k not in ("data", "stringData") or obj["kind"] != "Secret"
    }
    meta = dict(body.get("metadata") or {})
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k != HASH_ANNOTATION}
    meta["annotations"] = annotations
    body["metadata"] = meta
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def stamp(obj: Obj) -> Obj:
    """A copy of ``obj`` carrying its hash annotation."""
    stamped = copy.deepcopy(obj)
    meta = stamped["metadata"]
    meta["annotations"] = {**(meta.get("annotations") or {}), HASH_ANNOTATION: desired_hash(obj)}
    return stamped


def difference(desired: Obj, live: Obj | None) -> str | None:
    """Why ``desired`` (stamped) must be applied over ``live``; None when not."""
    if live is None:
        return "absent"
    want_hash = (desired["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
    have_hash = (live["metadata"].get("annotations") or {}).get(HASH_ANNOTATION)
    if want_hash != have_hash:
        return "changed"
    if desired["kind"] == "Secret":
        if (live.get("data") or {}) != (desired.get("data") or {}):
            return "data"
        desired = {k: v for k, v in desired.items() if k != "data"}
    if not covers(live, desired):
        return "drift"
    return None


def extra_secret_keys(desired: Obj, live: Obj) -> list[str]:
    """Keys of a live Secret that the desired one no longer has."""
    wanted = desired.get("data") or {}
    return sorted(k for k in live.get("data") or {} if k not in wanted)
