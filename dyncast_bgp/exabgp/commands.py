"""`dyncast exabgp-conf` (render ExaBGP's configuration) and `dyncast exabgp-run` (render, then run ExaBGP)."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

from dyncast_bgp.config.loader import ConfigError, load
from dyncast_bgp.exabgp.render import render
from dyncast_bgp.exabgp.run import default_workdir, exec_exabgp, has_secret, write_config, write_rendered


def register(subparsers: Any) -> None:
    conf = subparsers.add_parser("exabgp-conf", help="render the ExaBGP configuration for a role")
    conf.add_argument("--role", choices=("agent", "router"), required=True)
    conf.add_argument("--config", required=True, help="the dyncast YAML config")
    conf.add_argument("--dyncast", default=None,
                      help="path of the dyncast executable ExaBGP runs (default: the one running now)")
    conf.add_argument("--output", "-o", default="-", help="file to write (default: stdout)")
    conf.set_defaults(handler=_run)

    runner = subparsers.add_parser(
        "exabgp-run", help="render ExaBGP's configuration for a role into a work directory and exec ExaBGP on it")
    runner.add_argument("--role", choices=("agent", "router"), required=True)
    runner.add_argument("--config", required=True, help="the dyncast YAML config")
    runner.add_argument("--workdir", default=None,
                        help="where the rendered file goes (default: per config, under the temp dir)")
    runner.set_defaults(handler=_exec)


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
        return 0
    try:
        write_rendered(Path(args.output), text, secret=has_secret(config))  # 0600 when it holds a password
    except OSError as exc:
        print(f"dyncast exabgp-conf: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


def _exec(args: argparse.Namespace) -> int:
    config_path = Path(args.config)
    try:
        config = load(config_path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    workdir = Path(args.workdir) if args.workdir else default_workdir(config_path, args.role)
    try:
        conf = write_config(config, role=args.role, config_path=config_path, workdir=workdir)
        exec_exabgp(conf)
    except (OSError, ValueError) as exc:
        print(f"dyncast exabgp-run: {exc}", file=sys.stderr)
        return 2
    return 0  # not reached: exec replaced the process
