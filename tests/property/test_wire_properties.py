"""Properties of the metric extended-community codec and the metric set mapping."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from dyncast_bgp.model import ComputeMetrics, MetricsView, StateFlag
from dyncast_bgp.wire.community import (
    BY_SUBTYPE,
    EXPERIMENTAL_TYPES,
    REGISTRY,
    UINT32_MAX,
    LinkBandwidth,
    MetricCommunity,
    MetricSpec,
    OpaqueCommunity,
    Source,
    Statistic,
    ValueFormat,
    WireError,
    decode,
)
from dyncast_bgp.wire.metrics import decode_metrics, encode_metrics, exabgp_list

FLOAT32_MAX = 3.4028234663852886e38
QUANTITIES = tuple(spec for spec in REGISTRY if spec.name not in ("state", "version"))
BY_NAME_FMT = {spec.name: spec.fmt for spec in REGISTRY}
UNKNOWN_SUBTYPES = sorted(set(range(256)) - set(BY_SUBTYPE))

# The header layout of DESIGN.md section 3, written out independently of the codec:
# field -> (mask over the 16-bit header, shift).
HEADER_FIELDS = {
    "level": (0xC000, 14),
    "fmt": (0x2000, 13),
    "unit": (0x1E00, 9),
    "source": (0x01C0, 6),
    "statistic": (0x0030, 4),
    "reserved": (0x000F, 0),
}

octets8 = st.binary(min_size=8, max_size=8)


def f32(value: float) -> float:
    """What a float32 on the wire gives back for ``value``."""
    result: float = struct.unpack("!f", struct.pack("!f", value))[0]
    return result


def upper_bound(spec: MetricSpec, fmt: ValueFormat) -> float:
    if spec.maximum is not None:
        return spec.maximum
    return float(UINT32_MAX) if fmt is ValueFormat.UINT32 else FLOAT32_MAX


@st.composite
def valid_value(draw: st.DrawFn, spec: MetricSpec, fmt: ValueFormat) -> float:
    value = draw(st.floats(min_value=spec.minimum, max_value=upper_bound(spec, fmt)))
    assume(fmt is ValueFormat.FLOAT32 or round(value) <= UINT32_MAX)
    return value


def expected(value: float, fmt: ValueFormat) -> float:
    return f32(value) if fmt is ValueFormat.FLOAT32 else round(value)


@st.composite
def metric_sets(draw: st.DrawFn) -> dict[str, float]:
    specs = draw(st.lists(st.sampled_from(QUANTITIES), unique=True))
    return {spec.name: draw(valid_value(spec, spec.fmt)) for spec in specs}


flag_sets = st.integers(min_value=0, max_value=UINT32_MAX).map(StateFlag)
versions = st.none() | st.integers(min_value=0, max_value=UINT32_MAX)

# ------------------------------------------------------------------ single community


@given(spec=st.sampled_from(REGISTRY), fmt=st.sampled_from(ValueFormat), data=st.data(),
       source=st.sampled_from(Source), statistic=st.sampled_from(Statistic),
       type_code=st.sampled_from(EXPERIMENTAL_TYPES))
def test_decode_of_encode_gives_the_value_back(*, spec: MetricSpec, fmt: ValueFormat, data: st.DataObject,
                                               source: Source, statistic: Statistic, type_code: int) -> None:
    value = data.draw(valid_value(spec, fmt))
    community = MetricCommunity.of(spec.name, value, fmt=fmt, source=source, statistic=statistic,
                                   type_code=type_code)
    decoded = decode(community.pack())
    assert decoded == community
    assert isinstance(decoded, MetricCommunity)
    assert decoded.value == expected(value, fmt)
    assert (decoded.type_code, decoded.subtype, decoded.fmt) == (type_code, spec.subtype, fmt)
    assert (decoded.level, decoded.unit) == (spec.level, spec.unit)
    assert (decoded.source, decoded.statistic, decoded.reserved) == (source, statistic, 0)
    assert decoded.problems() == []


@given(spec=st.sampled_from(REGISTRY), fmt=st.sampled_from(ValueFormat),
       value=st.floats(allow_nan=True, allow_infinity=True))
def test_values_the_metric_cannot_hold_are_rejected_by_name(spec: MetricSpec, fmt: ValueFormat,
                                                            value: float) -> None:
    fits = math.isfinite(value) and spec.minimum <= value <= upper_bound(spec, fmt)
    assume(not fits)
    with pytest.raises(WireError, match=spec.name) as caught:
        MetricCommunity.of(spec.name, value, fmt=fmt)
    assert caught.value.action == "reject"


@given(raw=octets8, metric_types=st.frozensets(st.integers(0, 255)))
def test_any_eight_octets_decode_and_pack_back(raw: bytes, metric_types: frozenset[int]) -> None:
    assert decode(raw).pack() == raw
    assert decode(raw, metric_types=metric_types).pack() == raw


@given(raw=st.binary(max_size=16).filter(lambda raw: len(raw) != 8))
def test_other_lengths_are_a_discard_error(raw: bytes) -> None:
    with pytest.raises(WireError) as caught:
        decode(raw)
    assert caught.value.action == "discard"


# ------------------------------------------------------------------ header bit layout


@given(field=st.sampled_from(sorted(HEADER_FIELDS)), header=st.integers(0, 0xFFFF), value=st.integers(0, 15))
def test_each_header_field_lands_in_its_bits(field: str, header: int, value: int) -> None:
    mask, shift = HEADER_FIELDS[field]
    value &= mask >> shift
    raw = bytes([0x83, 0x01]) + header.to_bytes(2, "big") + b"\0\0\0\0"
    base = decode(raw)
    assert isinstance(base, MetricCommunity)
    assert getattr(base, field) == (header & mask) >> shift
    changed = decode(raw[:2] + ((header & ~mask) | (value << shift)).to_bytes(2, "big") + raw[4:])
    assert isinstance(changed, MetricCommunity)
    assert getattr(changed, field) == value
    for other in set(HEADER_FIELDS) - {field}:  # no other field moved
        assert getattr(changed, other) == getattr(base, other)


@given(spec=st.sampled_from(REGISTRY), fmt=st.sampled_from(ValueFormat), source=st.sampled_from(Source),
       statistic=st.sampled_from(Statistic))
def test_encoded_header_fields_sit_in_their_bits(spec: MetricSpec, fmt: ValueFormat, source: Source,
                                                 statistic: Statistic) -> None:
    header = int.from_bytes(MetricCommunity.of(spec.name, 1, fmt=fmt, source=source,
                                               statistic=statistic).pack()[2:4], "big")
    wanted = {"level": spec.level, "fmt": fmt, "unit": spec.unit, "source": source,
              "statistic": statistic, "reserved": 0}
    for field, (mask, shift) in HEADER_FIELDS.items():
        assert (header & mask) >> shift == wanted[field], field


# ------------------------------------------------------------------ metric sets


@given(values=metric_sets(), flags=flag_sets, version=versions)
def test_decode_metrics_of_encode_metrics_round_trips(values: dict[str, float], flags: StateFlag,
                                                      version: int | None) -> None:
    communities = encode_metrics(values, flags=flags, version=version)
    received = [decode(community.pack()) for community in communities]
    decoded = decode_metrics(received)
    want = {name: expected(value, BY_NAME_FMT[name]) for name, value in values.items()}
    assert decoded.metrics == ComputeMetrics(values=MetricsView(want), flags=flags, version=version)
    assert decoded.problems == ()
    assert decoded.unknown == ()
    assert decoded.link_bandwidth is None


@given(values=metric_sets(), flags=flag_sets, version=versions,
       type_code=st.sampled_from(EXPERIMENTAL_TYPES))
def test_encode_metrics_shape(values: dict[str, float], flags: StateFlag, version: int | None,
                              type_code: int) -> None:
    communities = encode_metrics(values, flags=flags, version=version, type_code=type_code)
    subtypes = [community.subtype for community in communities]
    assert subtypes == sorted(subtypes)
    assert len(set(subtypes)) == len(subtypes) == len(values) + 1 + (version is not None)
    assert {community.type_code for community in communities} == {type_code}
    state = next(community for community in communities if community.name == "state")
    assert state.value == int(flags)
    text = exabgp_list(communities)
    assert text.startswith("[ ") and text.endswith(" ]")
    assert text[2:-2].split() == ["0x" + community.pack().hex() for community in communities]


@given(values=metric_sets(), chosen=st.sampled_from(QUANTITIES), source=st.sampled_from(Source))
def test_sources_are_applied_per_metric(values: dict[str, float], chosen: MetricSpec, source: Source) -> None:
    values[chosen.name] = chosen.minimum
    communities = encode_metrics(values, sources={chosen.name: source})
    for community in communities:
        spec = community.spec
        assert spec is not None
        assert community.source == (source if spec is chosen else spec.default_source)


@given(spec=st.sampled_from(QUANTITIES), value=st.floats(allow_nan=True, allow_infinity=True))
def test_encode_metrics_names_the_bad_metric(spec: MetricSpec, value: float) -> None:
    assume(not (math.isfinite(value) and spec.minimum <= value <= upper_bound(spec, spec.fmt)))
    with pytest.raises(WireError, match=spec.name):
        encode_metrics({spec.name: value})


# ------------------------------------------------------------------ receiving


@st.composite
def unknown_communities(draw: st.DrawFn) -> bytes:
    """Octets that are not a registry metric: unknown sub-type, or a type that is not a metric type."""
    tail = draw(st.binary(min_size=6, max_size=6))
    if draw(st.booleans()):
        return bytes([draw(st.sampled_from(EXPERIMENTAL_TYPES)), draw(st.sampled_from(UNKNOWN_SUBTYPES))]) + tail
    other = draw(st.integers(0, 255).filter(lambda t: t not in EXPERIMENTAL_TYPES and t != 0x40))
    return bytes([other, draw(st.integers(0, 255))]) + tail


@given(values=metric_sets(), extra=st.lists(unknown_communities(), max_size=6), data=st.data())
def test_unknown_communities_pass_through_verbatim_in_order(values: dict[str, float], extra: list[bytes],
                                                            data: st.DataObject) -> None:
    known = [community.pack() for community in encode_metrics(values)]
    mixed = data.draw(st.permutations(known + extra))
    decoded = decode_metrics([decode(raw) for raw in mixed])
    assert [community.pack() for community in decoded.unknown] == [raw for raw in mixed if raw in extra]
    assert decoded.problems == ()
    assert set(decoded.metrics.values) == set(values)


@given(raws=st.lists(octets8, max_size=12), metric_types=st.sampled_from([EXPERIMENTAL_TYPES, frozenset({0x83})]))
def test_decode_metrics_never_raises_and_only_uses_sound_metrics(raws: list[bytes],
                                                                 metric_types: frozenset[int] | range) -> None:
    communities = [decode(raw, metric_types=metric_types) for raw in raws]
    decoded = decode_metrics(communities)
    for name, value in decoded.metrics.values.items():
        spec = next(spec for spec in QUANTITIES if spec.name == name)
        assert math.isfinite(value)
        assert spec.minimum <= value <= (math.inf if spec.maximum is None else spec.maximum)
    carried = [c for c in communities if not isinstance(c, MetricCommunity) or c.spec is None]
    assert list(decoded.unknown) == carried
    if decoded.link_bandwidth is not None:
        assert decoded.link_bandwidth in communities
        assert math.isfinite(decoded.link_bandwidth.bytes_per_second)


@given(spec=st.sampled_from(QUANTITIES), data=st.data())
def test_the_first_of_duplicate_sub_types_wins(spec: MetricSpec, data: st.DataObject) -> None:
    first, second = (data.draw(valid_value(spec, spec.fmt)) for _ in range(2))
    communities = [MetricCommunity.of(spec.name, first), MetricCommunity.of(spec.name, second)]
    decoded = decode_metrics(communities)
    assert decoded.metrics.get(spec.name) == expected(first, spec.fmt)
    assert len(decoded.problems) == 1
    assert spec.name in decoded.problems[0] and "duplicate" in decoded.problems[0]


@given(spec=st.sampled_from(QUANTITIES), unit=st.integers(0, 15), data=st.data())
def test_a_malformed_metric_becomes_unknown_with_a_problem(spec: MetricSpec, unit: int,
                                                           data: st.DataObject) -> None:
    assume(unit != spec.unit)
    good = MetricCommunity.of(spec.name, data.draw(valid_value(spec, spec.fmt)))
    bad = decode(good.pack()[:2] + ((good.header & ~0x1E00) | unit << 9).to_bytes(2, "big") + good.pack()[4:])
    others = [MetricCommunity.of("version", 1)]
    decoded = decode_metrics([bad, *others])
    assert spec.name not in decoded.metrics.values
    assert decoded.metrics.version == 1  # the rest of the route is still used
    assert len(decoded.problems) == 1 and spec.name in decoded.problems[0]
    assert decoded.unknown == ()


@given(raw_value=st.integers(0, UINT32_MAX))
def test_state_and_version_sent_as_float32_must_be_whole_numbers(raw_value: int) -> None:
    community = MetricCommunity(type_code=0x83, subtype=0x31, level=0, fmt=1, unit=0, source=0, statistic=0,
                                raw_value=raw_value)
    value = community.value
    whole = math.isfinite(value) and value == int(value) and 0 <= value <= UINT32_MAX
    decoded = decode_metrics([community])
    assert decoded.metrics.version == (int(value) if whole else None)
    assert len(decoded.problems) == (0 if whole else 1)


@given(rates=st.lists(st.floats(min_value=0, max_value=FLOAT32_MAX), min_size=1, max_size=5),
       junk=st.lists(st.sampled_from([float("nan"), float("inf"), -1.0]), max_size=3))
def test_link_bandwidth_uses_the_lowest_usable_value(rates: list[float], junk: list[float]) -> None:
    good = [LinkBandwidth.of(65001, rate) for rate in rates]
    bad = [LinkBandwidth(asn=65001, raw_bandwidth=struct.unpack("!I", struct.pack("!f", rate))[0])
           for rate in junk]
    decoded = decode_metrics(bad + good)
    assert decoded.link_bandwidth is not None
    assert decoded.link_bandwidth.bytes_per_second == min(f32(rate) for rate in rates)
    assert len(decoded.problems) == len(bad)
    assert list(decoded.unknown) == bad + good  # all carried verbatim


def test_hand_built_unpackable_communities_are_problems_not_crashes() -> None:
    broken = MetricCommunity(type_code=0x83, subtype=0x01, level=0, fmt=1, unit=1, source=2, statistic=0,
                             raw_value=1 << 40)
    decoded = decode_metrics([broken, LinkBandwidth(asn=1 << 20, raw_bandwidth=0)])
    assert len(decoded.problems) == 2
    assert dict(decoded.metrics.values) == {}
    assert decoded.unknown == ()  # nothing that cannot be packed is offered for pass-through


def test_opaque_community_must_have_eight_octets() -> None:
    with pytest.raises(WireError):
        OpaqueCommunity(b"\x00" * 7)
