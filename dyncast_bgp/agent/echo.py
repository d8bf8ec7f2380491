"""The agent's UDP echo responder: answers the routers' path probes (issue 3, docs/probes.md).

It listens on ``agent.echo.listen`` (the instances' D-BIDs, so a reply leaves
from the address the router probed) and ``agent.echo.port``. For each
datagram it:

1. drops it when the source port is below 1024 (0 included): probers send
   from ephemeral ports, and a reply aimed at a well-known service port is
   what a reflection attack looks like;
2. drops it unless it is a well-formed version-1 probe *request*
   (:func:`dyncast_bgp.probe.packet.reply_for`), counted by reason;
3. drops it when the source (or all sources together) is over its token
   bucket (:class:`dyncast_bgp.probe.ratelimit.SourceLimiter`);
4. otherwise sends back the same octets with the kind set to *reply*: a
   reply is never larger than its request and is never itself answered.

Sockets are bound with ``IP_FREEBIND`` so the responder can start before the
instance addresses are configured (it answers once they are). Wildcard
addresses (``0.0.0.0``, ``::``) are refused: the reply would leave from
whatever address routing picks, and probers drop replies whose source is not
the address they probed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast

import structlog

from dyncast_bgp.config.schema import EchoResponder
from dyncast_bgp.model import IPAddress
from dyncast_bgp.probe.packet import PacketError, reply_for
from dyncast_bgp.probe.ratelimit import RateLimits, SourceLimiter

log = structlog.get_logger(__name__)

PRIVILEGED_PORTS = 1024
_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_IPV6_FREEBIND = 78  # Linux >= 4.15


class EchoError(RuntimeError):
    """The responder cannot listen as configured (the message names the address and the reason)."""


@dataclass(slots=True)
class EchoCounters:
    """What the responder did with every datagram it received."""

    received: int = 0
    replied: int = 0
    rate_limited: int = 0
    send_errors: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Datagrams not answered, by reason: ``privileged_source_port`` or a packet error reason."""


class EchoProtocol(asyncio.DatagramProtocol):
    """One listening socket; shares the limiter and counters with its siblings."""

    def __init__(self, limiter: SourceLimiter, counters: EchoCounters, clock: Callable[[], float]) -> None:
        self._limiter = limiter
        self._counters = counters
        self._clock = clock
        self._transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # neither asyncio's nor uvloop's UDP transport subclasses DatagramTransport
        self._transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        counters = self._counters
        counters.received += 1
        if addr[1] < PRIVILEGED_PORTS:
            counters.dropped["privileged_source_port"] += 1
            return
        try:
            reply = reply_for(data)
        except PacketError as exc:
            counters.dropped[exc.reason.value] += 1
            return
        if not self._limiter.allow(addr[0], self._clock()):
            counters.rate_limited += 1
            return
        if self._transport is not None:
            self._transport.sendto(reply, addr)
            counters.replied += 1

    def error_received(self, exc: Exception) -> None:
        self._counters.send_errors += 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class EchoServer:
    """The running responder: its bound addresses, counters, and :meth:`close`."""

    def __init__(self, endpoints: Sequence[tuple[asyncio.DatagramTransport, EchoProtocol]],
                 counters: EchoCounters) -> None:
        self._endpoints = list(endpoints)
        self.counters = counters

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``(address, port)`` of every listening socket, as bound."""
        return [(str(name[0]), int(name[1])) for name in
                (transport.get_extra_info("sockname") for transport, _ in self._endpoints)]

    def close(self) -> None:
        """Stop listening (idempotent); :meth:`wait_closed` waits until every socket is closed."""
        for transport, _ in self._endpoints:
            transport.close()

    async def wait_closed(self) -> None:
        await asyncio.gather(*(protocol.closed for _, protocol in self._endpoints))

    async def __aenter__(self) -> EchoServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()


def _factory(protocol: EchoProtocol) -> Callable[[], EchoProtocol]:
    return lambda: protocol


def _listening_socket(address: IPAddress, port: int) -> socket.socket:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((str(address), port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_echo(config: EchoResponder, *, limits: RateLimits | None = None,
                     clock: Callable[[], float] = time.monotonic) -> EchoServer:
    """Listen on every ``config.listen`` address at ``config.port``; raises :class:`EchoError`."""
    loop = asyncio.get_running_loop()
    counters = EchoCounters()
    limiter = SourceLimiter(limits or RateLimits(), clock())
    endpoints: list[tuple[asyncio.DatagramTransport, EchoProtocol]] = []
    try:
        for address in config.listen:
            if address.is_unspecified:
                raise EchoError(f"echo listen address {address} is a wildcard: list the instance addresses "
                                "(replies must leave from the probed address)")
            try:
                sock = _listening_socket(address, config.port)
            except OSError as exc:
                raise EchoError(f"cannot listen for probes on [{address}]:{config.port}: {exc.strerror}") from None
            protocol = EchoProtocol(limiter, counters, clock)
            transport, _ = await loop.create_datagram_endpoint(_factory(protocol), sock=sock)
            endpoints.append((transport, protocol))
    except BaseException:
        server = EchoServer(endpoints, counters)
        server.close()
        await server.wait_closed()  # the ports are free again when this raises
        raise
    server = EchoServer(endpoints, counters)
    log.info("echo_listening", addresses=[f"[{host}]:{port}" for host, port in server.addresses])
    return server
