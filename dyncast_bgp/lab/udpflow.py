"""`dyncast lab udp-flow`: one UDP flow to a service, and who answered each of its datagrams.

The client sends numbered requests from ONE socket (one 5-tuple, so one
conntrack entry and one pick at the ingress router) to the lab service's UDP
side (:mod:`dyncast_bgp.lab.udpservice`) every ``interval`` seconds and waits
up to ``timeout`` for each answer. Every datagram becomes one JSON line,
flushed at once (a test may tail the file)::

    {"start": {"local": "10.100.0.2:40312", "target": "203.0.113.10:8080"}}
    {"seq": 1, "t": 1763700000.12, "instance": "vnf-a", "rtt_ms": 0.41}
    {"seq": 2, "t": 1763700000.17, "instance": null, "error": "timeout"}
    {"summary": {...}}                       (see :func:`summarise`)

It is what shows a flow moving: with ``shift_on_failure`` the flow's
datagrams are answered by another instance once its own has failed; without
it they go unanswered. :func:`summarise` and :func:`read_flow` are pure.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import structlog

from dyncast_bgp.lab.udpservice import REQUEST_SIZE

log = structlog.get_logger("dyncast.lab.udpflow")


class FlowFileError(ValueError):
    """A line of a flow file is not what udp-flow writes; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Datagram:
    """One request: ``t`` the wall time it was sent; ``instance`` who answered, None with ``error`` when none."""

    seq: int
    t: float
    instance: str | None
    rtt_ms: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class FlowSummary:
    sent: int
    answered: int
    instances: tuple[str, ...]
    """Who answered, in the order they first did."""
    moves: int
    """Times the answering instance changed between two answered datagrams."""
    longest_silence: int
    """Most consecutive unanswered datagrams."""


def summarise(datagrams: Iterable[Datagram]) -> FlowSummary:
    sent = answered = moves = silence = longest = 0
    seen: list[str] = []
    last: str | None = None
    for datagram in datagrams:
        sent += 1
        if datagram.instance is None:
            silence += 1
            longest = max(longest, silence)
            continue
        silence = 0
        answered += 1
        if last is not None and datagram.instance != last:
            moves += 1
        if datagram.instance not in seen:
            seen.append(datagram.instance)
        last = datagram.instance
    return FlowSummary(sent, answered, tuple(seen), moves, longest)


def read_flow(lines: Iterable[str], *, origin: str = "<flow>") -> tuple[dict[str, Any], list[Datagram]]:
    """The start line's fields and the datagrams of a flow file (a partial last line is ignored: still writing)."""
    start: dict[str, Any] = {}
    datagrams: list[Datagram] = []
    for number, line in enumerate(lines, 1):
        if not line.endswith("\n"):
            break
        try:
            item = json.loads(line)
            if "start" in item:
                start = dict(item["start"])
            elif "seq" in item:
                datagrams.append(Datagram(int(item["seq"]), float(item["t"]), item.get("instance"),
                                          item.get("rtt_ms"), item.get("error")))
            elif "summary" not in item:
                raise KeyError("seq")
        except (ValueError, KeyError, TypeError) as exc:
            raise FlowFileError(f"{origin}:{number}: not a udp-flow line ({exc}): {line[:120]!r}") from None
    return start, datagrams


def _target(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--target {text!r}: expected HOST:PORT, e.g. 203.0.113.10:8080")
    return host, int(port)


def _ask(sock: socket.socket, seq: int, timeout: float) -> Datagram:
    sent = time.time()
    started = time.monotonic()
    deadline = started + timeout
    try:
        sock.send(f"{seq} ".encode().ljust(REQUEST_SIZE, b"."))  # padded: the answer may not be larger
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            answer = json.loads(sock.recv(2048))
            if isinstance(answer, dict) and answer.get("request") == str(seq):  # late answers to earlier ones: skip
                return Datagram(seq, sent, str(answer.get("instance")),
                                round((time.monotonic() - started) * 1000.0, 3))
    except TimeoutError:
        pass
    except ConnectionRefusedError:  # ICMP port unreachable for this or an earlier datagram
        return Datagram(seq, sent, None, error="refused")
    except (OSError, ValueError) as exc:
        return Datagram(seq, sent, None, error=type(exc).__name__)
    return Datagram(seq, sent, None, error="timeout")


def run_flow(target: tuple[str, int], out: TextIO, *, interval: float, timeout: float, duration: float,
             count: int, stop: Callable[[], bool] = lambda: False) -> FlowSummary:
    """Send until ``duration`` seconds (0: no limit) or ``count`` datagrams (0: no limit) or ``stop()``."""
    family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET
    datagrams: list[Datagram] = []
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.connect(target)
        local = sock.getsockname()
        _write(out, {"start": {"local": f"{local[0]}:{local[1]}", "target": f"{target[0]}:{target[1]}"}})
        began = time.monotonic()
        seq = 0
        while not stop() and (not duration or time.monotonic() - began < duration) and (not count or seq < count):
            seq += 1
            datagram = _ask(sock, seq, timeout)
            datagrams.append(datagram)
            _write(out, {key: value for key, value in asdict(datagram).items()
                         if value is not None or key == "instance"})
            pause = began + seq * interval - time.monotonic()
            if pause > 0 and not stop():
                time.sleep(pause)
    summary = summarise(datagrams)
    _write(out, {"summary": asdict(summary)})
    return summary


def _write(out: TextIO, item: dict[str, Any]) -> None:
    out.write(json.dumps(item, separators=(",", ":")) + "\n")
    out.flush()


def add_command(lab_subparsers: Any) -> None:
    flow = lab_subparsers.add_parser(
        "udp-flow", help="send one UDP flow to a lab service's --udp side and record who answers each datagram",
        description="One socket (one 5-tuple) sends numbered requests every --interval seconds; every datagram "
        "is written as a JSON line (who answered, or the error); a {\"summary\": ...} line ends the file.")
    flow.add_argument("--target", required=True, metavar="HOST:PORT", help="service address, e.g. 203.0.113.10:8080")
    flow.add_argument("--interval", type=float, default=0.05, help="seconds between requests (default 0.05)")
    flow.add_argument("--timeout", type=float, default=0.25, help="seconds to wait for each answer (default 0.25)")
    flow.add_argument("--duration", type=float, default=0.0, help="seconds to run; 0 = until signalled")
    flow.add_argument("--count", type=int, default=0, help="datagrams to send; 0 = no limit")
    flow.add_argument("--out", default="-", metavar="FILE", help="events file (JSON lines); - for stdout (default)")
    flow.set_defaults(handler=_flow)


def _flow(args: argparse.Namespace) -> int:
    problems = [f"--{name} {value}: must be > 0" for name, value in
                (("interval", args.interval), ("timeout", args.timeout)) if not value > 0]
    problems += [f"--{name} {value}: must be >= 0" for name, value in
                 (("duration", args.duration), ("count", args.count)) if value < 0]
    try:
        target = _target(args.target)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"dyncast lab udp-flow: {problem}", file=sys.stderr)
        return 2
    signalled: list[int] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: signalled.append(number))
    try:
        if args.out == "-":
            summary = run_flow(target, sys.stdout, interval=args.interval, timeout=args.timeout,
                               duration=args.duration, count=args.count, stop=lambda: bool(signalled))
        else:
            with open(args.out, "w", encoding="utf-8") as out:
                summary = run_flow(target, out, interval=args.interval, timeout=args.timeout,
                                   duration=args.duration, count=args.count, stop=lambda: bool(signalled))
    except OSError as exc:
        print(f"dyncast lab udp-flow: {args.target}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0 if summary.answered else 1


def datagrams_after(datagrams: Sequence[Datagram], t: float) -> list[Datagram]:
    """The datagrams sent at or after wall time ``t``."""
    return [datagram for datagram in datagrams if datagram.t >= t]
