"""`dyncast config check FILE`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dyncast_bgp.config.loader import ConfigError, load


def register(subparsers: Any) -> None:
    config = subparsers.add_parser("config", help="work with configuration files")
    actions = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    check = actions.add_parser("check", help="validate a config file; report every error with its location")
    check.add_argument("file")
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    instances = sum(len(service.instances) for service in config.services)
    print(f"{args.file}: ok ({len(config.services)} services, {instances} instances, "
          f"{len(config.bgp.neighbors)} neighbors)")
    return 0
