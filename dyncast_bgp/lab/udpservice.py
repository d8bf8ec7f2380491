"""The lab service's UDP side: one datagram in, one JSON answer out (issue 9, shift on failure).

A UDP request/answer service is what ``shift_on_failure: true`` is for: it
keeps no per-flow state, so when the router moves a flow (deletes its conntrack
entry) the flow's next datagram is simply answered by another instance. The
lab service (``dyncast lab service --udp ADDR``) runs this beside its HTTP
side; ``dyncast lab udp-flow`` is the client.

For every datagram the service:

1. drops it when the source port is below 1024 (a reply aimed at a
   well-known port is what a reflection attack looks like);
2. drops it when it is longer than :data:`MAX_REQUEST` octets, not UTF-8,
   or shorter than its answer (no amplification: clients pad their requests);
3. counts it as a request, and stays silent while the instance is failed
   (a failed UDP service answers nothing);
4. otherwise answers ``{"instance": NAME, "request": FIRST_WORD}``.

Sockets are bound to explicit addresses (:mod:`dyncast_bgp.datagram`): the answer
must leave from the address the client sent to (the D-SID), which a wildcard
socket would not guarantee. :func:`answer_for` is pure.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from dyncast_bgp.datagram import DatagramServer, ServerProtocol, Tally, serve

log = structlog.get_logger("dyncast.lab.udpservice")

MAX_REQUEST = 512
MAX_TOKEN = 32
REQUEST_SIZE = 128  # what udp-flow sends: room for an answer naming an instance of up to ~60 characters


class UdpServiceError(RuntimeError):
    """The UDP side cannot listen as asked; the message names the address and the reason."""


def answer_for(instance: str, payload: bytes) -> bytes | None:
    """The answer to one request datagram, or None when ``payload`` is not a request (too long, not UTF-8,
    or shorter than its answer would be: an answer is never larger than its request, so a spoofed source
    cannot use the service to amplify). The answer names the instance and echoes the request's first word
    (at most :data:`MAX_TOKEN` characters); a client pads its requests (``dyncast lab udp-flow`` sends
    :data:`REQUEST_SIZE` octets)."""
    if len(payload) > MAX_REQUEST:
        return None
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return None
    words = text.split(maxsplit=1)
    answer = json.dumps({"instance": instance, "request": words[0][:MAX_TOKEN] if words else ""},
                        separators=(",", ":")).encode()
    return answer if len(answer) <= len(payload) else None


@dataclass(slots=True)
class UdpCounters(Tally):
    """``dropped`` reasons: ``privileged_source_port``, ``malformed``, ``failed``, ``send_error``."""

    answered: int = 0


class _Protocol(ServerProtocol):
    def __init__(self, instance: str, serving: Callable[[], bool], counters: UdpCounters) -> None:
        super().__init__(counters)
        self._instance = instance
        self._serving = serving
        self._counters = counters

    def handle(self, data: bytes, addr: tuple[Any, ...]) -> None:
        counters = self._counters
        answer = answer_for(self._instance, data)
        if answer is None:
            counters.dropped["malformed"] += 1
            return
        if not self._serving():
            counters.dropped["failed"] += 1
            return
        if self.transport is not None:
            self.transport.sendto(answer, addr)
            counters.answered += 1

    def error_received(self, exc: Exception) -> None:
        self._counters.dropped["send_error"] += 1


UdpService = DatagramServer[UdpCounters]


async def serve_udp(instance: str, addresses: Sequence[str], port: int, serving: Callable[[], bool]) -> UdpService:
    """Listen on ``port`` of every address; ``serving()`` False makes the service silent (failed instance)."""
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise UdpServiceError(f"--udp {address!r}: not an IP address") from None
        if ip.is_unspecified:
            raise UdpServiceError(f"--udp {address}: a wildcard address cannot promise the answer leaves from "
                                  "the address the client sent to; name the service address (the D-SID)")
    counters = UdpCounters()
    service = await serve(list(addresses), port, lambda: _Protocol(instance, serving, counters), counters,
                          refused=lambda address, exc: UdpServiceError(
                              f"--udp {address} port {port}: {exc.strerror or exc}"))
    log.info("udp_service_listening", instance=instance, addresses=service.addresses)
    return service
