"""The lab harness's readers of daemon output, on text captured from the real daemons here.

Captured from FRR 8.4.4, BIRD 2.0.12, GoBGP 3.10.0 and ExaBGP 5.0.15 (Debian
12) with the interop lab; trimmed to the fields that matter.
"""

from __future__ import annotations

import json

import pytest

from dyncast_bgp.lab.daemons import bird, frr, gobgp
from dyncast_bgp.lab.daemons.exabgp_json import read_view
from dyncast_bgp.lab.errors import ParseError
from dyncast_bgp.lab.rib import Route, select, show

LINKBW = bytes.fromhex("4004fde842c80000")  # AS 65000, 100 bytes/s
CPU = bytes.fromhex("8301200042160000")
SESSIONS = bytes.fromhex("8304400000000078")

BIRD_ROUTES = (
    "BIRD 2.0.12 ready.\n"
    "Table master4:\n"
    "198.51.100.7/32      unicast [peer_10_0_0_11 23:29:48.380 from 10.0.0.11] * (100) [AS65000i]\n"
    "\tvia 10.0.0.103 on eth0\n"
    "\tType: BGP univ\n"
    "\tBGP.next_hop: 10.0.0.103\n"
    "\tBGP.ext_community: " + " ".join(f"(generic, 0x832000{i:02x}, 0x{i:x})" for i in range(16)) + "\n"
    "\t\t(generic, 0x83200010, 0x10) (generic, 0x83200011, 0x11)\n"
    "203.0.113.10/32      unicast [peer_10_0_0_11 23:22:55.600 from 10.0.0.11] * (100) [AS65000i]\n"
    "\tvia 10.0.0.101 on eth0\n"
    "\tType: BGP univ\n"
    "\tBGP.origin: IGP\n"
    "\tBGP.as_path: 65000\n"
    "\tBGP.next_hop: 10.0.0.101\n"
    "\tBGP.local_pref: 100\n"
    "\tBGP.ext_community: (generic, 0x83012000, 0x42160000) (generic, 0x83044000, 0x78)\n"
    "                     unicast [peer_10_0_0_11 23:22:55.641 from 10.0.0.11] (100) [AS65000i]\n"
    "\tvia 10.0.0.102 on eth0\n"
    "\tType: BGP univ\n"
    "\tBGP.next_hop: 10.0.0.102\n"
    "\tBGP.ext_community: (rt, 65000, 1) (rt, 192.0.2.1, 1) (unknown 0x4004, 65000, 1120403456)\n"
    "10.0.0.0/24          unicast [direct1 23:22:53.288] * (240)\n"
    "\tdev eth0\n"
    "\tType: device univ\n"
)

BIRD_ROUTES6 = (
    "BIRD 2.0.12 ready.\n"
    "Table master6:\n"
    "2001:db8::10/128     unicast [peer_10_0_0_11 23:29:48.380 from 10.0.0.11] * (100) [AS65000i]\n"
    "\tvia fd00::101 on eth0\n"
    "\tType: BGP univ\n"
    "\tBGP.next_hop: fd00::101 fe80::1\n"
    "\tBGP.local_pref: 100\n"
    "\tBGP.ext_community: (generic, 0x83012000, 0x42160000)\n"
    "fd00::/64            unicast [direct1 23:29:47.238] * (240)\n"
    "\tdev eth0\n"
    "\tType: device univ\n"
)

BIRD_PROTOCOLS = (
    "BIRD 2.0.12 ready.\n"
    "Name       Proto      Table      State  Since         Info\n"
    "device1    Device     ---        up     23:29:47.237  \n"
    "peer_10_0_0_11 BGP        ---        up     23:29:48.028  Established   \n"
    "peer_10_0_0_12 BGP        ---        start  23:29:48.028  Passive\n"
)


def test_bird_routes_with_add_path_continuation_lines_and_typed_communities() -> None:
    routes = bird.parse_routes(BIRD_ROUTES)
    assert [(r.prefix, r.next_hop, r.peer) for r in routes] == [
        ("198.51.100.7/32", "10.0.0.103", "10.0.0.11"),
        ("203.0.113.10/32", "10.0.0.101", "10.0.0.11"),
        ("203.0.113.10/32", "10.0.0.102", "10.0.0.11")]
    assert routes[0].ext_communities == tuple(bytes.fromhex(f"832000{i:02x}000000{i:02x}") for i in range(18))
    assert routes[1].ext_communities == (CPU, SESSIONS)
    assert routes[2].ext_communities == (bytes.fromhex("0002fde800000001"), bytes.fromhex("0102c00002010001"),
                                         LINKBW)
    assert all(r.path_id is None for r in routes)


def test_bird_ipv6_route_takes_the_global_next_hop() -> None:
    (route,) = bird.parse_routes(BIRD_ROUTES6)
    assert (route.prefix, route.next_hop, route.ext_communities) == ("2001:db8::10/128", "fd00::101", (CPU,))


@pytest.mark.parametrize(("text", "raw"), [
    ("(generic, 0x83012000, 0x0)", "8301200000000000"),
    ("(rt, 65000, 4294967295)", "0002fde8ffffffff"),
    ("(ro, 65536, 7)", "0203000100000007"),  # a 4-octet AS key: type 0x02
    ("(rt, 10, 20)", "0002000a00000014"),  # ambiguous 0x00/0x02: read as 0x00, as BIRD's own config does
    ("(unknown 0x4102, 192.0.2.1, 9)", "4102c00002010009"),
    ("(unknown 0x4204, 65536, 9)", "4204000100000009"),
])
def test_bird_community_forms(text: str, raw: str) -> None:
    assert bird.parse_communities(text) == (bytes.fromhex(raw),)


def test_bird_community_that_cannot_be_read_says_which() -> None:
    with pytest.raises(ParseError, match=r"\(mac, 1, 2\)"):
        bird.parse_communities("(mac, 1, 2)")


def test_bird_protocols() -> None:
    assert bird.parse_protocols(BIRD_PROTOCOLS) == {"peer_10_0_0_11": True, "peer_10_0_0_12": False}
    assert bird.protocol_name("fd00::12") == "peer_fd00__12"


FRR_RIB = {
    "routerId": "10.0.0.3",
    "routes": {"203.0.113.10/32": [
        {"prefix": "203.0.113.10/32", "version": 3},
        {"valid": True, "extendedCommunity": {"string": "UNK:131, 1 UNK:131, 4"}, "addpathRxId": 1,
         "addpathTxId": 3, "nexthops": [{"ip": "10.0.0.101", "afi": "ipv4", "accessible": True, "used": True}],
         "peer": {"peerId": "10.0.0.11", "routerId": "10.0.0.11", "type": "internal"}},
        {"valid": True, "extendedCommunity": {"string": "UNK:131, 1"}, "addpathRxId": 2, "addpathTxId": 2,
         "nexthops": [{"ip": "10.0.0.102", "afi": "ipv4", "accessible": True, "used": True}],
         "peer": {"peerId": "10.0.0.11"}}],
        "2001:db8::10/128": [
        {"prefix": "2001:db8::10/128", "version": 1},
        {"extendedCommunity": {"string": "UNK:131, 1"}, "addpathRxId": 1,
         "nexthops": [{"ip": "fe80::1", "afi": "ipv6", "scope": "link-local"},
                      {"ip": "FD00::101", "afi": "ipv6", "scope": "global"}],
         "peer": {"peerId": "10.0.0.11"}}]},
}


def test_frr_rib_detail_json() -> None:
    routes = frr.parse_rib(FRR_RIB)
    assert [(r.prefix, r.next_hop, r.path_id, r.ext_communities, r.text) for r in routes] == [
        ("203.0.113.10/32", "10.0.0.101", 1, None, "UNK:131, 1 UNK:131, 4"),
        ("203.0.113.10/32", "10.0.0.102", 2, None, "UNK:131, 1"),
        ("2001:db8::10/128", "fd00::101", 1, None, "UNK:131, 1")]
    assert frr.parse_rib({}) == []


def test_frr_sessions() -> None:
    data = {"10.0.0.4": {"remoteAs": 65000, "bgpState": "Established"}, "10.0.0.11": {"bgpState": "Active"}}
    assert frr.parse_sessions(data) == {"10.0.0.4": True, "10.0.0.11": False}


GOBGP_RIB = {
    "203.0.113.10/32": [
        {"nlri": {"prefix": "203.0.113.10/32"}, "best": True, "attrs": [
            {"type": 1, "value": 0}, {"type": 3, "nexthop": "10.0.0.102"},
            {"type": 16, "value": [{"type": 0, "subtype": 2, "value": "65000:1"},
                                   {"type": 64, "subtype": 4, "asn": 65000, "bandwidth": 100},
                                   {"type": 131, "subtype": 1, "value": "ASAAQiAAAA=="}]}],
         "source-id": "10.0.0.11", "neighbor-ip": "10.0.0.11"},
        {"nlri": {"prefix": "203.0.113.10/32"}, "best": False, "attrs": [
            {"type": 3, "nexthop": "10.0.0.101"},
            {"type": 16, "value": [{"type": 131, "subtype": 1, "value": "ASAAQhYAAA=="},
                                   {"type": 131, "subtype": 4, "value": "BEAAAAAAeA=="}]}],
         "neighbor-ip": "10.0.0.11"}],
    "2001:db8::10/128": [
        {"nlri": {"prefix": "2001:db8::10/128"}, "attrs": [
            {"type": 16, "value": [{"type": 131, "subtype": 1, "value": "ASAAQhYAAA=="}]},
            {"type": 14, "nexthop": "fd00::101", "afi": 2, "safi": 1, "value": [{"prefix": "2001:db8::10/128"}]}],
         "neighbor-ip": "10.0.0.11"}],
}


def test_gobgp_rib_json() -> None:
    routes = gobgp.parse_rib(GOBGP_RIB)
    assert [(r.prefix, r.next_hop, r.path_id, r.peer) for r in routes] == [
        ("203.0.113.10/32", "10.0.0.102", None, "10.0.0.11"), ("203.0.113.10/32", "10.0.0.101", None, "10.0.0.11"),
        ("2001:db8::10/128", "fd00::101", None, "10.0.0.11")]
    assert routes[0].ext_communities == (bytes.fromhex("0002fde800000001"), LINKBW, bytes.fromhex("8301200042200000"))
    assert routes[1].ext_communities == (CPU, SESSIONS)
    assert routes[2].ext_communities == (CPU,)


@pytest.mark.parametrize(("item", "raw"), [
    ({"type": 1, "subtype": 2, "value": "192.0.2.1:1"}, "0102c00002010001"),
    ({"type": 2, "subtype": 2, "value": "1.0:7"}, "0202000100000007"),
    ({"type": 66, "subtype": 3, "value": "0.65000:7"}, "42030000fde80007"),
    ({"type": 64, "subtype": 4, "asn": 65000, "bandwidth": 1.25e8}, "4004fde84cee6b28"),
])
def test_gobgp_community_forms(item: dict[str, object], raw: str) -> None:
    assert gobgp.community(item) == bytes.fromhex(raw)


def test_gobgp_community_that_cannot_be_rebuilt_says_which() -> None:
    with pytest.raises(ParseError, match="color"):
        gobgp.community({"type": 3, "subtype": 11, "color": 5})


def test_gobgp_neighbors() -> None:
    data = [{"conf": {"neighbor_address": "10.0.0.11"}, "state": {"neighbor_address": "10.0.0.11",
                                                                   "session_state": 6}},
            {"conf": {"neighbor_address": "10.0.0.12"}, "state": {"session_state": 3}}]
    assert gobgp.parse_neighbors(data) == {"10.0.0.11": True, "10.0.0.12": False}


def _exa(kind: str, body: dict[str, object], peer: str = "10.0.0.11") -> str:
    neighbor = {"address": {"local": "10.0.0.2", "peer": peer}, "asn": {"local": 65002, "peer": 65000}, **body}
    return json.dumps({"exabgp": "5.0.0", "type": kind, "neighbor": neighbor})


def _update(update: dict[str, object], peer: str = "10.0.0.11") -> str:
    return _exa("update", {"direction": "receive", "message": {"update": update}}, peer)


EXT = [{"value": int.from_bytes(CPU, "big"), "string": ""}, {"value": int.from_bytes(SESSIONS, "big"), "string": ""}]


def test_exabgp_view_replays_states_announces_and_withdraws() -> None:
    lines = [
        _exa("state", {"state": "connected"}), _exa("state", {"state": "up"}),
        _update({"attribute": {"origin": "igp", "extended-community": EXT},
                 "announce": {"ipv4 unicast": {"10.0.0.101": [{"nlri": "203.0.113.10/32",
                                                               "path-information": "0.0.0.1"}]}}}),
        _update({"attribute": {"extended-community": EXT[:1]},
                 "announce": {"ipv4 unicast": {"10.0.0.102": [{"nlri": "203.0.113.10/32",
                                                               "path-information": "0.0.0.2"}]},
                              "ipv6 unicast": {"fd00::101": [{"nlri": "2001:db8::10/128"}]}}}),
        _exa("update", {"message": {"eor": {"afi": "ipv4", "safi": "unicast"}}}),
        "done",
        _update({"withdraw": {"ipv4 unicast": [{"nlri": "203.0.113.10/32", "path-information": "0.0.0.2"}]}}),
        _update({"announce": {"ipv4 unicast": {"10.0.0.109": ["198.51.100.1/32"]}}}, peer="10.0.0.12"),
    ]
    view = read_view(lines)
    assert view.established("10.0.0.11")
    assert [str(r) for r in view.routes("ipv4")] == [
        "203.0.113.10/32 via 10.0.0.101 path-id 1 [0x8301200042160000 0x8304400000000078]",
        "198.51.100.1/32 via 10.0.0.109 []"]
    assert [(r.prefix, r.next_hop, r.path_id, r.ext_communities) for r in view.routes("ipv6")] == [
        ("2001:db8::10/128", "fd00::101", None, (CPU,))]
    read_view([_exa("state", {"state": "down", "reason": "peer reset"})], view)
    assert not view.established("10.0.0.11")
    assert [r.peer for r in view.routes("ipv4")] == ["10.0.0.12"]
    assert view.routes("ipv6") == []


def test_exabgp_community_of_wrong_shape_is_a_parse_error() -> None:
    bad = _update({"attribute": {"extended-community": [{"value": "0x83"}]},
                   "announce": {"ipv4 unicast": {"10.0.0.101": [{"nlri": "203.0.113.10/32"}]}}})
    with pytest.raises(ParseError, match="extended community"):
        read_view([bad])


def test_select_and_show() -> None:
    routes = [Route("203.0.113.10/32", "10.0.0.102", 2, (CPU,)), Route("203.0.113.10/32", "10.0.0.101", 1, None,
                                                                      text="UNK:131, 1"),
              Route("203.0.113.11/32", "10.0.0.101", None, ())]
    chosen = select(routes, "203.0.113.10")
    assert [r.next_hop for r in chosen] == ["10.0.0.101", "10.0.0.102"]
    assert show(chosen) == ("203.0.113.10/32 via 10.0.0.101 path-id 1 [UNK:131, 1]\n"
                            "203.0.113.10/32 via 10.0.0.102 path-id 2 [0x8301200042160000]")
    assert show([]) == "(no routes)"
