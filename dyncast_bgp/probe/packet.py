"""The probe packet: a small versioned header carried in UDP (and in ICMP echo payloads).

Layout (network byte order, 24 octets, docs/probes.md)::

    0        4     5     6       8        12         16                 24
    +--------+-----+-----+-------+--------+----------+------------------+
    | magic  | ver |kind | flags | token  | sequence | send time (ns)   |
    | "DCPB" |  1  | 1/2 |   0   | u32    | u32      | u64              |
    +--------+-----+-----+-------+--------+----------+------------------+
    | padding (optional, echoed verbatim) ...

``kind`` is 1 for a request and 2 for a reply. A responder answers a request
with the same octets, only ``kind`` changed to 2, so a reply is exactly as
long as its request (no amplification) and a reply is never answered (no
loops between two responders). ``token`` is chosen at random by each prober
and ``send time`` is the prober's own clock: both are opaque to the responder
and let the prober reject replies it did not cause.

Pure pack/unpack; every malformed input raises :class:`PacketError`, whose
action is always the same: drop the datagram (and count it by ``reason``).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

MAGIC = 0x44435042  # "DCPB": DynCast Probe
VERSION = 1
HEADER = struct.Struct("!IBBHIIQ")
HEADER_SIZE = HEADER.size
MAX_PACKET = 1400
"""Largest request a responder answers (header plus padding); larger ones are dropped."""

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF
_KIND_OFFSET = 5


class Kind(enum.IntEnum):
    REQUEST = 1
    REPLY = 2


class Reason(enum.StrEnum):
    """Why a datagram is not a usable probe packet (the counter label)."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    BAD_MAGIC = "bad_magic"
    BAD_VERSION = "bad_version"
    BAD_KIND = "bad_kind"
    NOT_REQUEST = "not_request"
    NOT_ECHO_REPLY = "not_echo_reply"


class PacketError(Exception):
    """The datagram is not a probe packet this code speaks: drop it, never answer it."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class ProbePacket:
    """One probe request or reply; ``padding`` is carried verbatim after the header."""

    kind: Kind
    token: int
    sequence: int
    sent_ns: int
    flags: int = 0
    padding: bytes = b""

    def __post_init__(self) -> None:
        if not (0 <= self.token <= U32 and 0 <= self.sequence <= U32):
            raise ValueError("token and sequence must fit in 32 bits")
        if not 0 <= self.sent_ns <= U64:
            raise ValueError("sent_ns must fit in 64 bits")
        if not 0 <= self.flags <= 0xFFFF:
            raise ValueError("flags must fit in 16 bits")
        if HEADER_SIZE + len(self.padding) > MAX_PACKET:
            raise ValueError(f"a probe packet is at most {MAX_PACKET} octets")

    def pack(self) -> bytes:
        return HEADER.pack(MAGIC, VERSION, self.kind, self.flags, self.token, self.sequence,
                           self.sent_ns) + self.padding

    @classmethod
    def unpack(cls, data: bytes) -> ProbePacket:
        """Decode ``data``; raises :class:`PacketError` for anything that is not a version-1 probe."""
        magic, version, kind, flags, token, sequence, sent_ns = _header(data)
        if magic != MAGIC:
            raise PacketError(Reason.BAD_MAGIC, f"magic 0x{magic:08x}")
        if version != VERSION:
            raise PacketError(Reason.BAD_VERSION, f"version {version}")
        if kind not in (Kind.REQUEST, Kind.REPLY):
            raise PacketError(Reason.BAD_KIND, f"kind {kind}")
        return cls(Kind(kind), token, sequence, sent_ns, flags, bytes(data[HEADER_SIZE:]))


def _header(data: bytes) -> tuple[int, int, int, int, int, int, int]:
    if len(data) < HEADER_SIZE:
        raise PacketError(Reason.TOO_SHORT, f"{len(data)} octets, the header has {HEADER_SIZE}")
    if len(data) > MAX_PACKET:
        raise PacketError(Reason.TOO_LONG, f"{len(data)} octets, at most {MAX_PACKET}")
    fields: tuple[int, int, int, int, int, int, int] = HEADER.unpack_from(data)
    return fields


def request(token: int, sequence: int, sent_ns: int) -> bytes:
    """The octets of a request without padding (the prober's hot path)."""
    return HEADER.pack(MAGIC, VERSION, Kind.REQUEST, 0, token, sequence, sent_ns)


def reply_for(data: bytes) -> bytes:
    """The reply a responder sends for request ``data``: the same octets with kind REPLY.

    Raises :class:`PacketError` when ``data`` is not a well-formed version-1
    request (a reply, an unknown version, garbage): the responder drops it.
    """
    magic, version, kind, _, _, _, _ = _header(data)
    if magic != MAGIC:
        raise PacketError(Reason.BAD_MAGIC, f"magic 0x{magic:08x}")
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"version {version}")
    if kind != Kind.REQUEST:
        raise PacketError(Reason.NOT_REQUEST if kind == Kind.REPLY else Reason.BAD_KIND, f"kind {kind}")
    return data[:_KIND_OFFSET] + bytes((Kind.REPLY,)) + data[_KIND_OFFSET + 1:]


def parse_echoed(data: bytes, kind: Kind) -> tuple[int, int, int]:
    """``(token, sequence, send time)`` of a returned probe whose kind must be ``kind``.

    UDP replies carry :attr:`Kind.REPLY`; ICMP echo replies carry the request
    header back unchanged (:attr:`Kind.REQUEST`). Raises :class:`PacketError`.
    """
    magic, version, got, _, token, sequence, sent_ns = _header(data)
    if magic != MAGIC:
        raise PacketError(Reason.BAD_MAGIC, f"magic 0x{magic:08x}")
    if version != VERSION:
        raise PacketError(Reason.BAD_VERSION, f"version {version}")
    if got != kind:
        raise PacketError(Reason.BAD_KIND, f"kind {got}, expected {kind}")
    return token, sequence, sent_ns
