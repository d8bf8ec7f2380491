"""`dyncast ctl`: talk to a running agent over its control socket.

    dyncast ctl [--socket PATH | --config FILE] instances | status | drain NAME | undrain NAME
                                                 | withdraw NAME | restore NAME   [--json]

NAME is ``service/instance``, or a bare instance name when it is unique.
Exit codes: 0 ok, 1 no answer (socket missing, agent not running), 2 the agent
refused the request (unknown or ambiguous instance, a verb that does not apply).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dyncast_bgp.ctl.client import DEFAULT_SOCKET, ClientError, call
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.ctl.render import render

NAMED_VERBS = {
    "drain": "announce with the draining flag: routers send it no new flows, existing flows continue",
    "undrain": "take new flows again (back to active, or canary if the config says canary)",
    "withdraw": "stop announcing the instance",
    "restore": "announce a withdrawn instance again (active, or canary if the config says canary)",
}


def register(subparsers: Any) -> None:
    ctl = subparsers.add_parser("ctl", help="control a running agent: list, drain, undrain, withdraw, restore")
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--socket", default=None, help=f"the agent's control socket (default {DEFAULT_SOCKET})")
    where.add_argument("--config", default=None, help="take the socket path from this agent config "
                       "(agent.control_socket)")
    ctl.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer")
    ctl.add_argument("--json", action="store_true", help="print the raw JSON answer")
    verbs = ctl.add_subparsers(dest="verb", metavar="VERB", required=True)
    for name, text in (("instances", "every instance: D-BID, admin state, health, published, metrics"),
                       ("status", "the agent's counters")):
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    for name, text in NAMED_VERBS.items():
        verb = verbs.add_parser(name, help=text)
        verb.add_argument("name", metavar="NAME", help="service/instance, or an instance name that is unique")
        verb.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    ctl.set_defaults(handler=_run)


def socket_path(args: argparse.Namespace) -> str:
    if args.config is None:
        return str(args.socket or DEFAULT_SOCKET)
    from dyncast_bgp.config.loader import ConfigError, load  # noqa: PLC0415 - pydantic only when a config is read

    try:
        path = load(args.config).agent.control_socket
    except ConfigError as exc:
        raise ClientError(str(exc)) from None
    if path is None:
        raise ClientError(f"{args.config}: agent.control_socket is not set")
    return path


def build_request(args: argparse.Namespace) -> Request:
    if args.verb in NAMED_VERBS:
        return Request(args.verb, {"instance": args.name})
    return Request(args.verb)


def _run(args: argparse.Namespace) -> int:
    try:
        answer = call(socket_path(args), build_request(args), timeout=args.timeout)
    except ClientError as exc:
        print(f"dyncast ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        text = render(args.verb, answer)
        (sys.stdout if answer.get("ok") else sys.stderr).write(text)
    return 0 if answer.get("ok") else 2
