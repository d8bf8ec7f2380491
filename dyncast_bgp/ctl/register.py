"""`dyncast ctl register FILE` and `dyncast ctl deregister NAME`: the agent's registration API over HTTP.

These verbs talk to ``agent.api.listen`` (``--api HOST:PORT``, or the address
in ``--config``), not to the control socket: a registration is persisted and
reconciled with the config by the API (docs/orchestrator.md), which the
control socket knows nothing of. ``register`` updates the instance (PUT) when
it is registered already. Exit codes as the other verbs: 0 ok, 1 no answer,
2 refused (the answer, with its field errors, is printed on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dyncast_bgp.ctl.apiclient import ApiClient, ApiClientError

API_VERBS = frozenset({"register", "deregister"})


def add_verbs(ctl: Any, verbs: Any) -> None:
    ctl.add_argument("--api", default=None, metavar="HOST:PORT",
                     help="the agent's registration API (register, deregister); default agent.api.listen of --config")
    verb = verbs.add_parser("register", help="agent: register (or update) an instance from a JSON or YAML file")
    verb.add_argument("file", metavar="FILE", help="a registration (docs/orchestrator.md)")
    verb.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    verb = verbs.add_parser("deregister", help="agent: drain a registered instance, then withdraw it (or at once)")
    verb.add_argument("name", metavar="NAME", help="service/instance, or an instance name that is unique")
    verb.add_argument("--immediate", action="store_true", help="withdraw now instead of draining first")
    verb.add_argument("--deadline", type=float, default=None, help="seconds to drain at most")
    verb.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")


def api_address(args: argparse.Namespace) -> str:
    if args.api is not None:
        return str(args.api)
    if args.config is None:
        raise ApiClientError("give --api HOST:PORT, or --config with agent.api.listen")
    from dyncast_bgp.config.loader import ConfigError, load  # noqa: PLC0415 - pydantic only when a config is read

    try:
        listen = load(args.config).agent.api.listen
    except ConfigError as exc:
        raise ApiClientError(str(exc)) from None
    if listen is None:
        raise ApiClientError(f"{args.config}: agent.api.listen is not set")
    return listen


def read_registration(path: str) -> Any:
    import yaml  # noqa: PLC0415 - only this verb reads YAML

    try:
        with open(path, encoding="utf-8") as file:
            return yaml.safe_load(file)  # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        raise ApiClientError(f"{path}: {exc}") from None


def call_api(client: ApiClient, args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if args.verb == "register":
        body = read_registration(args.file)
        status, answer = client.register(body)
        error = str(answer.get("error", ""))
        if status == 409 and isinstance(body, dict) and "exists, from a registration" in error:
            status, answer = client.update(str(body.get("service")), str(body.get("name")), body)
        return status, answer
    service, _, name = args.name.rpartition("/")
    if not service:
        matches = [i for i in client.instances() if i.get("instance") == name and i.get("origin") == "api"]
        if len(matches) != 1:
            found = ", ".join(f"{i['service']}/{i['instance']}" for i in matches) or "none"
            return 404, {"ok": False, "error": f"{name!r} names {len(matches)} registered instances ({found}); "
                         "give service/instance"}
        service = str(matches[0]["service"])
    return client.deregister(service, name, immediate=args.immediate, deadline=args.deadline)


def render_answer(status: int, answer: dict[str, Any]) -> str:
    if status >= 400:
        lines = [f"refused ({status}): {answer.get('error')}"]
        lines += [f"  {field.get('loc')}: {field.get('msg')}" for field in answer.get("fields", [])]
        return "\n".join(lines) + "\n"
    if "instance" in answer:
        view = answer["instance"]
        state = "deregistering" if "deregistering" in view else view.get("admin")
        return (f"{view['service']}/{view['instance']}  D-BID {view.get('dbid')}  D-SID {view.get('dsid')}  "
                f"{state}  published={'yes' if view.get('published') else 'no'}\n")
    return f"{answer.get('removed', '?')} withdrawn and removed\n"


def run(args: argparse.Namespace) -> int:
    try:
        status, answer = call_api(ApiClient(api_address(args), timeout=args.timeout), args)
    except ApiClientError as exc:
        print(f"dyncast ctl: {exc}", file=sys.stderr)
        return 1
    text = json.dumps(answer, indent=2) + "\n" if args.json else render_answer(status, answer)
    (sys.stdout if status < 400 else sys.stderr).write(text)
    return 0 if status < 400 else 2
