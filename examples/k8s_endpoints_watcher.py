#!/usr/bin/env python3
"""Keep an agent's registrations in step with Kubernetes-style endpoint lists (docs/orchestrator.md).

Input is a stream of snapshots, one JSON document per line on stdin, or a file
re-read whenever it changes (``--file``). A snapshot is one service or a list
of them, either in a short form::

    {"service": "web", "endpoints": [{"name": "web-7d9f", "address": "10.1.0.5", "ready": true}]}

or as a Kubernetes EndpointSlice (``kubectl get endpointslice -o json``, one
item or a ``List``)::

    {"kind": "EndpointSlice", "metadata": {"labels": {"kubernetes.io/service-name": "web"}},
     "endpoints": [{"addresses": ["10.1.0.5"], "conditions": {"ready": true}, "targetRef": {"name": "web-7d9f"}}]}

For every service a snapshot mentions, the ready endpoints are the desired
instances: new ones are registered (POST), changed ones updated (PUT), and
registered ones that are gone or not ready are deregistered gracefully (drain,
then withdraw; ``--deadline``). Services a snapshot does not mention, and
instances from the agent's config file, are left alone. ``--template`` gives
the fields every registration gets (health check, metric sources, monitoring
parameters); ``{address}`` and ``{name}`` in its strings are filled in.

Standard library only, so it can run wherever the orchestrator's events are.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

Key = tuple[str, str]  # (service, instance)


@dataclass(frozen=True)
class Action:
    verb: str  # register | update | deregister
    key: Key
    body: Mapping[str, Any] | None = None


# ------------------------------------------------------------ pure: snapshots to actions


def services_in(snapshot: Any) -> dict[str, list[dict[str, Any]]]:
    """service -> its endpoints in the short form ({name, address, ready, ...})."""
    items = snapshot.get("items", [snapshot]) if isinstance(snapshot, dict) else snapshot
    found: dict[str, list[dict[str, Any]]] = {}
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if item.get("kind") == "EndpointSlice":
            service = str(item.get("metadata", {}).get("labels", {}).get("kubernetes.io/service-name", ""))
            endpoints = [{"name": str(e.get("targetRef", {}).get("name") or e["addresses"][0].replace(":", "-")),
                          "address": e["addresses"][0],
                          "ready": bool(e.get("conditions", {}).get("ready", True))}
                         for e in item.get("endpoints") or [] if e.get("addresses")]
        else:
            service = str(item.get("service", ""))
            endpoints = [e for e in item.get("endpoints") or [] if isinstance(e, dict)]
        if service:
            found.setdefault(service, []).extend(endpoints)
    return found


def _fill(value: Any, endpoint: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return value.replace("{address}", str(endpoint["address"])).replace("{name}", str(endpoint["name"]))
    if isinstance(value, list):
        return [_fill(item, endpoint) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, endpoint) for key, item in value.items()}
    return value


def desired(snapshot: Any, template: Mapping[str, Any]) -> tuple[set[str], dict[Key, dict[str, Any]]]:
    """The services the snapshot speaks for, and the registration each ready endpoint should have."""
    wanted: dict[Key, dict[str, Any]] = {}
    services = services_in(snapshot)
    for service, endpoints in services.items():
        for endpoint in endpoints:
            if not endpoint.get("ready", True) or "address" not in endpoint or "name" not in endpoint:
                continue
            body = {**_fill(dict(template), endpoint), "service": service, "name": str(endpoint["name"]),
                    "binding": str(endpoint["address"])}
            if "capacity" in endpoint:
                body["capacity"] = endpoint["capacity"]
            wanted[(service, str(endpoint["name"]))] = body
    return set(services), wanted


def plan(current: Mapping[Key, Mapping[str, Any]], services: set[str],
         wanted: Mapping[Key, Mapping[str, Any]]) -> list[Action]:
    """``current``: what the agent holds from the API (registration documents), deregistering ones left out."""
    actions = [Action("register", key, body) for key, body in sorted(wanted.items()) if key not in current]
    actions += [Action("update", key, body) for key, body in sorted(wanted.items())
                if key in current and not _same(current[key], body)]
    actions += [Action("deregister", key) for key in sorted(current) if key[0] in services and key not in wanted]
    return actions


def _same(registered: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
    """The agent keeps registrations normalised (defaults left out, numbers as floats): compare what we set."""
    return all(_norm(registered.get(key)) == _norm(value) for key, value in body.items())


def _norm(value: Any) -> Any:
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


# ------------------------------------------------------------ I/O: the agent's API


class Agent:
    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.base = f"http://{address}"
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def registered(self) -> dict[Key, dict[str, Any]]:
        status, answer = self.call("GET", "/v1/instances")
        if status != 200:
            raise RuntimeError(f"GET /v1/instances: {status} {answer.get('error')}")
        return {(i["service"], i["instance"]): i.get("registration", {}) for i in answer["instances"]
                if i.get("origin") == "api" and "deregistering" not in i}


def sync(agent: Agent, snapshot: Any, template: Mapping[str, Any], deadline: float | None) -> list[str]:
    """Bring the agent in line with one snapshot; returns one line per action taken (and its result)."""
    services, wanted = desired(snapshot, template)
    report = []
    for action in plan(agent.registered(), services, wanted):
        path = f"/v1/instances/{quote(action.key[0], safe='')}/{quote(action.key[1], safe='')}"
        if action.verb == "register":
            status, answer = agent.call("POST", "/v1/instances", action.body)
        elif action.verb == "update":
            status, answer = agent.call("PUT", path, action.body)
        else:
            status, answer = agent.call("DELETE", path + (f"?deadline={deadline:g}" if deadline is not None else ""))
        outcome = "ok" if status < 400 else f"refused {status}: {answer.get('error')} {answer.get('fields', '')}"
        report.append(f"{action.verb} {action.key[0]}/{action.key[1]}: {outcome}")
    return report


def snapshots(args: argparse.Namespace) -> Iterator[Any]:
    if args.file is None:
        for line in sys.stdin:
            if line.strip():
                yield json.loads(line)
        return
    seen: tuple[float, int] | None = None
    while True:
        try:
            stat = os.stat(args.file)
            if (stat.st_mtime, stat.st_size) != seen:
                seen = (stat.st_mtime, stat.st_size)
                with open(args.file, encoding="utf-8") as file:
                    yield json.load(file)
        except (OSError, ValueError) as exc:
            print(f"watcher: {args.file}: {exc}", file=sys.stderr)
        if args.once:
            return
        time.sleep(args.interval)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True, metavar="HOST:PORT", help="the agent's agent.api.listen")
    parser.add_argument("--file", default=None, help="re-read this JSON file when it changes (default: stdin lines)")
    parser.add_argument("--template", default=None, help="JSON file: fields every registration gets")
    parser.add_argument("--deadline", type=float, default=None, help="drain deadline of deregistrations (s)")
    parser.add_argument("--interval", type=float, default=1.0, help="--file: seconds between looks")
    parser.add_argument("--once", action="store_true", help="--file: one pass, then exit")
    args = parser.parse_args(argv)
    template: dict[str, Any] = {}
    if args.template:
        with open(args.template, encoding="utf-8") as file:
            template = json.load(file)
    agent = Agent(args.api)
    for snapshot in snapshots(args):
        try:
            for line in sync(agent, snapshot, template, args.deadline):
                print(line, flush=True)
        except (OSError, RuntimeError, ValueError) as exc:  # the agent is away: try again with the next snapshot
            print(f"watcher: {exc}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
