"""`dyncast ctl`: talk to a running agent or router over its control socket.

    dyncast ctl [--socket PATH | --config FILE] instances | status | drain NAME | undrain NAME
                                                 | withdraw NAME | restore NAME   [--json]
    dyncast ctl [--socket PATH | --config FILE] [--router] show services | instances [--service S] | decisions
                                                 | status;  explain SERVICE;  flows [--service S]   [--json]

NAME is ``service/instance``, or a bare instance name when it is unique.
``show``, ``explain`` and ``flows`` are the router's verbs: they go to the
router's socket (default /run/dyncast/router.sock, or ``router.control_socket``
of ``--config``) unless ``--socket`` says otherwise; ``--router`` sends the
other verbs (``instances``, ``status``) to the router as well.
Exit codes: 0 ok, 1 no answer (socket missing, process not running), 2 the
request was refused (unknown or ambiguous instance or service, a verb that does not apply).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dyncast_bgp.ctl import register as api_verbs
from dyncast_bgp.ctl.client import DEFAULT_ROUTER_SOCKET, DEFAULT_SOCKET, ClientError, call
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.ctl.render import render

NAMED_VERBS = {
    "drain": "announce with the draining flag: routers send it no new flows, existing flows continue",
    "undrain": "take new flows again (back to active, or canary if the config says canary)",
    "withdraw": "stop announcing the instance",
    "restore": "announce a withdrawn instance again (active, or canary if the config says canary)",
}

SHOW = {
    "services": "per service: policy, fallback, status, instances and weights",
    "instances": "every instance: D-BID, path id, peer, state, metrics, path, eligibility, weight",
    "decisions": "each service's last decision change: weights, exclusions, status, when",
    "status": "the router's version, uptime, BGP sessions and counters",
}
ROUTER_VERBS = frozenset({"show", "explain", "flows"})  # CLI words that only the router answers


def register(subparsers: Any) -> None:
    ctl = subparsers.add_parser("ctl", help="control a running agent (list, drain, undrain, withdraw, restore) "
                                "or look into a router (show, explain, flows)")
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--socket", default=None, help=f"the control socket (default {DEFAULT_SOCKET}, or "
                       f"{DEFAULT_ROUTER_SOCKET} for the router's verbs and with --router)")
    where.add_argument("--config", default=None, help="take the socket path from this config "
                       "(agent.control_socket, or router.control_socket for the router's verbs and with --router)")
    ctl.add_argument("--router", action="store_true", help="talk to the router (default socket "
                     f"{DEFAULT_ROUTER_SOCKET}); implied by show, explain and flows")
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
    show = verbs.add_parser("show", help="router: services, instances, decisions or status")
    show.add_argument("what", choices=sorted(SHOW), metavar="WHAT", help="; ".join(f"{k}: {v}" for k, v in
                                                                                 SHOW.items()))
    show.add_argument("--service", default=None, help="instances: only this service (D-SID)")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    explain = verbs.add_parser("explain", help="router: why each instance of a service has its weight")
    explain.add_argument("service", metavar="SERVICE", help="the D-SID, e.g. 203.0.113.10/32")
    explain.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    flows = verbs.add_parser("flows", help="router: live flows per instance, from the dataplane")
    flows.add_argument("--service", default=None, help="only this service (D-SID)")
    flows.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    api_verbs.add_verbs(ctl, verbs)  # register, deregister: the agent's registration API (HTTP)
    ctl.set_defaults(handler=_run)


def for_router(args: argparse.Namespace) -> bool:
    return bool(args.router) or args.verb in ROUTER_VERBS


def socket_path(args: argparse.Namespace) -> str:
    role = "router" if for_router(args) else "agent"
    if args.config is None:
        return str(args.socket or (DEFAULT_ROUTER_SOCKET if role == "router" else DEFAULT_SOCKET))
    from dyncast_bgp.config.loader import ConfigError, load  # noqa: PLC0415 - pydantic only when a config is read

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise ClientError(str(exc)) from None
    path = config.router.control_socket if role == "router" else config.agent.control_socket
    if path is None:
        raise ClientError(f"{args.config}: {role}.control_socket is not set")
    return path


def build_request(args: argparse.Namespace) -> Request:
    if args.verb in NAMED_VERBS:
        return Request(args.verb, {"instance": args.name})
    if args.verb == "show":
        return Request(args.what, {"service": args.service} if args.service else {})
    if args.verb == "explain":
        return Request("explain", {"service": args.service})
    if args.verb == "flows":
        return Request("flows", {"service": args.service} if args.service else {})
    return Request(args.verb)


def _run(args: argparse.Namespace) -> int:
    if args.verb in api_verbs.API_VERBS:
        return api_verbs.run(args)
    try:
        request = build_request(args)
        answer = call(socket_path(args), request, timeout=args.timeout,
                      role="router" if for_router(args) else "agent")
    except ClientError as exc:
        print(f"dyncast ctl: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        text = render(request.verb, answer)
        (sys.stdout if answer.get("ok") else sys.stderr).write(text)
    return 0 if answer.get("ok") else 2
