"""The agent's echo responder (dyncast_bgp.agent.echo): drop rules by unit, then over real loopback sockets."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from dyncast_bgp.agent.echo import EchoCounters, EchoError, EchoProtocol, serve_echo
from dyncast_bgp.config.schema import EchoResponder
from dyncast_bgp.probe.packet import Kind, parse_echoed, reply_for, request
from dyncast_bgp.probe.ratelimit import RateLimits, SourceLimiter

LOOP4 = ipaddress.ip_address("127.0.0.1")
LOOP6 = ipaddress.ip_address("::1")
REQUEST = request(0xFEEDBEEF, 1, 123456789)


def free_port() -> int:
    """A UDP port free on both 127.0.0.1 and ::1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as v4:
            v4.bind(("127.0.0.1", 0))
            port: int = v4.getsockname()[1]
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as v6:
                try:
                    v6.bind(("::1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free UDP port")


class FakeTransport:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[Any, ...]]] = []

    def sendto(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.sent.append((data, addr))


def run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro_fn())


def test_protocol_answers_requests_and_drops_the_rest() -> None:
    async def scenario() -> None:
        counters = EchoCounters()
        limiter = SourceLimiter(RateLimits(per_source_rate=1.0, per_source_burst=2.0), 0.0)
        protocol = EchoProtocol(limiter, counters, clock=lambda: 0.0)
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        peer = ("192.0.2.7", 40000)
        protocol.datagram_received(REQUEST, peer)
        protocol.datagram_received(b"garbage that is long enough to be a header", peer)
        protocol.datagram_received(reply_for(REQUEST), peer)  # a reply is never answered
        protocol.datagram_received(REQUEST, ("192.0.2.7", 53))  # reflection towards a service port
        protocol.datagram_received(REQUEST, ("192.0.2.7", 0))
        protocol.datagram_received(REQUEST + b"pad", peer)
        protocol.datagram_received(REQUEST, peer)  # over the burst of 2
        assert transport.sent == [(reply_for(REQUEST), peer), (reply_for(REQUEST + b"pad"), peer)]
        assert all(len(reply) <= len(REQUEST) + 3 for reply, _ in transport.sent)
        assert counters.received == 7 and counters.replied == 2 and counters.rate_limited == 1
        assert counters.dropped == {"bad_magic": 1, "not_request": 1, "privileged_source_port": 2}
    run(scenario)


def test_echo_over_loopback_v4_and_v6() -> None:
    port = free_port()

    async def scenario() -> None:
        config = EchoResponder(listen=(LOOP4, LOOP6), port=port)
        async with await serve_echo(config) as server:
            assert sorted(server.addresses) == sorted([("127.0.0.1", port), ("::1", port)])
            loop = asyncio.get_running_loop()
            for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                with socket.socket(family, socket.SOCK_DGRAM) as client:
                    client.setblocking(False)
                    client.connect((host, port))
                    await loop.sock_sendall(client, b"\x00" * 30)
                    await loop.sock_sendall(client, REQUEST)
                    reply = await asyncio.wait_for(loop.sock_recv(client, 2048), 2.0)
                    assert parse_echoed(reply, Kind.REPLY) == (0xFEEDBEEF, 1, 123456789)
            assert server.counters.replied == 2 and server.counters.dropped == {"bad_magic": 2}
    run(scenario)


def test_rate_limit_over_loopback() -> None:
    port = free_port()

    async def scenario() -> None:
        limits = RateLimits(per_source_rate=0.001, per_source_burst=3.0)
        async with await serve_echo(EchoResponder(listen=(LOOP4,), port=port), limits=limits) as server:
            loop = asyncio.get_running_loop()
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
                client.setblocking(False)
                client.connect(("127.0.0.1", port))
                for sequence in range(10):
                    await loop.sock_sendall(client, request(1, sequence, 0))
                replies = []
                try:
                    while True:
                        replies.append(await asyncio.wait_for(loop.sock_recv(client, 2048), 0.3))
                except TimeoutError:
                    pass
            assert len(replies) == 3
            assert server.counters.rate_limited == 7
    run(scenario)


def test_wildcard_and_busy_addresses_are_refused_with_the_reason() -> None:
    port = free_port()

    async def scenario() -> None:
        with pytest.raises(EchoError, match="wildcard"):
            await serve_echo(EchoResponder(listen=(ipaddress.ip_address("0.0.0.0"),), port=port))
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as busy:
            busy.bind(("::1", port))
            with pytest.raises(EchoError, match=r"\[::1\]"):
                await serve_echo(EchoResponder(listen=(LOOP4, LOOP6), port=port))
        async with await serve_echo(EchoResponder(listen=(LOOP4,), port=port)):  # the v4 socket was closed again
            pass
    run(scenario)
