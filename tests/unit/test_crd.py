"""The committed CRD is exactly what the pydantic models generate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from headroom import yamlfmt
from headroom.api import crd, quantity, v1alpha1
from headroom.api.v1alpha1 import schema as schema_mod
from tests import hack_scripts

CRD_FILE = Path(__file__).resolve().parents[2] / "crds" / "headroom.dev_scalingprofiles.yaml"


def test_committed_crd_matches_models() -> None:
    assert CRD_FILE.read_text() == yamlfmt.dump(crd.build_crd()), "run `make crds`"


def test_schema_is_structural() -> None:
    text = yamlfmt.dump(crd.build_crd())
    forbidden_keys = ("$ref", "anyOf", "$defs", "title:", "additionalProperties: false")
    for forbidden in (*forbidden_keys, "patternProperties"):
        assert forbidden not in text, forbidden


def test_cross_field_rules_name_fields() -> None:
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules = spec["properties"]["app"]["x-kubernetes-validations"]
    assert any("spec.app.replicas" in r["message"] for r in rules)
    replica_rules = spec["properties"]["app"]["properties"]["replicas"]["x-kubernetes-validations"]
    assert replica_rules[0]["message"].startswith("spec.app.replicas.min")


def test_chart_crd_template_matches() -> None:
    root = CRD_FILE.parents[1]
    chart = root / "charts" / "headroom"
    sync = hack_scripts.load("sync_chart")
    assert (chart / "templates" / "crd.yaml").read_text() == sync.crd_template_text(), "make crds"
    # Helm installs a chart's crds/ once and never upgrades it: the CRD must be a template
    assert not (chart / "crds").exists()


def _spec_schema() -> dict[str, Any]:
    root = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema: dict[str, Any] = root
    return schema


def _walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, sub in (node.get("properties") or {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(node["additionalProperties"], f"{path}.*")
    if "items" in node:
        yield from _walk(node["items"], f"{path}[]")


def _is_string(node: dict[str, Any]) -> bool:
    return node.get("type") == "string" or bool(node.get("x-kubernetes-int-or-string"))


def test_every_string_is_bounded_so_the_api_server_refuses_huge_values() -> None:
    unbounded = [p for p, n in _walk(_spec_schema()) if _is_string(n) and "maxLength" not in n]
    assert unbounded == []


def test_every_spec_integer_map_and_list_is_bounded() -> None:
    spec = _spec_schema()["properties"]["spec"]
    problems = []
    for path, node in _walk(spec, "spec"):
        if node.get("type") == "integer" and ("minimum" not in node or "maximum" not in node):
            problems.append(f"{path}: integer without minimum/maximum")
        if node.get("type") == "array" and "maxItems" not in node:
            problems.append(f"{path}: array without maxItems")
        if isinstance(node.get("additionalProperties"), dict):
            rules = [r["rule"] for r in node.get("x-kubernetes-validations", [])]
            if "maxProperties" not in node or not any("size(k) <=" in r for r in rules):
                problems.append(f"{path}: map without maxProperties and a key length rule")
    assert problems == []


def test_quantities_are_int_or_string_with_the_quantity_pattern() -> None:
    spec = _spec_schema()["properties"]["spec"]["properties"]
    instance = spec["cache"]["properties"]["instances"]["items"]["properties"]
    resources = spec["queues"]["items"]["properties"]["resources"]["properties"]
    for node in (
        instance["memory"],
        instance["persistence"]["properties"]["size"],
        resources["requests"]["additionalProperties"],
        resources["limits"]["additionalProperties"],
    ):
        assert node["x-kubernetes-int-or-string"] is True
        assert node["pattern"] == quantity.PATTERN
        assert "type" not in node


def test_cel_rules_parse_only_what_matches_the_quantity_pattern() -> None:
    # The API server runs CEL even when a pattern fails, and quantity() of an
    # unbounded exponent computes 10^exponent: every call is behind the pattern.
    text = yamlfmt.dump(crd.build_crd())
    rules = [
        r["rule"]
        for _, node in _walk(_spec_schema())
        for r in node.get("x-kubernetes-validations", [])
    ]
    assert "isQuantity(" not in text
    for rule in rules:
        if "quantity(" in rule:
            assert f".matches('{quantity.PATTERN}')" in rule, rule


def test_names_are_dns_names_and_the_profile_name_a_short_label() -> None:
    root = _spec_schema()
    spec = root["properties"]["spec"]["properties"]
    persistence = spec["cache"]["properties"]["instances"]["items"]["properties"]["persistence"]
    storage_class = persistence["properties"]["storageClassName"]
    assert storage_class["pattern"] == v1alpha1.DNS_SUBDOMAIN
    assert storage_class["maxLength"] == 253
    name = root["properties"]["metadata"]["properties"]["name"]
    assert (name["pattern"], name["maxLength"]) == (v1alpha1.DNS_LABEL, 40)


def test_capacity_floor_above_the_ceiling_is_refused_by_the_api_server_with_numbers() -> None:
    capacity = _spec_schema()["properties"]["spec"]["properties"]["app"]["properties"]["capacity"]
    (rule,) = capacity["x-kubernetes-validations"]
    assert "self.minReplicas <=" in rule["rule"]
    assert "is above the ceiling" in rule["messageExpression"]


def test_requests_above_limits_are_refused_by_the_api_server() -> None:
    spec = _spec_schema()["properties"]["spec"]["properties"]
    rules = spec["queues"]["items"]["properties"]["resources"]["x-kubernetes-validations"]
    assert {r["messageExpression"].split(" ")[0] for r in rules} == {
        "'requests.cpu",
        "'requests.memory",
        "'requests.ephemeral-storage",
    }


def test_fields_behind_immutable_statefulset_fields_are_transition_rules() -> None:
    spec = _spec_schema()["properties"]["spec"]["properties"]
    instance = spec["cache"]["properties"]["instances"]["items"]
    rules = {r["rule"]: r["message"] for r in instance["x-kubernetes-validations"]}
    assert "has(self.persistence) == has(oldSelf.persistence)" in rules
    assert "has(self.sentinel) == has(oldSelf.sentinel)" in rules
    assert "another name" in rules["has(self.sentinel) == has(oldSelf.sentinel)"]
    (persistence_rule,) = instance["properties"]["persistence"]["x-kubernetes-validations"]
    assert "self.size == oldSelf.size" in persistence_rule["rule"]
    assert "storageClassName == oldSelf.storageClassName" in persistence_rule["rule"]


def _numbers(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _numbers(value)
    elif isinstance(node, list):
        for value in node:
            yield from _numbers(value)


def test_exclusive_bounds_are_openapi_v3_booleans() -> None:
    """pydantic's gt= is JSON Schema 2020 (a number); a structural schema wants
    minimum + exclusiveMinimum: true, or the API server refuses the CRD."""
    found = []
    for node in _numbers(crd.build_crd()):
        for flag in ("exclusiveMinimum", "exclusiveMaximum"):
            if flag in node:
                assert node[flag] is True, node
                found.append(node)
    latency = crd.openapi_schema(v1alpha1.AppAlerts)["properties"]["p95LatencySeconds"]
    assert latency["minimum"] == 0 and latency["exclusiveMinimum"] is True
    assert found


def test_a_profile_not_yet_written_reads_as_not_observed() -> None:
    """kstatus calls an object without status Current; the CRD's one status
    default makes it observedGeneration 0, behind metadata.generation."""
    root = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    status = root["properties"]["status"]
    assert status["default"] == {}
    assert status["properties"]["observedGeneration"]["default"] == 0
    defaults = [line for line in yamlfmt.dump(status).splitlines() if "default:" in line]
    assert len(defaults) == 2, defaults  # no other invented status value


def _models() -> list[type[Any]]:
    found: list[type[Any]] = []
    todo: list[type[Any]] = [schema_mod.Model]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


def test_every_rule_of_the_crd_is_checked_by_the_model_too() -> None:
    """Model and CRD refuse the same: each CEL rule is a model's Rule (Python
    check beside it) or a type's rule recorded as paired with its validator."""
    twins = {rule.cel for model in _models() for rule in model.RULES} | schema_mod.paired_rules()
    rules = [
        (path, rule["rule"])
        for path, node in _walk(_spec_schema())
        for rule in node.get("x-kubernetes-validations") or []
    ]
    assert len(rules) > 40
    missing = [(path, rule) for path, rule in rules if rule not in twins]
    assert not missing, missing


def test_every_model_rule_is_in_the_crd_and_no_model_checks_alone() -> None:
    """The other way round: every Rule reaches the CRD, and no model has a
    validator of its own that the CRD would not run (those are the planner's)."""
    in_crd = {
        rule["rule"]
        for _, node in _walk(_spec_schema())
        for rule in node.get("x-kubernetes-validations") or []
    }
    for model in _models():
        for rule in model.RULES:
            assert rule.cel in in_crd, (model.__name__, rule.cel)
        decorators = model.__pydantic_decorators__
        own = {
            name
            for group in (decorators.field_validators, decorators.model_validators)
            for name in group
        } - {"_null_is_absent", "_rules"}
        if model is not v1alpha1.ScalingProfile:  # metadata.name: the CRD's metadata schema
            assert not own, (model.__name__, own)


def _patterns(node: Any) -> set[str]:
    if isinstance(node, dict):
        own = {node["pattern"]} if isinstance(node.get("pattern"), str) else set()
        return own.union(*(_patterns(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_patterns(v) for v in node))
    return set()


def test_every_pattern_a_model_checks_reaches_its_schema() -> None:
    """A BeforeValidator placed before a Field's pattern in ``Annotated`` keeps
    the check in pydantic but drops the pattern from the JSON schema, so the CRD
    would accept what the model refuses (an empty spec.pooler.image did)."""
    lost = []
    for model in _models():
        if not model.model_fields:
            continue
        properties = model.model_json_schema(by_alias=True).get("properties", {})
        for name, field in model.model_fields.items():
            wanted = {getattr(m, "pattern", None) for m in field.metadata} - {None}
            shown = _patterns(properties.get(field.alias or name, {}))
            lost += [(model.__name__, name, p) for p in wanted if p not in shown]
    assert not lost, lost
