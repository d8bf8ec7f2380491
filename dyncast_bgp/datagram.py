"""UDP servers bound to explicit addresses: what the agent's probe echo and the lab's UDP service share.

Both answer from the address the datagram was sent to, which only a socket
bound to that address guarantees (a wildcard socket's answer leaves from
whatever address routing picks, and clients drop it). Sockets are bound with
``IP_FREEBIND`` so a server can start before its addresses are configured.

- :func:`bound_socket`: one non-blocking UDP socket on ``address:port``.
- :class:`ServerProtocol`: the base protocol (counts into a :class:`Tally`,
  drops datagrams from privileged ports, keeps the transport, resolves
  :attr:`~ServerProtocol.closed` when the socket closes).
- :func:`serve`: one protocol per address; on a failure the sockets already
  open are closed before the error propagates.
- :class:`DatagramServer`: the running sockets, their counters, ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Generic, TypeVar, cast

_IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
_IPV6_FREEBIND = 78  # Linux >= 4.15

C = TypeVar("C")
P = TypeVar("P", bound="ServerProtocol")


PRIVILEGED_PORTS = 1024


@dataclass(slots=True)
class Tally:
    """What a server did with the datagrams it received; servers extend it with their own outcomes."""

    received: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    """Datagrams not answered, by reason (``privileged_source_port`` and the server's own)."""


class ServerProtocol(asyncio.DatagramProtocol):
    """Counts datagrams, drops those from ports below 1024, hands the rest to :meth:`handle`.

    An answer aimed at a well-known port is what a reflection attack looks
    like, so neither server answers one. :attr:`closed` resolves once the
    socket is closed.
    """

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.transport: asyncio.DatagramTransport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.tally.received += 1
        if addr[1] < PRIVILEGED_PORTS:
            self.tally.dropped["privileged_source_port"] += 1
            return
        self.handle(data, addr)

    def handle(self, data: bytes, addr: tuple[Any, ...]) -> None:
        """Answer one datagram from an unprivileged port (the subclass's work)."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # neither asyncio's nor uvloop's UDP transport subclasses DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def bound_socket(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``address:port`` (``IP_FREEBIND``); raises OSError."""
    version = ipaddress.ip_address(address).version
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, _IPV6_FREEBIND, 1)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_IP, _IP_FREEBIND, 1)
        sock.bind((address, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class DatagramServer(Generic[C]):
    """The running server: its bound addresses, its ``counters``, and :meth:`close`."""

    def __init__(self, endpoints: Sequence[tuple[asyncio.BaseTransport, ServerProtocol]], counters: C) -> None:
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

    async def __aenter__(self) -> DatagramServer[C]:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()


async def serve(addresses: Sequence[str], port: int, protocol: Callable[[], P], counters: C, *,
                refused: Callable[[str, OSError], Exception]) -> DatagramServer[C]:
    """Bind ``port`` on every address with a fresh ``protocol()``; a bind error raises ``refused(address, error)``."""
    loop = asyncio.get_running_loop()
    endpoints: list[tuple[asyncio.BaseTransport, ServerProtocol]] = []
    try:
        for address in addresses:
            try:
                sock = bound_socket(address, port)
            except OSError as exc:
                raise refused(address, exc) from None
            handler = protocol()
            transport, _ = await loop.create_datagram_endpoint(_constant(handler), sock=sock)
            endpoints.append((cast(asyncio.BaseTransport, transport), handler))
    except BaseException:
        opened = DatagramServer(endpoints, counters)
        opened.close()
        await opened.wait_closed()  # the ports are free again when this raises
        raise
    return DatagramServer(endpoints, counters)


def _constant(handler: P) -> Callable[[], P]:
    return lambda: handler

