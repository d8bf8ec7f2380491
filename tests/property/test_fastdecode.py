"""The router's fast metric decoder gives exactly what the general decoder gives, for any input."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES, REGISTRY, LinkBandwidth, decode
from dyncast_bgp.wire.fastdecode import _fast, decode_raw
from dyncast_bgp.wire.metrics import decode_metrics, encode_metrics


def general(raws: list[bytes]) -> object:
    return decode_metrics(decode(raw) for raw in raws)


# Mostly-valid metric communities (the fast path's case) mixed with arbitrary ones.
def metric_raw() -> st.SearchStrategy[bytes]:
    spec = st.sampled_from(REGISTRY)
    return st.builds(
        lambda s, fmt, source, stat, reserved, value: struct.pack(
            "!BBHI", 0x83, s.subtype, (int(s.level) << 14) | (fmt << 13) | (int(s.unit) << 9) | (source << 6)
            | (stat << 4) | reserved, value),
        spec, st.integers(0, 1), st.integers(0, 7), st.integers(0, 3), st.integers(0, 15),
        st.one_of(st.integers(0, 200), st.integers(0, 0xFFFFFFFF),
                  st.floats(width=32, allow_nan=True).map(lambda f: struct.unpack("!I", struct.pack("!f", f))[0])))


link_bandwidth = st.builds(lambda asn, bw: LinkBandwidth(asn, struct.unpack("!I", struct.pack("!f", bw))[0]).pack(),
                           st.integers(0, 0xFFFF), st.floats(width=32, allow_nan=True))
any_raw = st.one_of(metric_raw(), link_bandwidth, st.binary(min_size=8, max_size=8))


@settings(max_examples=1500)
@given(st.lists(any_raw, max_size=10))
def test_fast_path_equals_general_decoder(raws: list[bytes]) -> None:
    assert decode_raw(raws) == general(raws)


@given(st.dictionaries(st.sampled_from(["cpu_utilization", "active_sessions", "capacity", "service_delay"]),
                       st.integers(0, 100), max_size=4),
       st.sampled_from(list(StateFlag)), st.one_of(st.none(), st.integers(0, 1000)))
def test_agent_output_takes_the_fast_path_and_round_trips(values: dict[str, int], flags: StateFlag,
                                                          version: int | None) -> None:
    raws = [c.pack() for c in encode_metrics(values, flags=flags, version=version)]
    assert _fast(raws, EXPERIMENTAL_TYPES) is not None  # what agents send never needs the slow path
    decoded = decode_raw(raws)
    assert decoded == general(raws)
    assert dict(decoded.metrics.values) == values and decoded.metrics.flags == flags
    assert decoded.metrics.version == version and not decoded.problems
