"""Reading our objects back from real kernel listings (captured: tests/golden/dataplane/readback_*)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyncast_bgp.dataplane.conntrack import count_marks, deleted
from dyncast_bgp.dataplane.fileformat import parse
from dyncast_bgp.dataplane.layout import Layout
from dyncast_bgp.dataplane.plan import Builder, empty_state
from dyncast_bgp.dataplane.readback import (
    ReadbackError,
    assemble,
    parse_key,
    parse_nft,
    parse_rules,
    parse_tunnels,
)
from dyncast_bgp.dataplane.state import KernelState, Meta

HERE = Path(__file__).resolve().parents[1] / "golden" / "dataplane"
LAYOUT = Layout()


def listing(name: str) -> str:
    return (HERE / name).read_text()


def captured_state(table: str | None = None) -> KernelState:
    rules = {4: parse_rules(listing("readback_rules4.json"), LAYOUT), 6: parse_rules(listing("readback_rules6.json"),
                                                                                       LAYOUT)}
    return assemble(parse_nft(table or listing("readback_table.json"), LAYOUT), rules, (), LAYOUT)


def test_readback_matches_what_was_installed() -> None:
    expected = Builder(LAYOUT).build(parse(listing("readback_source.yml")), empty_state(), Meta(saved_src_valid_mark=1))
    got = captured_state()
    assert got.table and not got.stale
    assert {s: e.nft_view() for s, e in got.services.items()} == {s: e.nft_view()
                                                                   for s, e in expected.services.items()}
    assert got.rules == expected.rules and got.guards == frozenset({4, 6})
    assert got.meta == Meta(schema=1, saved_src_valid_mark=1)
    assert {e.key: e.name for e in got.instances()} == {e.key: e.name for e in expected.instances()}
    assert all(entry.forwarding is None for entry in got.instances())  # routes are re-asserted, not read


def test_a_chain_nobody_enters_and_its_instances_are_stale() -> None:
    data = json.loads(listing("readback_table.json"))
    for item in data["nftables"]:
        if item.get("map", {}).get("name") == "dc_host4":
            item["map"]["elem"] = [e for e in item["map"]["elem"] if e[0] != "203.0.113.10"]
    got = captured_state(json.dumps(data))
    assert "dc_s_203_0_113_10_32" in got.stale.chains
    assert {slot for slot, _ in got.stale.registry} == {2, 3}
    assert len(got.services) == 3


def test_tables_of_other_schemas_or_owners_are_refused() -> None:
    text = listing("readback_table.json")
    with pytest.raises(ReadbackError, match="schema 2"):
        parse_nft(text.replace("schema=1", "schema=2"), LAYOUT)
    data = json.loads(text)
    data["nftables"] = [item for item in data["nftables"] if "set" not in item]
    with pytest.raises(ReadbackError, match="not created by dyncast"):
        assemble(parse_nft(json.dumps(data), LAYOUT), {}, (), LAYOUT)


def test_rules_of_others_are_ignored() -> None:
    text = json.dumps([
        {"priority": 10001, "src": "all", "fwmark": "0x44430001", "table": "1145241601"},
        {"priority": 10001, "src": "all", "fwmark": "0x44430002", "table": "100"},  # a table not ours
        {"priority": 10001, "src": "all", "fwmark": "0x12", "table": "1145241603"},  # a mark not ours
        {"priority": 10001, "src": "10.0.0.0/8", "fwmark": "0x44430004", "table": "1145241604"},
        {"priority": 500, "src": "all", "fwmark": "0x44430005", "table": "1145241605"},
        {"priority": 10002, "src": "all", "nop": None},
    ])
    got = parse_rules(text, LAYOUT)
    assert got.slots == frozenset({1}) and got.nop and not got.goto


def test_half_a_guard_pair_is_stale() -> None:
    state = assemble(None, {4: parse_rules(json.dumps([{"priority": 10002, "src": "all", "nop": None}]), LAYOUT)},
                     (), LAYOUT)
    assert state.guards == frozenset() and state.stale.guards == frozenset({(4, "nop")})


def test_tunnels_are_recognised_by_name_and_kind() -> None:
    # iproute2's JSON for an ipip device (hand-written: this machine's kernel has no ipip)
    text = json.dumps([
        {"ifname": "dc97986cf18b", "linkinfo": {"info_kind": "ipip", "info_data": {
            "proto": "ipip", "remote": "198.51.100.11", "local": "198.51.100.1", "ttl": 64}}},
        {"ifname": "dc0123456789", "linkinfo": {"info_kind": "veth"}},
        {"ifname": "gre-site-b", "linkinfo": {"info_kind": "gre", "info_data": {"remote": "198.51.100.12"}}},
        {"ifname": "lo"},
    ])
    assert [(t.name, t.kind, str(t.remote)) for t in parse_tunnels(text)] == [
        ("dc97986cf18b", "ipip", "198.51.100.11")]


def test_conntrack_counts_live_entries_per_mark() -> None:
    text = listing("readback_conntrack4.txt") + (
        "tcp      6 431999 ESTABLISHED src=10.0.0.2 dst=203.0.113.10 sport=1 dport=9000 src=203.0.113.10 "
        "dst=10.0.0.2 sport=9000 dport=1 [ASSURED] mark=1145241602 use=1\n"
        "udp      17 29 src=10.0.0.2 dst=203.0.113.10 sport=5 dport=9000 src=203.0.113.10 dst=10.0.0.2 sport=9000 "
        "dport=5 mark=1145241602 use=1\n")
    assert "TIME_WAIT" in text
    assert count_marks(text) == {0x44430002: 2}


def test_conntrack_delete_counts() -> None:
    assert deleted(0, "conntrack v1.4.7 (conntrack-tools): 3 flow entries have been deleted.") == 3
    assert deleted(1, "conntrack v1.4.7 (conntrack-tools): 0 flow entries have been deleted.") == 0
    assert deleted(1, "conntrack v1.4.7 (conntrack-tools): Operation failed: invalid parameters") is None


@pytest.mark.parametrize("text", ["203.0.113.10/32@192.0.2.1", "2001:db8::/64@2001:db8::1#42"])
def test_keys_round_trip(text: str) -> None:
    assert str(parse_key(text)) == text


def test_bad_keys_are_refused() -> None:
    with pytest.raises(ReadbackError):
        parse_key("203.0.113.10/32@not-an-address")
