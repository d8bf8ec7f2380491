"""`dyncast exabgp-conf --role agent|router --config FILE`."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from dyncast_bgp.config.loader import ConfigError, load
from dyncast_bgp.exabgp.render import render


def register(subparsers: Any) -> None:
    conf = subparsers.add_parser("exabgp-conf", help="render the ExaBGP configuration for a role")
    conf.add_argument("--role", choices=("agent", "router"), required=True)
    conf.add_argument("--config", required=True, help="the dyncast YAML config")
    conf.add_argument("--dyncast", default=None,
                      help="path of the dyncast executable ExaBGP runs (default: the one running now)")
    conf.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    conf.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    executable = args.dyncast or shutil.which("dyncast") or str(Path(sys.argv[0]).resolve())
    try:
        text = render(config, role=args.role, command=[executable], config_path=str(Path(args.config).resolve()))
    except ValueError as exc:
        print(f"dyncast exabgp-conf: {exc}", file=sys.stderr)
        return 2
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text, encoding="utf-8")
    return 0
