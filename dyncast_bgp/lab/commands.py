"""`dyncast lab ...`: labs in network namespaces (root)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from dyncast_bgp.config.loader import ConfigError
from dyncast_bgp.lab.agent_demo import run_demo as run_agent_demo
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.service_cli import add_commands as add_service_commands
from dyncast_bgp.lab.topology_cli import add_commands as add_topology_commands
from dyncast_bgp.obs.log import configure

DEFAULT_TOPOLOGY = "labs/three-site/three-site.clab.yml"


def register(subparsers: Any) -> None:
    lab = subparsers.add_parser("lab", help="run labs in network namespaces (needs root)")
    actions = lab.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    demo = actions.add_parser("agent-demo", help="the agent announcing to ExaBGP, FRR, BIRD and GoBGP, step by step")
    demo.set_defaults(handler=_agent_demo)
    story = actions.add_parser("demo", help="three-site lab, client load, the scripted story; writes a report")
    story.add_argument("--topology", default=None, help=f"containerlab file (default: {DEFAULT_TOPOLOGY})")
    story.add_argument("--out", default=None, help="report directory (default: reports/demo-<time> here)")
    story.add_argument("--scale", type=float, default=1.0, help="stretch (>1) or shrink (<1) every phase")
    story.add_argument("--rate", type=float, default=6.0, help="new sessions per second per client site")
    story.add_argument("--no-live", action="store_true", help="print events instead of the live view")
    story.set_defaults(handler=_demo)
    add_service_commands(actions)
    add_topology_commands(actions)


def default_topology() -> Path:
    """labs/three-site from the working directory, else from the source tree this package runs from."""
    here = Path(DEFAULT_TOPOLOGY)
    if here.exists():
        return here
    return Path(__file__).resolve().parents[2] / DEFAULT_TOPOLOGY


def _demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("dyncast lab demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    if not 0.1 <= args.scale <= 10 or not 0.5 <= args.rate <= 200:
        print("dyncast lab demo: --scale must be in 0.1..10 and --rate in 0.5..200", file=sys.stderr)
        return 2
    configure("warning", fmt="console")
    from dyncast_bgp.lab.demo.run import DemoOptions, run_demo  # noqa: PLC0415 - matplotlib and rich: only here
    topology = Path(args.topology) if args.topology else default_topology()
    # absolute: the load generators run in their nodes' directories and write their events here
    out = (Path(args.out) if args.out else Path("reports") / time.strftime("demo-%Y%m%d-%H%M%S")).absolute()
    options = DemoOptions(topology=topology, out_dir=out, scale=args.scale, rate=args.rate, live=not args.no_live)
    try:
        return run_demo(options)
    except (LabError, ConfigError) as exc:
        print(f"dyncast lab demo: {exc}", file=sys.stderr)
        return 1


def _agent_demo(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("dyncast lab agent-demo: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    configure("warning", fmt="console")
    return run_agent_demo(sys.stdout)
