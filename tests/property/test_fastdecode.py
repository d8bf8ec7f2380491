"""The router's fast metric decoder gives exactly what the general decoder gives, for any input.

The oracle is computed here, from :mod:`dyncast_bgp.wire.community` and :mod:`dyncast_bgp.wire.metrics`
alone, so a fast path that drifts from the general decoder fails (results, problems and errors alike).
"""

from __future__ import annotations

import struct
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire import fastdecode
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES, REGISTRY, LinkBandwidth, decode
from dyncast_bgp.wire.fastdecode import decode_raw
from dyncast_bgp.wire.metrics import DecodedMetrics, decode_metrics, encode_metrics


def general(raws: list[bytes], metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> DecodedMetrics:
    return decode_metrics(decode(raw, metric_types=metric_types) for raw in raws)


def outcome(func: object, *args: object, **kwargs: object) -> tuple[str, object]:
    """What a call gives: its result, or its error's type and message (so errors are compared too)."""
    assert callable(func)
    try:
        return ("result", func(*args, **kwargs))
    except Exception as exc:  # any error: it must be the same one
        return ("error", (type(exc), str(exc)))


def same_as_general(raws: list[bytes], metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> None:
    """``decode_raw`` gives what the general decoder gives, the first time (heads not planned yet: the
    general decoder reads them) and the times after (a plan is made and used)."""
    for _ in range(3):
        fast = outcome(decode_raw, raws, metric_types=metric_types)
        assert fast == outcome(general, raws, metric_types)
        exactly_alike(fast, raws, metric_types)


def exactly_alike(fast: tuple[str, object], raws: list[bytes], metric_types: range | frozenset[int]) -> None:
    """Equal is not enough: the same types and the same order too (a MetricsView iterates sorted by name)."""
    if fast[0] == "result":
        result = fast[1]
        assert isinstance(result, DecodedMetrics)
        expected = general(raws, metric_types)
        assert list(result.metrics.values.items()) == list(expected.metrics.values.items())
        assert all(type(value) is float for value in result.metrics.values.values())
        assert type(result.metrics.flags) is StateFlag
        assert type(result.metrics.version) is type(expected.metrics.version)
        assert hash(result.metrics.values) == hash(expected.metrics.values)
        assert repr(result) == repr(expected)


def header(level: int, fmt: int, unit: int, *, source: int, stat: int, reserved: int) -> int:
    return (level << 14) | (fmt << 13) | (unit << 9) | (source << 6) | (stat << 4) | reserved


# Mostly-valid metric communities (the fast path's case) mixed with arbitrary ones.
def metric_raw(types: st.SearchStrategy[int] | None = None) -> st.SearchStrategy[bytes]:
    spec = st.sampled_from(REGISTRY)
    return st.builds(
        lambda type_code, s, fmt, source, stat, reserved, value: struct.pack(
            "!BBHI", type_code, s.subtype,
            header(int(s.level), fmt, int(s.unit), source=source, stat=stat, reserved=reserved), value),
        st.just(0x83) if types is None else types, spec, st.integers(0, 1), st.integers(0, 7), st.integers(0, 3),
        st.integers(0, 15),
        st.one_of(st.integers(0, 200), st.integers(0, 0xFFFFFFFF),
                  st.floats(width=32, allow_nan=True).map(lambda f: struct.unpack("!I", struct.pack("!f", f))[0])))


link_bandwidth = st.builds(lambda asn, bw: LinkBandwidth(asn, struct.unpack("!I", struct.pack("!f", bw))[0]).pack(),
                           st.integers(0, 0xFFFF), st.floats(width=32, allow_nan=True))
unknown_subtype = st.builds(lambda subtype, rest: bytes([0x83, subtype]) + rest,
                            st.integers(0, 0xFF).filter(lambda s: s not in {spec.subtype for spec in REGISTRY}),
                            st.binary(min_size=6, max_size=6))
any_raw = st.one_of(metric_raw(), metric_raw(st.integers(0x80, 0x90)), link_bandwidth, unknown_subtype,
                    st.binary(min_size=8, max_size=8))


@settings(max_examples=1500)
@given(st.lists(any_raw, max_size=10))
def test_fast_path_equals_general_decoder(raws: list[bytes]) -> None:
    same_as_general(raws)


@settings(max_examples=300)
@given(st.lists(st.one_of(any_raw, st.binary(max_size=12)), max_size=6))
def test_wrong_lengths_raise_what_the_general_decoder_raises(raws: list[bytes]) -> None:
    same_as_general(raws)


@given(st.lists(any_raw, max_size=8), st.one_of(st.just(range(0x80, 0x84)), st.frozensets(st.integers(0, 0xFF))))
def test_other_metric_types(raws: list[bytes], metric_types: range | frozenset[int]) -> None:
    same_as_general(raws, metric_types)


@given(st.lists(metric_raw(), min_size=1, max_size=8), st.data())
def test_a_plan_is_per_set_of_heads_not_per_path(raws: list[bytes], data: st.DataObject) -> None:
    """The same heads with other values (the plan is reused) still decode as the general decoder does."""
    same_as_general(raws)
    values = data.draw(st.lists(st.integers(0, 0xFFFFFFFF), min_size=len(raws), max_size=len(raws)))
    same_as_general([raw[:4] + value.to_bytes(4, "big") for raw, value in zip(raws, values, strict=True)])


def test_a_zero_community_in_front_is_another_key() -> None:
    """Heads looked up as one integer: a leading all-zero community must not alias the shorter list."""
    one = [c.pack() for c in encode_metrics({"capacity": 5})]
    same_as_general(one)
    same_as_general([bytes(8), *one])
    assert decode_raw([bytes(8), *one]).unknown == (decode(bytes(8)),)


@given(st.dictionaries(st.sampled_from(["cpu_utilization", "active_sessions", "capacity", "service_delay",
                                        "error_rate", "overall_score"]),
                       st.integers(0, 10), max_size=6),
       st.sampled_from(list(StateFlag)), st.one_of(st.none(), st.integers(0, 1000)),
       st.lists(st.one_of(link_bandwidth.filter(lambda raw: 0 <= LinkBandwidth(0, int.from_bytes(raw[4:], "big"))
                                                .bytes_per_second < float("inf")),
                          unknown_subtype), max_size=2))
def test_agent_output_takes_the_fast_path_and_round_trips(values: dict[str, int], flags: StateFlag,
                                                          version: int | None, carried: list[bytes]) -> None:
    raws = [c.pack() for c in encode_metrics(values, flags=flags, version=version)] + carried
    decode_raw(raws)
    decode_raw(raws)  # heads seen twice: planned
    with mock.patch.object(fastdecode, "_general", side_effect=AssertionError("took the general decoder")):
        decoded = decode_raw(raws)  # what agents send never needs the slow path, with what else is carried
    assert decoded == general(raws)
    assert dict(decoded.metrics.values) == values and decoded.metrics.flags == flags
    assert decoded.metrics.version == version and not decoded.problems


@pytest.mark.parametrize("raws", [
    [b"\x83\x01\x02\x00\x42\xc8\x00\x00", b"\x83\x01\x02\x00\x42\xc8\x00\x00"],  # duplicate cpu_utilization
    [b"\x83\x01\x22\x00\x7f\xc0\x00\x00"],  # cpu_utilization NaN
    [b"\x83\x30\x20\x00\x3f\xc0\x00\x00"],  # state as float 1.5
    [b"\x40\x04\x00\x01\xff\x80\x00\x00"],  # link bandwidth -inf
    [b"\x83\x06\xc6\x00\x00\x00\x00\x01"],  # capacity with a wrong level
])
def test_problems_are_worded_by_the_general_decoder(raws: list[bytes]) -> None:
    decoded = decode_raw(raws)
    assert decoded.problems and decoded == general(raws)
