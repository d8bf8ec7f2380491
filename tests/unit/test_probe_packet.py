"""The probe packet codec and the ICMP echo framing (dyncast_bgp.probe.packet, .icmp)."""

from __future__ import annotations

import pytest

from dyncast_bgp.probe.icmp import checksum, echo_request, parse_echo_reply
from dyncast_bgp.probe.packet import (
    HEADER_SIZE,
    MAX_PACKET,
    Kind,
    PacketError,
    ProbePacket,
    Reason,
    parse_echoed,
    reply_for,
    request,
)

# magic "DCPB", version 1, kind 1 (request), flags 0, token, sequence, send time
GOLDEN_REQUEST = bytes.fromhex("44435042" "01" "01" "0000" "0a0b0c0d" "00000007" "0000000000002710")


def test_request_matches_the_documented_layout() -> None:
    assert request(0x0A0B0C0D, 7, 10_000) == GOLDEN_REQUEST
    assert HEADER_SIZE == 24


def test_unpack_reads_every_field() -> None:
    packet = ProbePacket.unpack(GOLDEN_REQUEST + b"pad")
    assert packet == ProbePacket(Kind.REQUEST, 0x0A0B0C0D, 7, 10_000, 0, b"pad")
    assert packet.pack() == GOLDEN_REQUEST + b"pad"


def test_reply_is_the_request_with_kind_flipped_and_never_longer() -> None:
    data = GOLDEN_REQUEST + bytes(range(40))
    reply = reply_for(data)
    assert len(reply) == len(data)
    assert reply[5] == Kind.REPLY
    assert reply[:5] == data[:5] and reply[6:] == data[6:]
    assert parse_echoed(reply, Kind.REPLY) == (0x0A0B0C0D, 7, 10_000)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", Reason.TOO_SHORT),
    (GOLDEN_REQUEST[:-1], Reason.TOO_SHORT),
    (GOLDEN_REQUEST + bytes(MAX_PACKET), Reason.TOO_LONG),
    (b"XCPB" + GOLDEN_REQUEST[4:], Reason.BAD_MAGIC),
    (GOLDEN_REQUEST[:4] + b"\x02" + GOLDEN_REQUEST[5:], Reason.BAD_VERSION),
    (GOLDEN_REQUEST[:5] + b"\x07" + GOLDEN_REQUEST[6:], Reason.BAD_KIND),
    (GOLDEN_REQUEST[:5] + b"\x02" + GOLDEN_REQUEST[6:], Reason.NOT_REQUEST),
])
def test_responder_refuses_everything_but_a_v1_request(data: bytes, reason: Reason) -> None:
    with pytest.raises(PacketError) as caught:
        reply_for(data)
    assert caught.value.reason is reason


def test_unpack_errors_are_typed() -> None:
    with pytest.raises(PacketError) as caught:
        ProbePacket.unpack(GOLDEN_REQUEST[:5] + b"\x09" + GOLDEN_REQUEST[6:])
    assert caught.value.reason is Reason.BAD_KIND
    with pytest.raises(PacketError) as caught:
        parse_echoed(GOLDEN_REQUEST, Kind.REPLY)
    assert caught.value.reason is Reason.BAD_KIND


@pytest.mark.parametrize("fields", [
    {"token": -1}, {"token": 1 << 32}, {"sequence": 1 << 32}, {"sent_ns": 1 << 64}, {"flags": 1 << 16},
    {"padding": bytes(MAX_PACKET)},
])
def test_packet_fields_are_range_checked(fields: dict[str, object]) -> None:
    values: dict[str, object] = {"kind": Kind.REQUEST, "token": 1, "sequence": 1, "sent_ns": 1} | fields
    with pytest.raises(ValueError):
        ProbePacket(**values)  # type: ignore[arg-type]


def test_icmpv4_echo_request_checksum_verifies() -> None:
    packet = echo_request(4, 0x1234, 0x10005, GOLDEN_REQUEST)
    assert packet[0] == 8 and packet[1] == 0
    assert packet[4:8] == bytes.fromhex("1234" "0005")  # sequence field: low 16 bits
    assert checksum(packet) == 0  # a correct checksum sums to zero
    assert packet[8:] == GOLDEN_REQUEST


def test_icmpv6_echo_request_leaves_the_checksum_to_the_kernel() -> None:
    packet = echo_request(6, 7, 9, b"x")
    assert packet == bytes.fromhex("80" "00" "0000" "0007" "0009") + b"x"


def test_checksum_of_odd_length() -> None:
    assert checksum(b"\x01") == 0xFEFF
    assert checksum(bytes.fromhex("0001f203f4f5f6f7")) == 0x220D  # RFC 1071 section 3 example, complemented


def test_echo_reply_parsing_with_and_without_ipv4_header() -> None:
    icmp = bytes.fromhex("00" "00" "0000" "abcd" "0001") + GOLDEN_REQUEST
    assert parse_echo_reply(4, icmp) == (0xABCD, GOLDEN_REQUEST)
    ipv4 = bytes([0x46]) + bytes(23)  # IHL 6: a 24-octet header with options
    assert parse_echo_reply(4, ipv4 + icmp, ip_header=True) == (0xABCD, GOLDEN_REQUEST)
    icmp6 = bytes.fromhex("81" "00" "ffff" "0102" "0003") + b"payload"
    assert parse_echo_reply(6, icmp6) == (0x0102, b"payload")


@pytest.mark.parametrize(("version", "data", "ip_header", "reason"), [
    (4, bytes.fromhex("0800000000000000"), False, Reason.NOT_ECHO_REPLY),  # an echo request
    (4, bytes.fromhex("0301000000000000"), False, Reason.NOT_ECHO_REPLY),  # destination unreachable
    (6, bytes.fromhex("8000000000000000"), False, Reason.NOT_ECHO_REPLY),
    (4, b"\x00\x00", False, Reason.TOO_SHORT),
    (4, b"\x60" + bytes(30), True, Reason.TOO_SHORT),  # not an IPv4 header
])
def test_echo_reply_parsing_rejects_other_messages(version: int, data: bytes, ip_header: bool,
                                                   reason: Reason) -> None:
    with pytest.raises(PacketError) as caught:
        parse_echo_reply(version, data, ip_header=ip_header)
    assert caught.value.reason is reason
