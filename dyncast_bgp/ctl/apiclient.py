"""A blocking client of the agent's registration API (`dyncast ctl register/deregister`, examples/)."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote


def split_listen(listen: str) -> tuple[str, int]:
    """``127.0.0.1:9179`` / ``[::1]:9179`` -> host, port (pure; the agent's API server uses it too)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class ApiClientError(Exception):
    """No answer: nothing listening, a timeout, or an answer that is not the API's JSON."""


class ApiClient:
    def __init__(self, listen: str, *, timeout: float = 10.0) -> None:
        self.host, self.port = split_listen(listen)
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        """One request; returns the HTTP status and the JSON answer (4xx answers too)."""
        payload = json.dumps(body).encode() if body is not None else b""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ApiClientError(f"{self.host}:{self.port}: {exc}") from None
        finally:
            connection.close()
        try:
            answer = json.loads(data)
        except ValueError:
            raise ApiClientError(f"answer is not JSON: {data[:200]!r}") from None
        if not isinstance(answer, dict):
            raise ApiClientError(f"answer is not an object: {data[:200]!r}")
        return response.status, answer

    def instances(self) -> list[dict[str, Any]]:
        status, answer = self.call("GET", "/v1/instances")
        if status != 200:
            raise ApiClientError(f"GET /v1/instances: {status} {answer.get('error')}")
        found: list[dict[str, Any]] = answer.get("instances", [])
        return found

    def register(self, registration: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.call("POST", "/v1/instances", registration)

    def update(self, service: str, name: str, registration: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return self.call("PUT", instance_path(service, name), registration)

    def deregister(self, service: str, name: str, *, immediate: bool = False,
                   deadline: float | None = None) -> tuple[int, dict[str, Any]]:
        query = f"?immediate={'true' if immediate else 'false'}"
        if deadline is not None:
            query += f"&deadline={deadline:g}"
        return self.call("DELETE", instance_path(service, name) + query)


def instance_path(service: str, name: str) -> str:
    return f"/v1/instances/{quote(service, safe='')}/{quote(name, safe='')}"
