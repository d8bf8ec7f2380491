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

Sockets are bound with ``IP_FREEBIND`` (:mod:`dyncast_bgp.datagram`) so the responder can start before the
instance addresses are configured (it answers once they are). Wildcard
addresses (``0.0.0.0``, ``::``) are refused: the reply would leave from
whatever address routing picks, and probers drop replies whose source is not
the address they probed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dyncast_bgp.config.schema import EchoResponder
from dyncast_bgp.datagram import DatagramServer, ServerProtocol, Tally, serve
from dyncast_bgp.probe.packet import PacketError, reply_for
from dyncast_bgp.probe.ratelimit import RateLimits, SourceLimiter

log = structlog.get_logger(__name__)


class EchoError(RuntimeError):
    """The responder cannot listen as configured (the message names the address and the reason)."""


@dataclass(slots=True)
class EchoCounters(Tally):
    """What the responder did with every datagram it received (``dropped``: also by packet error reason)."""

    replied: int = 0
    rate_limited: int = 0
    send_errors: int = 0


class EchoProtocol(ServerProtocol):
    """One listening socket; shares the limiter and counters with its siblings."""

    def __init__(self, limiter: SourceLimiter, counters: EchoCounters, clock: Callable[[], float]) -> None:
        super().__init__(counters)
        self._limiter = limiter
        self._counters = counters
        self._clock = clock

    def handle(self, data: bytes, addr: tuple[Any, ...]) -> None:
        counters = self._counters
        try:
            reply = reply_for(data)
        except PacketError as exc:
            counters.dropped[exc.reason.value] += 1
            return
        if not self._limiter.allow(addr[0], self._clock()):
            counters.rate_limited += 1
            return
        if self.transport is not None:
            self.transport.sendto(reply, addr)
            counters.replied += 1

    def error_received(self, exc: Exception) -> None:
        self._counters.send_errors += 1



EchoServer = DatagramServer[EchoCounters]
"""The running responder: its bound addresses, counters, and ``close``."""


async def serve_echo(config: EchoResponder, *, limits: RateLimits | None = None,
                     clock: Callable[[], float] = time.monotonic) -> EchoServer:
    """Listen on every ``config.listen`` address at ``config.port``; raises :class:`EchoError`."""
    counters = EchoCounters()
    limiter = SourceLimiter(limits or RateLimits(), clock())
    for address in config.listen:
        if address.is_unspecified:
            raise EchoError(f"echo listen address {address} is a wildcard: list the instance addresses "
                            "(replies must leave from the probed address)")
    server = await serve([str(address) for address in config.listen], config.port,
                         lambda: EchoProtocol(limiter, counters, clock), counters,
                         refused=lambda address, exc: EchoError(
                             f"cannot listen for probes on [{address}]:{config.port}: {exc.strerror}"))
    log.info("echo_listening", addresses=[f"[{host}]:{port}" for host, port in server.addresses])
    return server
