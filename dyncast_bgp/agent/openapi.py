"""The OpenAPI 3 description of the registration API, built from the pydantic models. Pure.

``document()`` is what ``GET /openapi.json`` answers; ``render_yaml()`` is
docs/openapi/agent-registration.yaml (checked by a golden test; regenerate with
``pytest tests/unit/test_agent_api_openapi.py --update-golden``).
"""

from __future__ import annotations

from typing import Any

import yaml

from dyncast_bgp.agent.api import Registration
from dyncast_bgp.agent.monitoring import PARAMETERS

_ERROR = {"$ref": "#/components/schemas/Error"}
_INSTANCE = {"$ref": "#/components/schemas/InstanceView"}


def _answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request (not JSON, bad query)", 404: "no such instance or resource",
            409: "conflict: unknown service, D-SID conflict, duplicate D-BID or path id, instance exists, "
                 "instance from the config file", 413: "body too large",
            422: "invalid registration: `fields` lists each problem with its field path"}
    return {str(code): _answer(text[code], _ERROR) for code in codes}


_PATH_PARAMS = [{"name": "service", "in": "path", "required": True, "schema": {"type": "string"}},
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def document() -> dict[str, Any]:
    schema = Registration.model_json_schema(ref_template="#/components/schemas/{model}")
    definitions = schema.pop("$defs", {})
    instance_ok = {"type": "object", "properties": {"ok": {"type": "boolean"}, "instance": _INSTANCE}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "dyncast agent registration API", "version": "1",
                 "description": "Orchestrators (NFV-MANO, Kubernetes, OpenStack) register service instances "
                 "with the agent at run time (ETSI GR NFV-EVE 020 clauses 5.1.2.3, 5.2.2.3). "
                 "See docs/orchestrator.md."},
        "paths": {
            "/v1/instances": {
                "get": {"summary": "every instance (config and registered) and the conflicts found at start",
                        "responses": {"200": _answer("the instances", {
                            "type": "object", "properties": {
                                "ok": {"type": "boolean"}, "instances": {"type": "array", "items": _INSTANCE},
                                "conflicts": {"type": "array", "items": {"$ref": "#/components/schemas/Conflict"}}}})}},
                "post": {"summary": "register an instance",
                         "requestBody": {"required": True, "content": {"application/json": {
                             "schema": {"$ref": "#/components/schemas/Registration"}}}},
                         "responses": {"201": _answer("registered", instance_ok), **_errors(400, 409, 413, 422)}},
            },
            "/v1/instances/{service}/{name}": {
                "parameters": _PATH_PARAMS,
                "get": {"summary": "one instance", "responses": {"200": _answer("the instance", instance_ok),
                                                                 **_errors(404)}},
                "put": {"summary": "change a registered instance (the whole registration; service and name may "
                        "be left out of the body)",
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Registration"}}}},
                        "responses": {"200": _answer("changed", instance_ok), **_errors(400, 404, 409, 422)}},
                "delete": {"summary": "deregister: gracefully (drain, withdraw when active_sessions reaches 0 or "
                           "at the deadline) or immediately (withdraw now)",
                           "parameters": [
                               {"name": "immediate", "in": "query", "schema": {"type": "boolean", "default": False}},
                               {"name": "deadline", "in": "query", "description": "seconds; default "
                                "agent.api.drain_deadline", "schema": {"type": "number", "minimum": 0,
                                                                       "maximum": 86400}}],
                           "responses": {"200": _answer("withdrawn and removed", {"type": "object"}),
                                         "202": _answer("draining; withdrawn later", instance_ok),
                                         **_errors(400, 404, 409)}},
            },
            "/v1/services": {"get": {"summary": "the name registry: configured names, running services, pool",
                                     "responses": {"200": _answer("names", {"type": "object"})}}},
            "/v1/parameters": {"get": {"summary": "monitoring parameters a registration may name",
                                       "responses": {"200": _answer("parameters", {"type": "object"})}}},
            "/openapi.json": {"get": {"summary": "this document",
                                      "responses": {"200": _answer("OpenAPI 3", {"type": "object"})}}},
        },
        "components": {"schemas": {
            **definitions,
            "Registration": schema,
            "Error": {"type": "object", "required": ["ok", "error"], "properties": {
                "ok": {"type": "boolean", "enum": [False]}, "error": {"type": "string"},
                "fields": {"type": "array", "items": {"type": "object", "properties": {
                    "loc": {"type": "string", "example": "health.interval"}, "msg": {"type": "string"}}}}}},
            "Conflict": {"type": "object", "properties": {
                "service": {"type": "string"}, "instance": {"type": ["string", "null"]},
                "reason": {"type": "string"}, "origin": {"type": "string", "enum": ["state_file", "names"]}}},
            "InstanceView": {"type": "object", "description": "as `dyncast ctl instances` shows it, plus origin",
                             "properties": {
                                 "service": {"type": "string"}, "instance": {"type": "string"},
                                 "dsid": {"type": "string"}, "dbid": {"type": "string"},
                                 "origin": {"type": "string", "enum": ["config", "api"]},
                                 "admin": {"type": "string"}, "health": {"type": "string"},
                                 "published": {"type": "boolean"},
                                 "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
                                 "deregistering": {"type": "object"},
                             }},
            "MonitoringParameter": {"type": "string", "enum": list(PARAMETERS)},
        }},
    }


def render_yaml() -> str:
    return ("# Generated from dyncast_bgp/agent/openapi.py; do not edit (pytest --update-golden rewrites it).\n"
            + yaml.safe_dump(document(), sort_keys=False, allow_unicode=True, width=110))
