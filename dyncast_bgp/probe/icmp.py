"""ICMP / ICMPv6 echo framing around the probe header (pure, no sockets).

An echo request carries the 24-octet probe header as its payload; the target's
kernel returns the payload verbatim in the echo reply, so matching works as
for UDP (by target address, token, sequence and send time). The 16-bit ICMP
sequence field holds the low bits of the probe sequence, for packet captures.

Checksums: ICMPv4 needs one in the packet (computed here; the kernel of an
unprivileged ping socket recomputes it anyway). ICMPv6 checksums cover a
pseudo-header the kernel owns, so the kernel fills them in for both ping and
raw ICMPv6 sockets (RFC 3542 section 3.1); we send zero.
"""

from __future__ import annotations

import struct

from dyncast_bgp.probe.packet import PacketError, Reason

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
_ICMP = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
ICMP_HEADER_SIZE = _ICMP.size


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071) of ``data``."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(version: int, identifier: int, sequence: int, payload: bytes) -> bytes:
    """An ICMP (``version`` 4) or ICMPv6 (6) echo request carrying ``payload``."""
    kind = ECHO_REQUEST[version]
    ident, seq = identifier & 0xFFFF, sequence & 0xFFFF
    if version == 6:
        return _ICMP.pack(kind, 0, 0, ident, seq) + payload
    unsummed = _ICMP.pack(kind, 0, 0, ident, seq) + payload
    return _ICMP.pack(kind, 0, checksum(unsummed), ident, seq) + payload


def parse_echo_reply(version: int, data: bytes, *, ip_header: bool = False) -> tuple[int, bytes]:
    """``(identifier, payload)`` of an echo reply; :class:`PacketError` for anything else.

    ``ip_header``: the datagram starts with the IPv4 header (raw IPv4 sockets).
    """
    if ip_header:
        if len(data) < 20 or data[0] >> 4 != 4:
            raise PacketError(Reason.TOO_SHORT, "no IPv4 header")
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < ICMP_HEADER_SIZE:
        raise PacketError(Reason.TOO_SHORT, f"ICMP message of {len(data)} octets")
    kind, code, _, identifier, _ = _ICMP.unpack_from(data)
    if kind != ECHO_REPLY[version] or code != 0:
        raise PacketError(Reason.NOT_ECHO_REPLY, f"ICMPv{version} type {kind} code {code}")
    return identifier, data[ICMP_HEADER_SIZE:]
