"""`dyncast lab ...`: labs in network namespaces (root)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from dyncast_bgp.lab.agent_demo import run_demo
from dyncast_bgp.lab.service_cli import add_commands as add_service_commands
from dyncast_bgp.obs.log import configure


def register(subparsers: Any) -> None:
    lab = subparsers.add_parser("lab", help="run labs in network namespaces (needs root)")
    actions = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    demo = actions.add_parser("agent-demo", help="the agent announcing to ExaBGP, FRR, BIRD and GoBGP, step by step")
    demo.set_defaults(handler=_agent_demo)
    add_service_commands(actions)


def _agent_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("dyncast lab agent-demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    configure("warning", fmt="console")
    return run_demo(sys.stdout)
