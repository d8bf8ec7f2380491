"""`dyncast router`: the ingress D-Router as an ExaBGP process, or an offline replay.

    dyncast router --config FILE                      # live, under ExaBGP (JSON encoder)
    dyncast router [--config FILE] --replay FILE --print-decisions
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import sys
from pathlib import Path
from typing import Any

import structlog
import uvloop

from dyncast_bgp.agent.commands import stdin_lines
from dyncast_bgp.config.loader import ConfigError, load
from dyncast_bgp.config.schema import Config, RouterConfig
from dyncast_bgp.dataplane.desired import Dataplane
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.obs.log import configure
from dyncast_bgp.router.replay import replay
from dyncast_bgp.router.runtime import RouterRuntime

log = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    router = subparsers.add_parser("router", help="run the ingress decision engine as an ExaBGP process")
    router.add_argument("--config", help="YAML config file (optional with --replay: defaults apply)")
    router.add_argument("--replay", metavar="EXABGP_OUTPUT", help="read recorded ExaBGP JSON lines instead of stdin")
    router.add_argument("--print-decisions", action="store_true", help="with --replay: one JSON line per change")
    router.add_argument("--no-probes", action="store_true", help="do not probe paths (static paths only)")
    router.add_argument("--no-dataplane", action="store_true", help="decide only; do not program the kernel")
    router.add_argument("--log-format", choices=("json", "console"), default="json")
    router.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    configure("warning" if args.replay else "info", fmt=args.log_format)
    config: Config | None = None
    if args.config:
        try:
            config = load(args.config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return 2
    if args.replay:
        return _replay(args, config.router if config else RouterConfig(), config)
    if config is None:
        print("dyncast router: --config is required (except with --replay)", file=sys.stderr)
        return 2
    configure(config.router.log_level, fmt=args.log_format)
    dataplane = None if args.no_dataplane else _linux_dataplane()
    return uvloop.run(_live(config, dataplane, probes=not args.no_probes))


def _replay(args: argparse.Namespace, router: RouterConfig, config: Config | None) -> int:
    try:
        text = Path(args.replay).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"dyncast router: cannot read {args.replay}: {exc}", file=sys.stderr)
        return 2
    sink = sys.stdout if args.print_decisions else io.StringIO()
    try:
        stale = router.stale_time(config.bgp.graceful_restart if config else None)
        report = replay(text.splitlines(), router, sink, stale_time=stale)
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    for problem in report.problems[:20]:
        print(f"dyncast router: skipped {problem}", file=sys.stderr)
    print(f"dyncast router: replayed {report.lines} lines, {report.rejected} skipped, "
          f"{report.decisions} decisions", file=sys.stderr)
    return 0


def _to_exabgp(command: str) -> None:
    """One API command to ExaBGP (our stdout is its command channel); a closed pipe is ExaBGP gone."""
    try:
        sys.stdout.write(command + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass


def _linux_dataplane() -> Dataplane:
    return LinuxDataplane()


async def _live(config: Config, dataplane: Dataplane | None, *, probes: bool) -> int:
    runtime = RouterRuntime(config, lines=stdin_lines(), dataplane=dataplane, probes=probes, commands=_to_exabgp)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, runtime.stopping.set)
    await runtime.run()
    return 0
