"""`dyncast ctl`: talk to a running agent or router over its control socket.

    dyncast ctl [--socket PATH | --config FILE] instances | status | undrain NAME
                                                 | drain NAME [--hard] [--deadline 10m] [--lead-time 30s]
                                                 | withdraw NAME | restore NAME   [--json]
    dyncast ctl [--socket PATH | --config FILE] [--router] show services | instances [--service S] | decisions
                                                 | status;  explain SERVICE;  flows [--service S]   [--json]
    dyncast ctl [--socket PATH | --config FILE] rollout status [SERVICE] | start PLAN | pause|resume|commit|clear
                                                 SERVICE | abort SERVICE [--hard]

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
import math
import os
import sys
from typing import Any

from dyncast_bgp.ctl import register as api_verbs
from dyncast_bgp.ctl.client import DEFAULT_ROUTER_SOCKET, DEFAULT_SOCKET, ClientError, call
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.ctl.render import render
from dyncast_bgp.ops.durations import parse_duration

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
ROUTER_VERBS = frozenset({"show", "explain", "flows", "rollout"})  # CLI words that only the router answers


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
        if name == "drain":
            _drain_options(verb)
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
    rollout = verbs.add_parser("rollout", help="router: canary rollouts (status, start PLAN, pause, resume, "
                               "abort [--hard], commit, clear)")
    rollout.add_argument("action", choices=ROLLOUT_ACTIONS, metavar="ACTION", help=", ".join(ROLLOUT_ACTIONS))
    rollout.add_argument("target", nargs="?", default=None, metavar="SERVICE|PLAN",
                         help="start: the plan file (YAML/JSON, checked here, read by the router); status: "
                         "optionally one service; the others: the service (D-SID)")
    rollout.add_argument("--hard", action="store_true", help="abort: also evict the flows already on the new version")
    rollout.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the raw JSON answer")
    api_verbs.add_verbs(ctl, verbs)  # register, deregister: the agent's registration API (HTTP)
    ctl.set_defaults(handler=_run)


def _duration(text: str) -> int:
    try:
        return math.ceil(parse_duration(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _drain_options(verb: Any) -> None:
    verb.add_argument("--hard", action="store_true", help="drained at once: routers evict its flows, which take a "
                      "new pick (default: soft, existing flows run on until they end or the deadline)")
    verb.add_argument("--deadline", type=_duration, default=None, metavar="DURATION",
                      help="drained after this long whatever its sessions (e.g. 10m; default: the service's "
                      "drain.deadline)")
    verb.add_argument("--lead-time", type=_duration, default=None, metavar="DURATION",
                      help="announce draining only after this long (e.g. 30s; default: the service's "
                      "drain.lead_time)")


def _drain_args(args: argparse.Namespace) -> dict[str, str | int | bool]:
    extra: dict[str, str | int | bool] = {}
    if getattr(args, "hard", False):
        extra["hard"] = True
    if getattr(args, "deadline", None) is not None:
        extra["deadline"] = max(1, args.deadline)
    if getattr(args, "lead_time", None) is not None:
        extra["lead_time"] = args.lead_time
    return extra


ROLLOUT_ACTIONS = ("status", "start", "pause", "resume", "abort", "commit", "clear")


def _rollout_request(args: argparse.Namespace) -> Request:
    if args.action == "start":
        if args.target is None:
            raise ClientError("rollout start needs the plan file")
        from dyncast_bgp.ops.rolloutplan import PlanError, load_plan  # noqa: PLC0415 - pydantic only when needed

        try:
            load_plan(args.target)  # every problem shown here, before the router sees it
        except PlanError as exc:
            raise ClientError(str(exc)) from None
        return Request("rollout", {"action": "start", "plan": os.path.abspath(args.target)})
    fields: dict[str, str | int | bool] = {"action": args.action}
    if args.target is not None:
        fields["service"] = args.target
    elif args.action != "status":
        raise ClientError(f"rollout {args.action} needs the service")
    if args.hard:
        if args.action != "abort":
            raise ClientError("--hard goes with abort only")
        fields["hard"] = True
    return Request("rollout", fields)


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
        return Request(args.verb, {"instance": args.name, **(_drain_args(args) if args.verb == "drain" else {})})
    if args.verb == "show":
        return Request(args.what, {"service": args.service} if args.service else {})
    if args.verb == "explain":
        return Request("explain", {"service": args.service})
    if args.verb == "flows":
        return Request("flows", {"service": args.service} if args.service else {})
    if args.verb == "rollout":
        return _rollout_request(args)
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
