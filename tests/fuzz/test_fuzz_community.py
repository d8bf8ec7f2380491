"""Fuzz the community decoders: any 8 octets decode and pack back; other lengths raise WireError (discard);
decode_metrics never raises; the fast path equals the general decoder; parse_hex words its errors.

Inputs are near-valid metric communities (registry sub-types with one header field
or the value off: NaN, infinities, negative zero, denormals, huge uint32), the
link-bandwidth community with odd floats, duplicates and unknown sub-types, plus
arbitrary octets and lengths.
"""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.wire.community import REGISTRY, WireError, decode, from_u64
from tests.fuzz.targets import community

FLOAT_BITS = [0x7FC00000, 0xFFC00000, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x7F7FFFFF, 0x42C80001,
              0x42C80000, 0x41200001, 0xBF800000, 0xFFFFFFFF, 0]


@st.composite
def near_metrics(draw: st.DrawFn) -> bytes:
    spec = draw(st.sampled_from(REGISTRY))
    level, fmt, unit = int(spec.level), int(spec.fmt), int(spec.unit)
    source, statistic, reserved = 2, 0, 0
    off = draw(st.sampled_from(["none", "level", "fmt", "unit", "source", "statistic", "reserved", "type"]))
    level = draw(st.integers(0, 3)) if off == "level" else level
    fmt = 1 - fmt if off == "fmt" else fmt
    unit = draw(st.integers(0, 15)) if off == "unit" else unit
    source = draw(st.integers(0, 7)) if off == "source" else source
    statistic = draw(st.integers(0, 3)) if off == "statistic" else statistic
    reserved = draw(st.integers(0, 15)) if off == "reserved" else reserved
    type_code = draw(st.integers(0, 255)) if off == "type" else draw(st.sampled_from([0x83, 0x8F]))
    value = draw(st.sampled_from(FLOAT_BITS) | st.integers(0, 0xFFFFFFFF) | st.integers(0, 101)
                 | st.floats(width=32).map(lambda f: struct.unpack("!I", struct.pack("!f", f))[0]))
    header = (level << 14) | (fmt << 13) | (unit << 9) | (source << 6) | (statistic << 4) | reserved
    return struct.pack("!BBHI", type_code, spec.subtype, header, value)


link_bandwidth = st.builds(lambda asn, bits: struct.pack("!BBHI", 0x40, 0x04, asn, bits),
                           st.integers(0, 0xFFFF), st.sampled_from(FLOAT_BITS) | st.integers(0, 0xFFFFFFFF))
any_community = near_metrics() | link_bandwidth | st.binary(min_size=8, max_size=8)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_community, max_size=12), st.binary(max_size=7))
def test_routes_of_communities(raws: list[bytes], tail: bytes) -> None:
    community(b"".join(raws) + tail)


@settings(max_examples=150, deadline=None)
@given(st.lists(any_community, min_size=1, max_size=4).map(lambda raws: raws * 3))
def test_duplicates_first_one_wins(raws: list[bytes]) -> None:
    community(b"".join(raws))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=20))
def test_wrong_lengths_are_discarded(raw: bytes) -> None:
    if len(raw) == 8:
        assert decode(raw).pack() == raw
        return
    try:
        decode(raw)
    except WireError as error:
        assert error.action == "discard"
    else:
        raise AssertionError(f"{len(raw)} octets decoded")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.integers(), st.floats(), st.booleans(), st.text(max_size=5), st.none()))
def test_from_u64_only_takes_unsigned_64_bit_integers(value: object) -> None:
    try:
        raw = from_u64(value)  # type: ignore[arg-type]
    except WireError as error:
        assert error.action == "discard"
    else:
        assert isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 64 and len(raw) == 8


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.binary(min_size=8, max_size=8).map(lambda raw: "0x" + raw.hex()),
    st.text(alphabet="0123456789abcdefABCDEFxX g\u0660\uff10", max_size=20).map(lambda t: "0x" + t),
    st.sampled_from(["0x", "0x" + "0" * 15, "0x" + "0" * 17, "0X8301228042160000", "0x83012280421600\u0660\u0660"])),
    min_size=1, max_size=6))
def test_hex_tokens(tokens: list[str]) -> None:
    community(" ".join(tokens).encode())
