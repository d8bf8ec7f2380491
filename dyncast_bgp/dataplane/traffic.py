"""Tiny traffic tools for dataplane labs, tests and benchmarks (run inside namespaces).

``python -m dyncast_bgp.dataplane.traffic serve --name a --port 9000``
    a TCP and UDP server on every address (IPv4 and IPv6). A TCP client first
    receives ``<name>\\n``; every line it sends comes back as ``<name> <line>``.
    Every UDP datagram comes back as ``<name> <payload>``.

``... burst --target 203.0.113.10 --port 9000 --count 2000 [--source ADDR ...]``
    opens ``count`` TCP connections (``concurrency`` at a time, round robin
    over the source addresses), reads the server's name, closes; prints JSON
    ``{"names": {name: n}, "by_source": {src: {name: n}}, "errors": {...}}``.

``... rate --target ... --seconds 5 --concurrency 32``
    opens and closes connections for ``seconds``; prints JSON with the rate.

``... hold --target ... --tcp 8 --udp 1``
    keeps ``tcp`` connections and ``udp`` flows open and answers JSON commands
    on stdin, one per line: ``check`` (one round trip on every flow; prints
    per flow the instance name or the error) and ``quit``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import struct
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

CONNECT_TIMEOUT = 3.0


# -- server -------------------------------------------------------------------------------------------


IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python 3.11 does not export it


def _udp_echo(name: str, family: socket.AddressFamily, port: int) -> None:
    """Answer every datagram from the address it was sent to (an anycast D-SID, not the primary address)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        sock.bind(("::", port))
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
        sock.bind(("0.0.0.0", port))
    prefix = name.encode() + b" "
    while True:
        data, ancillary, _flags, peer = sock.recvmsg(4096, 256)
        reply_ancillary = []
        for level, kind, payload in ancillary:
            if family == socket.AF_INET6 and (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO):
                reply_ancillary = [(level, kind, payload[:16] + struct.pack("=I", 0))]
            elif family == socket.AF_INET and (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO):
                reply_ancillary = [(level, kind, struct.pack("=I", 0) + payload[8:12] + bytes(4))]
        with contextlib.suppress(OSError):
            sock.sendmsg([prefix + data], reply_ancillary, 0, peer)


async def serve(name: str, port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            writer.write(f"{name}\n".encode())
            await writer.drain()
            while line := await reader.readline():
                writer.write(f"{name} ".encode() + line)
                await writer.drain()
        writer.close()

    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    server = await asyncio.start_server(handle, sock=sock, backlog=4096)
    for family in (socket.AF_INET, socket.AF_INET6):
        threading.Thread(target=_udp_echo, args=(name, family, port), daemon=True).start()
    print(f"serving {name} on port {port}", flush=True)
    async with server:
        await server.serve_forever()


# -- clients ------------------------------------------------------------------------------------------


async def _open(target: str, port: int, source: str | None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    local = (source, 0) if source else None
    return await asyncio.wait_for(asyncio.open_connection(target, port, local_addr=local), CONNECT_TIMEOUT)


async def _one(target: str, port: int, source: str | None) -> str:
    reader, writer = await _open(target, port, source)
    try:
        line = await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
    name = line.decode().strip()
    if not name:
        raise ConnectionError("closed without a name")
    return name


def _error_name(exc: BaseException) -> str:
    return type(exc).__name__


async def burst(target: str, port: int, count: int, concurrency: int, sources: Sequence[str]) -> dict[str, Any]:
    names: Counter[str] = Counter()
    by_source: dict[str, Counter[str]] = {}
    errors: Counter[str] = Counter()
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        source = sources[index % len(sources)] if sources else None
        async with gate:
            try:
                name = await _one(target, port, source)
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors[_error_name(exc)] += 1
                return
        names[name] += 1
        by_source.setdefault(source or "-", Counter())[name] += 1

    await asyncio.gather(*(one(i) for i in range(count)))
    return {"names": dict(names), "by_source": {s: dict(c) for s, c in by_source.items()}, "errors": dict(errors)}


async def rate(target: str, port: int, seconds: float, concurrency: int) -> dict[str, Any]:
    done = 0
    errors: Counter[str] = Counter()
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            try:
                await _one(target, port, None)
                done += 1
            except (OSError, TimeoutError, ConnectionError) as exc:
                errors[_error_name(exc)] += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    return {"connections": done, "seconds": elapsed, "rate": done / elapsed, "errors": dict(errors)}


@dataclass
class _Flows:
    tcp: list[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = field(default_factory=list)
    udp: list[socket.socket] = field(default_factory=list)
    first: list[str] = field(default_factory=list)


async def hold(target: str, port: int, tcp: int, udp: int, sources: Sequence[str]) -> None:
    """Keep flows open; answer ``check`` / ``quit`` commands from stdin with JSON lines."""
    flows = _Flows()
    for index in range(tcp):
        source = sources[index % len(sources)] if sources else None
        reader, writer = await _open(target, port, source)
        flows.tcp.append((reader, writer))
        flows.first.append((await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)).decode().strip())
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    for index in range(udp):
        sock = socket.socket(family, socket.SOCK_DGRAM)
        if sources:
            sock.bind((sources[index % len(sources)], 0))
        sock.connect((target, port))
        sock.settimeout(CONNECT_TIMEOUT)
        flows.udp.append(sock)
    print(json.dumps({"ready": True, "tcp": flows.first}), flush=True)
    loop = asyncio.get_running_loop()
    counter = 0
    while True:
        command = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if command in ("", "quit"):
            break
        counter += 1
        result = {"tcp": [await _check_tcp(pair, counter) for pair in flows.tcp],
                  "udp": [await loop.run_in_executor(None, _check_udp, sock, counter) for sock in flows.udp]}
        print(json.dumps(result), flush=True)
    for pair in flows.tcp:
        if pair is not None:
            pair[1].close()


async def _check_tcp(pair: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, counter: int) -> str:
    if pair is None:
        return "error:closed"
    reader, writer = pair
    try:
        writer.write(f"ping {counter}\n".encode())
        await writer.drain()
        line = (await asyncio.wait_for(reader.readline(), CONNECT_TIMEOUT)).decode().strip()
    except (OSError, TimeoutError, ConnectionError) as exc:
        return f"error:{_error_name(exc)}"
    if not line:
        return "error:eof"
    name, _, echoed = line.partition(" ")
    return name if echoed == f"ping {counter}" else f"error:garbled:{line}"


def _check_udp(sock: socket.socket, counter: int) -> str:
    try:
        sock.send(f"ping {counter}".encode())
        data = sock.recv(2048).decode()
    except OSError as exc:
        return f"error:{_error_name(exc)}"
    name, _, echoed = data.partition(" ")
    return name if echoed == f"ping {counter}" else f"error:garbled:{data}"


# -- command line -------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyncast_bgp.dataplane.traffic", description=__doc__)
    modes = parser.add_subparsers(dest="mode", required=True)
    server = modes.add_parser("serve")
    server.add_argument("--name", required=True)
    server.add_argument("--port", type=int, default=9000)
    for mode in ("burst", "rate", "hold"):
        client = modes.add_parser(mode)
        client.add_argument("--target", required=True)
        client.add_argument("--port", type=int, default=9000)
        client.add_argument("--source", action="append", default=[])
        client.add_argument("--count", type=int, default=100)
        client.add_argument("--concurrency", type=int, default=32)
        client.add_argument("--seconds", type=float, default=5.0)
        client.add_argument("--tcp", type=int, default=4)
        client.add_argument("--udp", type=int, default=1)
    args = parser.parse_args(argv)
    if args.mode == "serve":
        asyncio.run(serve(args.name, args.port))
    elif args.mode == "burst":
        print(json.dumps(asyncio.run(burst(args.target, args.port, args.count, args.concurrency, args.source))))
    elif args.mode == "rate":
        print(json.dumps(asyncio.run(rate(args.target, args.port, args.seconds, args.concurrency))))
    else:
        asyncio.run(hold(args.target, args.port, args.tcp, args.udp, args.source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
