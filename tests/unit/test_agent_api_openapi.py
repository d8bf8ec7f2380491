"""docs/openapi/agent-registration.yaml is what the code serves at GET /openapi.json (--update-golden rewrites it)."""

from __future__ import annotations

from pathlib import Path

import yaml

from dyncast_bgp.agent.openapi import document, render_yaml

SPEC = Path(__file__).resolve().parents[2] / "docs" / "openapi" / "agent-registration.yaml"


def test_the_documented_spec_is_the_served_one(update_golden: bool) -> None:
    if update_golden:
        SPEC.write_text(render_yaml(), encoding="utf-8")
    assert SPEC.read_text(encoding="utf-8") == render_yaml(), "run pytest --update-golden"


def test_spec_describes_every_route_and_the_registration_fields() -> None:
    spec = yaml.safe_load(render_yaml())
    assert spec == document()
    assert set(spec["paths"]) == {"/v1/instances", "/v1/instances/{service}/{name}", "/v1/services",
                                  "/v1/parameters", "/openapi.json"}
    fields = spec["components"]["schemas"]["Registration"]["properties"]
    assert {"service", "dsid", "name", "binding", "capacity", "version", "metrics", "health", "monitoring",
            "parameters"} <= set(fields)
    assert set(fields["service"].items()) >= {("type", "string")}
    refs = {value for value in _walk(spec) if isinstance(value, str) and value.startswith("#/components/schemas/")}
    assert {ref.rsplit("/", 1)[1] for ref in refs} <= set(spec["components"]["schemas"]), "no dangling $ref"


def _walk(node: object) -> list[object]:
    if isinstance(node, dict):
        return [item for value in node.values() for item in _walk(value)]
    if isinstance(node, list):
        return [item for value in node for item in _walk(value)]
    return [node]
