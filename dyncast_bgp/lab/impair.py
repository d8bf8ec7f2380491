"""Link impairment in userspace, for kernels without ``sch_netem``: an L2 forwarder that delays and drops frames.

The forwarder sits in its own namespace between the two veth pairs of a link
(``node-a:ethX -- a [forwarder] b -- node-b:ethY``) and moves every frame
from one port to the other with AF_PACKET sockets. Each direction has its own
:class:`Impairment` (delay, uniform jitter of +-``jitter_ms``, random loss),
like netem on the egress of the node the direction starts at: a frame gets a
due time and waits in a heap; jitter may reorder frames, as netem's does.
Frames with no impairment in a direction with nothing queued are sent at once.

Frames sent by a local socket over veth carry only a partial checksum (the
offload is never completed by a packet socket): frames that PACKET_AUXDATA
marks ``TP_STATUS_CSUMNOTREADY`` get their TCP/UDP checksum computed here.
:func:`disable_offload` (``python -m dyncast_bgp.lab.impair offload IF``)
turns off checksum and segmentation offload on the node's side instead, so
that TCP segments larger than the MTU never reach the forwarder.

Runtime control: a unix datagram socket (a filesystem path, so it works
across namespaces) takes JSON requests: ``{"op": "set", "direction": "ab",
"delay_ms": 20, "jitter_ms": 2, "loss": 0.1}`` and ``{"op": "stats"}``; each
is answered with ``{"ok": true, "time": <monotonic>, "settings": ...,
"counters": ...}`` (:class:`ImpairControl` is the client).

Run: ``python -m dyncast_bgp.lab.impair forward --port-a IF --port-b IF
--control PATH [--ab DELAY,JITTER,LOSS] [--ba ...]``; it prints one JSON line
``{"impair": "ready", ...}`` once its sockets are open.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import heapq
import json
import os
import random
import secrets
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_PACKET = 263
PACKET_AUXDATA = 8
TP_STATUS_CSUMNOTREADY = 1 << 3
SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO = 0x17, 0x1F, 0x24
DIRECTIONS = ("ab", "ba")
_AUX = struct.Struct("=IIIHHHH")
_MAX_FRAME = 65536 + 64
_BURST = 256


@dataclass(frozen=True, slots=True)
class Impairment:
    """netem-like settings for one direction: ``delay_ms`` +- ``jitter_ms`` (uniform), ``loss`` in 0..1."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        if not (self.delay_ms >= 0 and self.jitter_ms >= 0 and 0.0 <= self.loss <= 1.0):
            raise ValueError(f"impairment needs delay_ms >= 0, jitter_ms >= 0, 0 <= loss <= 1: {self}")

    @property
    def idle(self) -> bool:
        return self.delay_ms == 0.0 and self.jitter_ms == 0.0 and self.loss == 0.0

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Impairment:
        return cls(float(data.get("delay_ms", 0.0)), float(data.get("jitter_ms", 0.0)), float(data.get("loss", 0.0)))

    @classmethod
    def from_text(cls, text: str) -> Impairment:
        """``DELAY_MS[,JITTER_MS[,LOSS]]`` (loss as a fraction)."""
        values = [float(part) for part in text.split(",")]
        return cls(*values)


# ------------------------------------------------------------------- checksums


def _ones_complement(data: bytes) -> int:
    """The Internet checksum of ``data`` (the big integer is congruent to its 16-bit word sum mod 0xFFFF)."""
    if len(data) % 2:
        data += b"\0"
    return ~(int.from_bytes(data, "big") % 0xFFFF) & 0xFFFF


def complete_checksum(frame: bytes) -> bytes:
    """``frame`` with the TCP or UDP checksum of its IPv4/IPv6 packet computed (other frames unchanged)."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00" and len(frame) >= 34:
        protocol, ihl = frame[23], (frame[14] & 0x0F) * 4
        start = 14 + ihl
        length = struct.unpack_from("!H", frame, 16)[0] - ihl
        pseudo = frame[26:34] + struct.pack("!BBH", 0, protocol, length)
    elif ethertype == b"\x86\xdd" and len(frame) >= 54:
        protocol, start = frame[20], 54
        length = struct.unpack_from("!H", frame, 18)[0]
        pseudo = frame[22:54] + struct.pack("!IxxxB", length, protocol)
    else:
        return frame
    offset = {6: 16, 17: 6}.get(protocol)
    if offset is None or start + offset + 2 > len(frame) or length < offset + 2:
        return frame
    segment = frame[start:start + offset] + b"\0\0" + frame[start + offset + 2:start + length]
    value = _ones_complement(pseudo + segment)
    at = start + offset
    return frame[:at] + struct.pack("!H", value) + frame[at + 2:]


# ------------------------------------------------------------------- the forwarder


@dataclass(slots=True)
class Counters:
    received: int = 0
    passed: int = 0
    dropped: int = 0
    errors: int = 0
    queued: int = 0


class Forwarder:
    """Moves frames between ``port_a`` and ``port_b``, impairing each direction; controlled on ``control``."""

    def __init__(self, port_a: str, port_b: str, control: Path, *, settings: Mapping[str, Impairment] | None = None,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self.ports = {"a": _open_port(port_a), "b": _open_port(port_b)}
        self.settings = {direction: Impairment() for direction in DIRECTIONS}
        self.settings.update(settings or {})
        self.counters = {direction: Counters() for direction in DIRECTIONS}
        self.clock = clock
        self.rng = rng or random.Random()
        self.control_path = control
        control.unlink(missing_ok=True)
        self.control = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.control.bind(str(control))
        self.control.setblocking(False)
        self._queue: list[tuple[float, int, str, bytes]] = []  # (due, order, direction, frame)
        self._order = 0

    def close(self) -> None:
        for sock in (*self.ports.values(), self.control):
            sock.close()
        self.control_path.unlink(missing_ok=True)

    def run(self, until: Callable[[], bool] = lambda: False) -> None:
        by_fd = {sock.fileno(): name for name, sock in self.ports.items()}
        poller = select.epoll()
        for sock in (*self.ports.values(), self.control):
            poller.register(sock.fileno(), select.EPOLLIN)
        try:
            while not until():
                self._send_due()
                timeout = 0.2 if not self._queue else max(0.0, self._queue[0][0] - self.clock())
                for fd, _ in poller.poll(timeout):
                    if fd == self.control.fileno():
                        self._serve_control()
                    else:
                        self._receive(by_fd[fd])
        finally:
            poller.close()

    def _receive(self, port: str) -> None:
        sock = self.ports[port]
        direction = "ab" if port == "a" else "ba"
        counters, impairment = self.counters[direction], self.settings[direction]
        for _ in range(_BURST):
            try:
                frame, ancillary, _, address = sock.recvmsg(_MAX_FRAME, 64)
            except BlockingIOError:
                return
            if address[2] == PACKET_OUTGOING:
                continue
            counters.received += 1
            for level, kind, data in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and _AUX.unpack_from(data)[0] & \
                        TP_STATUS_CSUMNOTREADY:
                    frame = complete_checksum(frame)
            if impairment.loss and self.rng.random() < impairment.loss:
                counters.dropped += 1
                continue
            delay = impairment.delay_ms
            if impairment.jitter_ms:
                delay = max(0.0, delay + self.rng.uniform(-impairment.jitter_ms, impairment.jitter_ms))
            if delay == 0.0 and counters.queued == 0:
                self._send(direction, frame)
                continue
            self._order += 1
            counters.queued += 1
            heapq.heappush(self._queue, (self.clock() + delay / 1000.0, self._order, direction, frame))

    def _send_due(self) -> None:
        now = self.clock()
        while self._queue and self._queue[0][0] <= now:
            _, _, direction, frame = heapq.heappop(self._queue)
            self.counters[direction].queued -= 1
            self._send(direction, frame)

    def _send(self, direction: str, frame: bytes) -> None:
        try:
            self.ports["b" if direction == "ab" else "a"].send(frame)
            self.counters[direction].passed += 1
        except OSError:
            self.counters[direction].errors += 1

    def _serve_control(self) -> None:
        while True:
            try:
                data, sender = self.control.recvfrom(65536)
            except BlockingIOError:
                return
            reply = self.handle(data)
            if sender:
                with contextlib.suppress(OSError):
                    self.control.sendto(json.dumps(reply).encode(), sender)

    def handle(self, data: bytes) -> dict[str, Any]:
        """Apply one control request; the reply says what holds now."""
        try:
            request = json.loads(data)
            op = request.get("op", "stats")
            if op == "set":
                directions = DIRECTIONS if request.get("direction", "both") == "both" else (request["direction"],)
                for direction in directions:
                    if direction not in DIRECTIONS:
                        raise ValueError(f"direction must be one of {DIRECTIONS} or 'both', got {direction!r}")
                impairment = Impairment.from_mapping(request)
                for direction in directions:
                    self.settings[direction] = impairment
            elif op != "stats":
                raise ValueError(f"unknown op {op!r} (set, stats)")
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "time": self.clock(), **self.state()}

    def state(self) -> dict[str, Any]:
        return {"settings": {d: asdict(s) for d, s in self.settings.items()},
                "counters": {d: asdict(c) for d, c in self.counters.items()}}


def _open_port(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


# ------------------------------------------------------------------- the client


class ImpairError(RuntimeError):
    """The forwarder did not answer, or refused a request."""


class ImpairControl:
    """Client of a forwarder's control socket (works from any namespace: the socket is a file)."""

    def __init__(self, path: Path, *, timeout: float = 3.0) -> None:
        self.path = path
        self.timeout = timeout

    def request(self, message: Mapping[str, Any]) -> dict[str, Any]:
        own = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(3)}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(own))
            try:
                sock.settimeout(self.timeout)
                sock.sendto(json.dumps(dict(message)).encode(), str(self.path))
                reply: dict[str, Any] = json.loads(sock.recv(65536))
            except (OSError, ValueError) as exc:
                raise ImpairError(f"impairment forwarder at {self.path} did not answer: {exc}") from None
            finally:
                own.unlink(missing_ok=True)
        if not reply.get("ok"):
            raise ImpairError(f"impairment forwarder at {self.path}: {reply.get('error')}")
        return reply

    def set(self, direction: str, impairment: Impairment) -> float:
        """Impair ``direction`` (``ab``, ``ba`` or ``both``); returns the monotonic time it took effect."""
        return float(self.request({"op": "set", "direction": direction, **asdict(impairment)})["time"])

    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})


# ------------------------------------------------------------------- offload


def disable_offload(ifname: str) -> None:
    """Turn off TX checksum, TSO and GSO on ``ifname`` (in the current namespace), like ``ethtool -K``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for command in (ETHTOOL_STXCSUM, ETHTOOL_STSO, ETHTOOL_SGSO):
            value = ctypes.create_string_buffer(struct.pack("=II", command, 0), 8)
            request = struct.pack("16sP", ifname.encode(), ctypes.addressof(value)).ljust(40, b"\0")
            with contextlib.suppress(OSError):  # a device without the feature refuses; that is fine
                fcntl.ioctl(sock.fileno(), SIOCETHTOOL, request)


# ------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyncast_bgp.lab.impair", description=__doc__.split("\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    forward = actions.add_parser("forward", help="forward frames between two interfaces, impaired")
    forward.add_argument("--port-a", required=True)
    forward.add_argument("--port-b", required=True)
    forward.add_argument("--control", required=True, type=Path)
    forward.add_argument("--ab", type=Impairment.from_text, default=Impairment(), help="DELAY_MS[,JITTER_MS[,LOSS]]")
    forward.add_argument("--ba", type=Impairment.from_text, default=Impairment(), help="DELAY_MS[,JITTER_MS[,LOSS]]")
    offload = actions.add_parser("offload", help="disable checksum/segmentation offload on interfaces")
    offload.add_argument("interfaces", nargs="+")
    args = parser.parse_args(argv)
    if args.action == "offload":
        for ifname in args.interfaces:
            disable_offload(ifname)
        return 0
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    forwarder = Forwarder(args.port_a, args.port_b, args.control, settings={"ab": args.ab, "ba": args.ba})
    try:
        print(json.dumps({"impair": "ready", "time": time.monotonic(), **forwarder.state()}), flush=True)
        forwarder.run(until=lambda: stopping)
        print(json.dumps({"impair": "stopped", "time": time.monotonic(), **forwarder.state()}), flush=True)
    finally:
        forwarder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
