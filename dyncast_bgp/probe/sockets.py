"""The prober's sockets: one per address family, for all targets, per probe method.

``udp``: an ordinary UDP socket bound to an ephemeral port; requests go to the
agents' echo responders (:mod:`dyncast_bgp.agent.echo`).

``icmp``: echo requests answered by the targets' kernels. Two socket kinds
(docs/probes.md, "ICMP permissions"):

- ``icmp-dgram``: the unprivileged *ping socket* (``SOCK_DGRAM`` +
  ``IPPROTO_ICMP``/``IPPROTO_ICMPV6``). No capability needed, but the
  caller's group must be inside ``net.ipv4.ping_group_range`` (per network
  namespace; it also governs ICMPv6). This includes root: the default range
  ``1 0`` allows nobody. The kernel picks the ICMP identifier (the socket's
  "port"), fills in the checksum and delivers only replies to this socket.
- ``icmp-raw``: a raw socket (``SOCK_RAW``), which needs ``CAP_NET_RAW``.
  It sees every echo reply of the namespace: a kernel filter
  (``ICMP_FILTER`` / ``ICMP6_FILTER``) passes only echo replies, and the
  identifier (random) and the probe token sort out ours.

``auto`` (the default) tries the ping socket first and falls back to a raw
socket; when neither is permitted :class:`ProbeSetupError` says what to change.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from dyncast_bgp.model import IPAddress
from dyncast_bgp.probe import rxtime
from dyncast_bgp.probe.icmp import echo_request, parse_echo_reply
from dyncast_bgp.probe.packet import Kind, PacketError, Reason

Method = Literal["udp", "icmp"]
IcmpSocket = Literal["auto", "dgram", "raw"]
RECEIVE_BUFFER = 4 << 20
PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
_SOL_RAW = 255
_ICMP_FILTER = 1
_ICMP6_FILTER = 1


class ProbeSetupError(RuntimeError):
    """A probe socket cannot be opened; the message says why and what to change."""


@dataclass(slots=True)
class ProbeSocket:
    """One open socket: sends requests to any target of its family and unwraps what comes back."""

    sock: socket.socket
    version: int
    kind: Literal["udp", "icmp-dgram", "icmp-raw"]
    port: int
    """UDP: the echo port replies must come from; ICMP: 0."""
    identifier: int = 0
    """ICMP identifier of our requests (raw sockets check it; ping sockets get it from the kernel)."""
    stamped: bool = field(init=False, default=False)
    """Whether the kernel stamps what this socket receives (:mod:`~dyncast_bgp.probe.rxtime`)."""

    def __post_init__(self) -> None:
        self.stamped = rxtime.enable(self.sock)

    @property
    def returned_kind(self) -> Kind:
        """The kind a returned probe header carries: UDP echoes flip it, ICMP echoes do not."""
        return Kind.REPLY if self.kind == "udp" else Kind.REQUEST

    def sockaddr(self, address: IPAddress) -> tuple[Any, ...]:
        return (str(address), self.port)

    def send(self, sockaddr: tuple[Any, ...], sequence: int, payload: bytes) -> None:
        """Send one request (raises OSError)."""
        if self.kind == "udp":
            self.sock.sendto(payload, sockaddr)
        else:
            self.sock.sendto(echo_request(self.version, self.identifier, sequence, payload), sockaddr)

    def unwrap(self, data: bytes, addr: tuple[Any, ...]) -> bytes:
        """The probe header inside a received datagram; :class:`PacketError` if it is not ours."""
        if self.kind == "udp":
            if addr[1] != self.port:
                raise PacketError(Reason.BAD_KIND, f"UDP reply from port {addr[1]}, not {self.port}")
            return data
        identifier, payload = parse_echo_reply(self.version, data,
                                               ip_header=self.kind == "icmp-raw" and self.version == 4)
        if self.kind == "icmp-raw" and identifier != self.identifier:
            raise PacketError(Reason.NOT_ECHO_REPLY, f"ICMP identifier {identifier} is not ours")
        return payload

    def close(self) -> None:
        self.sock.close()


def _family(version: int) -> socket.AddressFamily:
    return socket.AF_INET6 if version == 6 else socket.AF_INET


def _bind_address(version: int, source: IPAddress | None) -> str:
    if source is not None:
        if source.version != version:
            raise ProbeSetupError(f"source address {source} is not an IPv{version} address")
        return str(source)
    return "::" if version == 6 else "0.0.0.0"


def _prepare(sock: socket.socket, version: int, source: IPAddress | None) -> None:
    if version == 6 and sock.type == socket.SOCK_DGRAM:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    if sock.type == socket.SOCK_DGRAM or source is not None:
        sock.bind((_bind_address(version, source), 0))
    sock.setblocking(False)


def open_udp(version: int, port: int, *, source: IPAddress | None = None) -> ProbeSocket:
    sock = socket.socket(_family(version), socket.SOCK_DGRAM)
    try:
        _prepare(sock, version, source)
    except OSError as exc:
        sock.close()
        raise ProbeSetupError(f"cannot open the IPv{version} UDP probe socket: {exc.strerror}") from None
    return ProbeSocket(sock, version, "udp", port)


def _icmp_proto(version: int) -> int:
    return socket.IPPROTO_ICMPV6 if version == 6 else socket.IPPROTO_ICMP


def open_icmp_dgram(version: int, *, source: IPAddress | None = None) -> ProbeSocket:
    """An unprivileged ping socket (raises PermissionError outside ``ping_group_range``)."""
    sock = socket.socket(_family(version), socket.SOCK_DGRAM, _icmp_proto(version))
    try:
        _prepare(sock, version, source)
    except OSError:
        sock.close()
        raise
    return ProbeSocket(sock, version, "icmp-dgram", 0, identifier=sock.getsockname()[1])


def open_icmp_raw(version: int, *, source: IPAddress | None = None,
                  identifier: int | None = None) -> ProbeSocket:
    """A raw ICMP socket passing only echo replies (raises PermissionError without CAP_NET_RAW)."""
    sock = socket.socket(_family(version), socket.SOCK_RAW, _icmp_proto(version))
    try:
        if version == 4:  # a bit set blocks that ICMP type; pass only echo reply (type 0)
            sock.setsockopt(_SOL_RAW, _ICMP_FILTER, struct.pack("I", 0xFFFFFFFE))
        else:  # ICMP6_FILTER: 256 bits, a set bit blocks; pass only echo reply (type 129)
            words = [0xFFFFFFFF] * 8
            words[129 >> 5] &= ~(1 << (129 & 31)) & 0xFFFFFFFF
            sock.setsockopt(socket.IPPROTO_ICMPV6, _ICMP6_FILTER, struct.pack("8I", *words))
        _prepare(sock, version, source)
    except OSError:
        sock.close()
        raise
    ident = random.SystemRandom().randrange(1, 0x10000) if identifier is None else identifier
    return ProbeSocket(sock, version, "icmp-raw", 0, identifier=ident)


def ping_group_range() -> tuple[int, int] | None:
    """``net.ipv4.ping_group_range`` of this network namespace, or None if unreadable."""
    try:
        low, high = Path(PING_GROUP_RANGE).read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return None


def icmp_permission_hint() -> str:
    """What the operator can change so that ICMP probes work here."""
    gid = os.getegid()
    groups = ping_group_range()
    shown = "unreadable" if groups is None else f"'{groups[0]} {groups[1]}'"
    return (f"ICMP probes need a ping socket (net.ipv4.ping_group_range is {shown} and must include "
            f"gid {gid}: sysctl -w net.ipv4.ping_group_range='{gid} {gid}', per network namespace) "
            "or CAP_NET_RAW for a raw socket; or use method udp with the agents' echo responders")


def open_icmp(version: int, *, mode: IcmpSocket = "auto", source: IPAddress | None = None) -> ProbeSocket:
    """An ICMP probe socket: ping socket, raw socket, or (``auto``) the first of them permitted."""
    kinds = {"auto": ("dgram", "raw"), "dgram": ("dgram",), "raw": ("raw",)}[mode]
    failures: list[str] = []
    for kind in kinds:
        try:
            return open_icmp_dgram(version, source=source) if kind == "dgram" else \
                open_icmp_raw(version, source=source)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM):
                raise ProbeSetupError(f"cannot open the IPv{version} ICMP {kind} socket: {exc.strerror}") from None
            failures.append(f"{kind} socket: {exc.strerror}")
    raise ProbeSetupError(f"no IPv{version} ICMP socket permitted ({'; '.join(failures)}): "
                          + icmp_permission_hint())


def open_probe_socket(version: int, method: Method, *, port: int, source: IPAddress | None = None,
                      icmp_mode: IcmpSocket = "auto") -> ProbeSocket:
    _bind_address(version, source)  # a wrong source fails here, before any socket exists
    if method == "udp":
        return open_udp(version, port, source=source)
    return open_icmp(version, mode=icmp_mode, source=source)
