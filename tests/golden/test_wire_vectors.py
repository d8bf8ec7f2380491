"""Known-answer tests: the codec against hand-computed vectors in wire_vectors.json.

There is deliberately no ``--update`` flag. Golden files that a renderer
produces (nft rulesets, ExaBGP configs) are regenerated from the renderer and
reviewed as a diff; these vectors are the *specification* worked out by hand
from the bit layout, and regenerating them from the code under test would turn
every encoding bug into a passing test. When the format changes on purpose,
redo the arithmetic in the file (each vector shows its working).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import (
    REGISTRY,
    LinkBandwidth,
    MetricCommunity,
    OpaqueCommunity,
    Source,
    Statistic,
    ValueFormat,
    decode,
    from_u64,
    parse_hex,
    to_hex,
)
from dyncast_bgp.wire.metrics import decode_metrics, encode_metrics, exabgp_list

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "wire_vectors.json").read_text())


def _id(vector: dict[str, Any]) -> str:
    return f"{vector['name']}-{vector['format']}"


METRICS = pytest.mark.parametrize("vector", VECTORS["metrics"] + VECTORS["other_type"], ids=_id)


def _build(vector: dict[str, Any]) -> MetricCommunity:
    return MetricCommunity.of(vector["name"], vector["value"], fmt=ValueFormat[vector["format"].upper()],
                              source=Source[vector["source"].upper()],
                              statistic=Statistic[vector["statistic"].upper()],
                              type_code=vector.get("type", 0x83))


def test_every_registry_metric_has_a_vector_in_both_formats() -> None:
    covered = {(vector["name"], vector["format"]) for vector in VECTORS["metrics"]}
    assert covered == {(spec.name, fmt) for spec in REGISTRY for fmt in ("uint32", "float32")}


@METRICS
def test_encoding_gives_the_hand_computed_octets(vector: dict[str, Any]) -> None:
    assert to_hex(_build(vector)) == vector["hex"]


@METRICS
def test_decoding_the_octets_gives_the_fields(vector: dict[str, Any]) -> None:
    community = decode(parse_hex(vector["hex"]))
    assert isinstance(community, MetricCommunity)
    description = community.describe()
    assert description["metric"] == vector["name"]
    assert description["format"] == vector["format"]
    assert description["source"] == vector["source"]
    assert description["statistic"] == vector["statistic"]
    assert description["problems"] == []
    assert community.value == vector["decoded"]
    assert type(community.value) is type(vector["decoded"])  # int for uint32, float for float32
    assert community == _build(vector)


@pytest.mark.parametrize("vector", VECTORS["metrics"], ids=_id)
def test_header_octets_match_the_worked_bits(vector: dict[str, Any]) -> None:
    worked = int(vector["header_bits"].rsplit("= ", 1)[1], 16)
    assert f"{worked:04x}" == vector["hex"][6:10]
    assert _build(vector).header == worked


@pytest.mark.parametrize("vector", VECTORS["link_bandwidth"], ids=lambda v: str(v["asn"]))
def test_link_bandwidth(vector: dict[str, Any]) -> None:
    built = LinkBandwidth.of(vector["asn"], vector["bytes_per_second"])
    assert to_hex(built) == vector["hex"]
    decoded = decode(parse_hex(vector["hex"]))
    assert decoded == built
    assert isinstance(decoded, LinkBandwidth)
    assert decoded.describe()["bytes_per_second"] == vector["bytes_per_second"]
    assert decoded.describe()["asn"] == vector["asn"]


@pytest.mark.parametrize("vector", VECTORS["opaque"], ids=lambda v: v["hex"])
def test_unknown_communities_are_carried_verbatim(vector: dict[str, Any]) -> None:
    raw = parse_hex(vector["hex"])
    community = decode(raw)
    assert community.pack() == raw
    description = community.describe()
    assert (description["type"], description["subtype"]) == (vector["type"], vector["subtype"])
    if isinstance(community, OpaqueCommunity):
        assert description["kind"] == "opaque"
    else:
        assert isinstance(community, MetricCommunity)
        assert community.spec is None
    decoded = decode_metrics([community])
    assert decoded.unknown == (community,)
    assert decoded.problems == ()
    assert dict(decoded.metrics.values) == {}


def test_route_example_encodes_to_the_documented_list() -> None:
    route = VECTORS["route"]
    flags = StateFlag.NONE
    for name in route["flags"]:
        flags |= StateFlag[name.upper()]
    communities = encode_metrics(route["values"], flags=flags, version=route["version"])
    assert exabgp_list(communities) == route["exabgp"]


def test_route_example_decodes_back() -> None:
    route = VECTORS["route"]
    tokens = route["exabgp"].strip("[] ").split()
    decoded = decode_metrics(decode(parse_hex(token)) for token in tokens)
    assert dict(decoded.metrics.values) == route["values"]
    assert decoded.metrics.flags == StateFlag.DRAINING | StateFlag.CANARY
    assert decoded.metrics.version == route["version"]
    assert decoded.problems == ()


@pytest.mark.parametrize("vector", VECTORS["decimal"], ids=lambda v: v["decimal"])
def test_exabgp_json_decimal_form(vector: dict[str, Any]) -> None:
    assert from_u64(int(vector["decimal"])) == parse_hex(vector["hex"])
