"""`dyncast`: one entry point, one subcommand per area.

Each area keeps its own command code in ``<area>/commands.py`` exposing
``register(subparsers)``; the function it sets as ``handler`` receives the parsed
arguments and returns the process exit code (0 ok, 1 runtime failure, 2 bad input).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dyncast_bgp import __version__

AREAS = (
    "dyncast_bgp.config.commands",
    "dyncast_bgp.wire.commands",
    "dyncast_bgp.agent.commands",
    "dyncast_bgp.exabgp.commands",
    "dyncast_bgp.lab.commands",
    "dyncast_bgp.router.commands",
    "dyncast_bgp.probe.commands",
    "dyncast_bgp.dataplane.commands",
    "dyncast_bgp.ctl.commands",
    "dyncast_bgp.obs.commands",
    "dyncast_bgp.sim.commands",
)
# The subcommands each area registers: with one of these first on the command line only that area
# is imported, so `dyncast ctl ...` starts without loading pydantic schemas, matplotlib and the rest.
COMMANDS = {
    "config": "dyncast_bgp.config.commands", "wire": "dyncast_bgp.wire.commands",
    "agent": "dyncast_bgp.agent.commands", "exabgp-conf": "dyncast_bgp.exabgp.commands",
    "exabgp-run": "dyncast_bgp.exabgp.commands", "lab": "dyncast_bgp.lab.commands",
    "router": "dyncast_bgp.router.commands", "probe": "dyncast_bgp.probe.commands",
    "echo": "dyncast_bgp.probe.commands", "dataplane": "dyncast_bgp.dataplane.commands",
    "ctl": "dyncast_bgp.ctl.commands", "audit": "dyncast_bgp.obs.commands", "simulate": "dyncast_bgp.sim.commands",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``: a module of AREAS) one with just that area's subcommands."""
    parser = argparse.ArgumentParser(
        prog="dyncast", description="Dynamic Anycast (Dyncast / IETF CATS) over BGP: the metric agent, the ingress "
        "router, and tools to check configs, decode communities, probe paths and run labs.")
    parser.add_argument("--version", action="version", version=f"dyncast-bgp {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in AREAS if only is None else (only,):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            raise SystemExit(f"dyncast: cannot load {module_name}: {exc}") from exc
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(COMMANDS.get(words[0]) if words else None)
    args = parser.parse_args(words)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
