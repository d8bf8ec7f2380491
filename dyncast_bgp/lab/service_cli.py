"""`dyncast lab service`, `load` and `udp-flow`: a lab service instance and the client load generators.

``add_commands(actions)`` adds both to the ``lab`` subparsers; like every
command here each sets ``handler``, which takes the parsed arguments and
returns the exit code (0 ok, 1 runtime failure, 2 bad input).
"""

from __future__ import annotations

import argparse
from typing import Any

from dyncast_bgp.lab.loadgen import run_load
from dyncast_bgp.lab.service import DISTRIBUTIONS, run_service
from dyncast_bgp.lab.udpflow import add_command as add_udp_flow
from dyncast_bgp.obs.log import configure


def add_commands(lab_subparsers: Any) -> None:
    """Add ``service``, ``load`` and ``udp-flow`` to the ``lab`` subparsers object."""
    _add_service(lab_subparsers)
    _add_load(lab_subparsers)
    add_udp_flow(lab_subparsers)


def _add_service(actions: Any) -> None:
    service = actions.add_parser(
        "service", help="run one HTTP service instance whose response time grows with load",
        description="Serve GET / (JSON naming the instance), /metrics, /health and POST /admin/fail, "
        "/admin/recover, /admin/load?busy=N until SIGTERM or SIGINT.")
    service.add_argument("--name", required=True, help="instance name, sent back in X-Instance")
    service.add_argument("--listen", default="127.0.0.1", metavar="HOST", help="address to bind (default 127.0.0.1)")
    service.add_argument("--port", type=int, default=8080, help="TCP port (default 8080; 0 picks a free one)")
    service.add_argument("--capacity", type=int, default=4, help="workers serving at once (default 4)")
    service.add_argument("--service-ms", type=float, default=50.0, help="mean service time in ms (default 50)")
    service.add_argument("--distribution", choices=DISTRIBUTIONS, default="fixed",
                         help="service time distribution (default fixed)")
    service.add_argument("--seed", type=int, default=None, help="seed for exponential service times")
    service.add_argument("--echo", action="append", default=[], metavar="ADDR",
                         help="also answer the routers' UDP path probes on ADDR (repeatable)")
    service.add_argument("--echo-port", type=int, default=9950, help="UDP port of the probe echo (default 9950)")
    service.add_argument("--udp", action="append", default=[], metavar="ADDR",
                         help="also answer UDP requests sent to ADDR, e.g. the D-SID (repeatable; see lab udp-flow)")
    service.add_argument("--udp-port", type=int, default=None, help="UDP port of --udp (default: --port)")
    service.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    service.set_defaults(handler=_service)


def _add_load(actions: Any) -> None:
    load = actions.add_parser(
        "load", help="open sessions to a service at a Poisson rate and record every request as a JSON line",
        description="Each session is one TCP connection doing --requests-per-session requests over keep-alive. "
        "Events are flushed line by line; a final {\"summary\": ...} line is written on exit (SIGTERM/SIGINT too).")
    load.add_argument("--target", required=True, metavar="HOST:PORT", help="service address, e.g. 203.0.113.10:8080")
    load.add_argument("--rate", type=float, default=10.0, help="new sessions per second (default 10)")
    load.add_argument("--requests-per-session", type=int, default=10, metavar="K", help="requests per session (10)")
    load.add_argument("--think-ms", type=float, default=100.0, help="pause between requests of a session (100)")
    load.add_argument("--duration", type=float, default=0.0, help="seconds to open sessions; 0 = until signalled")
    load.add_argument("--out", required=True, metavar="FILE", help="events file (JSON lines); - for stdout")
    load.add_argument("--seed", type=int, default=None, help="seed for the arrival process")
    load.add_argument("--timeout", type=float, default=5.0, help="connect and request timeout in seconds (5)")
    load.add_argument("--client", default="", help="client name stored in every event (to merge several files)")
    load.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    load.set_defaults(handler=_load)


def _service(args: argparse.Namespace) -> int:
    configure(args.log_level)
    return run_service(args)


def _load(args: argparse.Namespace) -> int:
    configure(args.log_level)
    return run_load(args)
