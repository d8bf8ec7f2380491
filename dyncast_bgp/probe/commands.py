"""`dyncast probe TARGET...` and `dyncast echo --listen ADDR`: the probe pair as standalone tools.

``probe`` measures paths like the router does and prints JSON lines on stdout
(logs go to stderr), each with a ``"probe"`` key: ``"started"``, ``"change"``
whenever a target's metrics change materially, ``"snapshot"`` every
``--report`` seconds, and ``"counters"`` at the end (``--duration`` or
SIGTERM/SIGINT). ``echo`` runs the agent's echo responder alone and prints its
counters at the end. Both read their settings from ``--config``
(``router.probes`` / ``agent.echo``) with command-line options on top. Used by
the namespace tests and the benchmark; handy for checking a path by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import uvloop

from dyncast_bgp.agent.echo import EchoError, serve_echo
from dyncast_bgp.config.loader import ConfigError, load
from dyncast_bgp.config.schema import Config, EchoResponder, Probes
from dyncast_bgp.model import IPAddress, PathMetrics
from dyncast_bgp.obs.log import configure
from dyncast_bgp.probe.prober import Prober
from dyncast_bgp.probe.ratelimit import RateLimits
from dyncast_bgp.probe.schedule import TargetStatus
from dyncast_bgp.probe.sockets import ProbeSetupError
from dyncast_bgp.probe.static import throughput_from_static

_DEFAULT_LIMITS = RateLimits()


def register(subparsers: Any) -> None:
    probe = subparsers.add_parser("probe", help="measure paths to targets (UDP echo or ICMP), JSON lines")
    probe.add_argument("targets", nargs="+", type=ipaddress.ip_address, metavar="TARGET")
    probe.add_argument("--config", help="YAML config: router.probes and router.static_paths")
    probe.add_argument("--method", choices=("udp", "icmp"))
    probe.add_argument("--port", type=int)
    probe.add_argument("--interval", type=float)
    probe.add_argument("--timeout", type=float)
    probe.add_argument("--window", type=int)
    probe.add_argument("--unreachable-after", type=int)
    probe.add_argument("--icmp-socket", choices=("auto", "dgram", "raw"), default="auto")
    probe.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    probe.add_argument("--report", type=float, default=0.0, help="print a snapshot every N seconds (0: never)")
    probe.add_argument("--samples", action="store_true",
                       help="snapshots also list each target's window: RTTs in us, oldest first, null for a loss")
    probe.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning")
    probe.set_defaults(handler=_run_probe)

    echo = subparsers.add_parser("echo", help="run the agent's UDP echo responder alone")
    echo.add_argument("--config", help="YAML config: agent.echo")
    echo.add_argument("--listen", action="append", type=ipaddress.ip_address, default=[], metavar="ADDRESS")
    echo.add_argument("--port", type=int)
    echo.add_argument("--rate-per-source", type=float, default=_DEFAULT_LIMITS.per_source_rate)
    echo.add_argument("--burst-per-source", type=float, default=_DEFAULT_LIMITS.per_source_burst)
    echo.add_argument("--rate-total", type=float, default=_DEFAULT_LIMITS.total_rate)
    echo.add_argument("--burst-total", type=float, default=_DEFAULT_LIMITS.total_burst)
    echo.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    echo.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="warning")
    echo.set_defaults(handler=_run_echo)


def metrics_json(metrics: PathMetrics) -> dict[str, Any]:
    return dataclasses.asdict(metrics)


def status_json(status: TargetStatus | None) -> dict[str, Any] | None:
    """A target's counters and timestamps (``time.monotonic`` seconds), without its metrics."""
    if status is None:
        return None
    return {"sent": status.sent, "replies": status.replies, "lost": status.lost, "late": status.late,
            "consecutive_losses": status.consecutive_losses, "last_reply_at": status.last_reply_at,
            "streak_started_at": status.streak_started_at}


def window_samples_us(prober: Prober, address: IPAddress) -> list[float | None]:
    """The outcomes in ``address``'s window, oldest first: RTT in us, or None for a loss."""
    window = prober.schedule.window(address)
    return [] if window is None else [None if rtt is None else rtt / 1000.0 for rtt in window.samples()]


def _emit(out: TextIO, record: Mapping[str, Any]) -> None:
    out.write(json.dumps(record, separators=(",", ":")) + "\n")
    out.flush()


def _load(path: str | None) -> Config | None:
    return None if path is None else load(path)


def probe_settings(args: argparse.Namespace, config: Config | None) -> Probes:
    """``router.probes`` (or the defaults) with the command-line options on top."""
    base = config.router.probes if config is not None else Probes()
    given = {name: getattr(args, name) for name in ("method", "port", "interval", "timeout", "window",
                                                    "unreachable_after") if getattr(args, name) is not None}
    return Probes.model_validate({**base.model_dump(), **given})


def _stop_event(duration: float | None) -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    return stop


async def _probe_main(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args.config)
    settings = probe_settings(args, config)
    throughput = throughput_from_static(config.router.static_paths) if config is not None else {}

    def changed(address: IPAddress, metrics: PathMetrics) -> None:
        _emit(out, {"probe": "change", "time": time.monotonic(), "target": str(address),
                    "metrics": metrics_json(metrics), "status": status_json(prober.status(address))})

    stop = _stop_event(args.duration)
    prober = Prober(settings, on_change=changed, throughput=throughput, icmp_socket=args.icmp_socket)
    async with prober:
        prober.open_sockets({address.version for address in args.targets})  # fail fast: ProbeSetupError
        prober.set_targets(args.targets)
        _emit(out, {"probe": "started", "time": time.monotonic(), "sockets": prober.socket_kinds,
                    "settings": settings.model_dump()})
        while not stop.is_set():
            if args.report > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=args.report)
                record = {"probe": "snapshot", "time": time.monotonic(),
                          "targets": {str(a): metrics_json(m) for a, m in prober.snapshot().items()},
                          "status": {str(a): status_json(prober.status(a)) for a in prober.targets}}
                if args.samples:
                    record["samples"] = {str(a): window_samples_us(prober, a) for a in prober.targets}
                _emit(out, record)
            else:
                await stop.wait()
        counters = dataclasses.asdict(prober.counters)
    _emit(out, {"probe": "counters", "time": time.monotonic(), "counters": counters})
    return 0


def _run_probe(args: argparse.Namespace) -> int:
    configure(args.log_level, fmt="json")
    try:
        return uvloop.run(_probe_main(args, sys.stdout))
    except (ConfigError, ProbeSetupError, ValueError) as exc:
        print(f"dyncast probe: {exc}", file=sys.stderr)
        return 2


async def _echo_main(args: argparse.Namespace, out: TextIO) -> int:
    config = _load(args.config)
    base = config.agent.echo if config is not None else None
    listen = tuple(args.listen) or (base.listen if base is not None else ())
    if not listen:
        raise ValueError("no listen address: give --listen or a config with agent.echo")
    port = args.port or (base.port if base is not None else EchoResponder(listen=listen).port)
    limits = RateLimits(per_source_rate=args.rate_per_source, per_source_burst=args.burst_per_source,
                        total_rate=args.rate_total, total_burst=args.burst_total)
    stop = _stop_event(args.duration)
    async with await serve_echo(EchoResponder(listen=listen, port=port), limits=limits) as server:
        _emit(out, {"echo": "listening", "addresses": len(server.addresses), "port": port})
        await stop.wait()
    _emit(out, {"echo": "counters", "counters": dataclasses.asdict(server.counters)})
    return 0


def _run_echo(args: argparse.Namespace) -> int:
    configure(args.log_level, fmt="json")
    try:
        return uvloop.run(_echo_main(args, sys.stdout))
    except (ConfigError, EchoError, ValueError) as exc:
        print(f"dyncast echo: {exc}", file=sys.stderr)
        return 2
