"""Generate the ScalingProfile CustomResourceDefinition from the pydantic models.

Called by ``headroom crd`` (``make crds``) and by the drift test that fails when
the committed ``crds/`` file differs. Pydantic's JSON schema needs a few fixes
to be a Kubernetes structural schema: ``$ref`` inlined, ``anyOf [X, null]``
collapsed to ``X``, no ``title``/``additionalProperties: false``, a numeric
``exclusiveMinimum`` turned into ``minimum`` + ``exclusiveMinimum: true``, and bounds the
API server can check: every string gets a ``maxLength`` (an enum its longest
value's; a map's keys a CEL rule, as structural schemas have no
``propertyNames``), so an oversized value is refused with its field before the
webhook ever sees it.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from headroom.api import status, v1alpha1
from headroom.api.v1alpha1 import schema

_SELF = re.compile(r"\bself\b")

_DROP_KEYS = {"title"}
# Child names such as "<name>-pooler-rw" must stay DNS labels (the API server
# only checks that a custom object's name is a DNS subdomain).
_METADATA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": v1alpha1.NAME_MAX, "pattern": v1alpha1.DNS_LABEL}
    },
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        target.update(extra)
        return _resolve(target, defs)
    if "anyOf" in node:
        options = [opt for opt in node["anyOf"] if opt.get("type") != "null"]
        if len(options) == 1:
            merged = {k: v for k, v in node.items() if k not in ("anyOf", "default")}
            merged.update(options[0])
            if node.get("default") is not None:
                merged["default"] = node["default"]
            return _resolve(merged, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "additionalProperties" and value is False:
            continue
        if key == "properties":
            out[key] = {name: _resolve(sub, defs) for name, sub in value.items()}
        elif key == "default" and value is None:
            continue
        else:
            out[key] = _resolve(value, defs)
    if out.get("type") == "object" and "properties" in out:
        out.pop("additionalProperties", None)
    # JSON Schema 2020's numeric exclusiveMinimum (pydantic's gt=) is OpenAPI
    # v3.0's minimum + exclusiveMinimum: true, the only form a structural schema takes.
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if flag in out and not isinstance(out[flag], bool):
            out[bound] = out.pop(flag)
            out[flag] = True
    if "enum" in out and out.get("type") == "string":
        out.setdefault("maxLength", max(len(choice) for choice in out["enum"]))
    keys = out.pop("propertyNames", None)
    # pydantic states a key pattern as patternProperties, which structural schemas refuse
    by_pattern = out.pop("patternProperties", None)
    if by_pattern:
        ((pattern, values),) = by_pattern.items()
        out["additionalProperties"] = values
        keys = {**(keys or {}), "pattern": pattern}
    if keys is not None:
        out.setdefault("x-kubernetes-validations", [])[:0] = _key_rules(keys)
    return out


def _key_rules(keys: dict[str, Any]) -> list[dict[str, Any]]:
    """A map's key schema as CEL over its keys (structural schemas have no
    propertyNames): its length, its pattern and its own rules, each with ``self``
    read as the key. The key type checks the same in the model."""
    found = []
    if "maxLength" in keys:
        found.append(
            schema.paired(
                f"self.all(k, size(k) <= {keys['maxLength']})",
                f"keys must be at most {keys['maxLength']} characters",
            )
        )
    if "pattern" in keys:
        found.append(
            schema.paired(
                f"self.all(k, k.matches('{keys['pattern']}'))",
                f"keys must match {keys['pattern']}",
            )
        )
    for rule in keys.get("x-kubernetes-validations") or []:
        found.append(
            schema.paired(
                f"self.all(k, {_SELF.sub('k', rule['rule'])})", f"keys: {rule['message']}"
            )
        )
    return found


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of a pydantic model, by alias (camelCase)."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    return schema


def _strip_defaults(node: Any) -> Any:
    # Status is written by us; defaults there would only make the API server
    # invent values we did not compute.
    if isinstance(node, dict):
        return {k: _strip_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_strip_defaults(v) for v in node]
    return node


def build_crd() -> dict[str, Any]:
    """The CRD manifest for ScalingProfile, as a plain dict."""
    spec_schema = openapi_schema(v1alpha1.ScalingProfileSpec)
    status_schema = _strip_defaults(openapi_schema(status.ScalingProfileStatus))
    # One default there on purpose: a profile the operator has not written
    # yet reads as status.observedGeneration 0, behind metadata.generation, so
    # kstatus (Flux, kpt) and Argo CD's check see "in progress" instead of
    # calling a status-less object Current (the API server applies it when it
    # reads the object, so profiles created before it get it too).
    status_schema["default"] = {}
    status_schema["properties"]["observedGeneration"]["default"] = 0
    conditions = status_schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    spec_schema["description"] = (
        "What the app needs to scale: its Deployment and replica ceiling, its Postgres "
        "primary, and the pooler Headroom runs in front of it."
    )
    status_schema["description"] = "Observed state, written by Headroom."
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{v1alpha1.PLURAL}.{v1alpha1.GROUP}",
            "labels": {"app.kubernetes.io/part-of": "headroom"},
        },
        "spec": {
            "group": v1alpha1.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": v1alpha1.KIND,
                "listKind": f"{v1alpha1.KIND}List",
                "plural": v1alpha1.PLURAL,
                "singular": v1alpha1.SINGULAR,
                "shortNames": list(v1alpha1.SHORT_NAMES),
                "categories": ["headroom"],
            },
            "versions": [
                {
                    "name": v1alpha1.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": "Ready",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                        },
                        {
                            "name": "Pooler",
                            "type": "string",
                            "jsonPath": ".status.pooler.endpoint",
                        },
                        {
                            "name": "Budget",
                            "type": "string",
                            "description": "server connections / available on the primary",
                            "jsonPath": ".status.budget.summary",
                        },
                        {
                            "name": "Age",
                            "type": "date",
                            "jsonPath": ".metadata.creationTimestamp",
                        },
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "ScalingProfile declares how an app scales: "
                            "pooling, budget, and the pieces Headroom runs for it.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string", "maxLength": 253},
                                "kind": {"type": "string", "maxLength": 63},
                                "metadata": _METADATA,
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }
