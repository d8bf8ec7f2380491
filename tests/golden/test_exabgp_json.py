"""The ExaBGP JSON parser against real ExaBGP 5.0.15 and 4.2.25 output.

The inputs in tests/golden/exabgp_json/ were captured by
scripts/capture_exabgp_json.py (see the README there): an ExaBGP 5.0 announcer
replays a fixed plan of commands to a receiving ExaBGP 5.0 or 4.2, with and
without ADD-PATH. The expected values below are what that plan announced.
Lines are found by their content, not their position, so a re-capture (other
timestamps, keepalives) keeps the tests valid.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.wire.community import LinkBandwidth, MetricCommunity, OpaqueCommunity
from dyncast_bgp.wire.exabgp_json import (
    EndOfRib,
    Event,
    ExabgpJsonError,
    Ignored,
    Notification,
    PeerState,
    Route,
    RouteKey,
    RouteUpdate,
    SessionState,
    Shutdown,
    parse_line,
)

GOLDEN = Path(__file__).parent / "exabgp_json"
CAPTURES = ("v50_basic", "v50_addpath", "v42_basic", "v42_addpath")
PEER = ipaddress.ip_address("127.0.83.1")

# The communities of the capture plan (scripts/capture_exabgp_json.py), as octets.
CPU = bytes.fromhex("83012280422a0000")  # cpu_utilization 42.5 %
SCORE = bytes.fromhex("8320a0c040f00000")  # overall_score 7.5
SCORE10 = bytes.fromhex("8320a0c041200000")  # overall_score 10.0
SESSIONS = bytes.fromhex("8304048000000011")  # active_sessions 17
DRAINING = bytes.fromhex("8330000000000001")  # state flags: draining
CAPACITY = bytes.fromhex("83060600000003e8")  # capacity 1000/s
UNKNOWN = bytes.fromhex("837f0000deadbeef")  # unknown sub-type 0x7f
LINK_BW = bytes.fromhex("4004fde84b3ebc20")  # link bandwidth AS 65000, 12.5e6 bytes/s
TARGET = bytes.fromhex("0002fde900000007")  # route target 65001:7


def load(name: str) -> list[str]:
    return (GOLDEN / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()


def events(name: str) -> list[Event]:
    return [parse_line(line) for line in load(name)]


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def expected_phase1(addpath: bool) -> list[RouteUpdate | EndOfRib]:
    """The unicast events the plan's first phase produces, in order.

    Basic captures are eBGP (65001 -> 65002): the 5.0 announcer prepends its AS
    where the command gave no path, and LOCAL_PREF is not sent. ADD-PATH
    captures are iBGP (65001 <-> 65001): empty paths stay empty and LOCAL_PREF
    defaults to 100. ExaBGP sends extended communities sorted by value.
    """
    own: tuple[int, ...] = () if addpath else (65001,)
    pref = (lambda value: value) if addpath else (lambda value: None)

    def pid(value: int) -> int:
        return value if addpath else 0

    def route(prefix: str, next_hop: str, path_id: int = 0, **attrs: object) -> Route:
        fields: dict[str, object] = {"as_path": own, "local_pref": pref(100), "origin": "igp"}
        fields.update(attrs)
        return Route(net(prefix), addr(next_hop), pid(path_id), **fields)  # type: ignore[arg-type]

    def update(*announced: Route, withdrawn: Iterable[RouteKey] = ()) -> RouteUpdate:
        return RouteUpdate(PEER, tuple(announced), tuple(withdrawn))

    grouped: dict[str, Any] = {"as_path": (65001, 65100), "med": 10, "local_pref": pref(150),
                               "ext_raw": SCORE}
    slash48: dict[str, Any] = {"as_path": (65001, 65300), "med": 30, "local_pref": pref(300)}
    return [
        update(route("203.0.113.10/32", "192.0.2.11", 1, ext_raw=b"".join((CPU, SESSIONS, SCORE)))),
        update(route("203.0.113.10/32", "192.0.2.12", 2, ext_raw=b"".join((LINK_BW, CAPACITY, DRAINING, UNKNOWN)))),
        update(*(route(f"203.0.113.{host}/32", "192.0.2.21", 3, **grouped) for host in (20, 21, 22))),
        update(route("2001:db8:cafe::10/128", "2001:db8::11", 1, as_path=(65001, 65200), med=20,
                     local_pref=pref(200), ext_raw=b"".join((CPU, SCORE)))),
        update(route("2001:db8:cafe::10/128", "2001:db8::12", 2, ext_raw=SESSIONS)),
        update(route("203.0.113.30/32", "192.0.2.31", 4_000_000_000, origin="incomplete",
                     ext_raw=b"".join((TARGET, SCORE)))),
        update(route("2001:db8:cafe::/48", "2001:db8::21", **slash48)),
        update(route("2001:db8:beef::/48", "2001:db8::21", **slash48)),
        update(route("203.0.113.40/32", "192.0.2.41", 5, as_path=(65001, 4_200_000_001), as_set=(65301, 65302),
                     ext_raw=SCORE10)),
        update(withdrawn=[RouteKey(net("203.0.113.21/32"), pid(3))]),
        update(withdrawn=[RouteKey(net("2001:db8:cafe::10/128"), pid(2))]),
        update(withdrawn=[RouteKey(net("203.0.113.20/32"), pid(3)), RouteKey(net("203.0.113.22/32"), pid(3))]),
        EndOfRib(PEER, "ipv4 unicast"),
        EndOfRib(PEER, "ipv6 unicast"),
        update(route("198.51.100.255/32", "192.0.2.254")),
    ]


def rib_of(updates: Iterable[Event], rib: dict[RouteKey, Route] | None = None) -> dict[RouteKey, Route]:
    """A minimal Adj-RIB-In: withdrawn first, then announced, keyed by (prefix, path id)."""
    table = dict(rib or {})
    for event in updates:
        if isinstance(event, RouteUpdate):
            for key in event.withdrawn:
                table.pop(key, None)
            for route in event.announced:
                table[route.key] = route
    return table


def sessions(evs: list[Event]) -> list[list[Event]]:
    """The events of each session: from a PeerState up to the next PeerState down."""
    out: list[list[Event]] = []
    current: list[Event] | None = None
    for event in evs:
        if isinstance(event, PeerState) and event.state is SessionState.UP:
            current = []
        elif isinstance(event, PeerState) and event.state is SessionState.DOWN:
            if current is not None:
                out.append(current)
            current = None
        elif current is not None:
            current.append(event)
    return out


def route_events(evs: Iterable[Event]) -> list[Event]:
    return [event for event in evs if isinstance(event, RouteUpdate | EndOfRib)]


# ------------------------------------------------------------------ every line


@pytest.mark.parametrize("name", CAPTURES)
def test_every_captured_line_parses(name: str) -> None:
    lines = load(name)
    assert len(lines) > 40
    evs = [parse_line(line) for line in lines]
    kinds = {type(event) for event in evs}
    assert {RouteUpdate, EndOfRib, PeerState, Notification, Shutdown, Ignored} <= kinds
    assert all(event.peer == PEER for event in evs if isinstance(event, RouteUpdate | EndOfRib | PeerState))
    assert isinstance(evs[-1], Shutdown)


@pytest.mark.parametrize("name", CAPTURES)
def test_session_lifecycle(name: str) -> None:
    states = [(event.state, event.reason) for event in events(name) if isinstance(event, PeerState)]
    assert [state for state, _ in states] == [SessionState.CONNECTED, SessionState.UP, SessionState.DOWN] * 3
    reasons = [reason for state, reason in states if state is SessionState.DOWN]
    if name.startswith("v50"):
        assert reasons == ["notification received (6,4)", "notification received (6,3)", "closing connection"]
    else:  # 4.2 cannot decode 5.0's Cease/Administrative Reset and resets the session itself
        assert reasons == [
            'peer reset, message (notification sent (1,0)) error(Message header error / Unspecific / '
            'can not decode update message of type "3")',
            "peer reset, message (notification received (6,3)) error(Cease / Peer De-configured / "
            "Peer De-configured)",
            "peer reset, message (closing connection) error(the TCP connection was closed by the remote end)",
        ]
    assert all(reason is None for state, reason in states if state is not SessionState.DOWN)


@pytest.mark.parametrize("name", CAPTURES)
def test_phase1_events_exactly(name: str) -> None:
    first = sessions(events(name))[0]
    got = route_events(first)
    initial_eors = [EndOfRib(PEER, "ipv4 unicast"), EndOfRib(PEER, "ipv6 unicast")]
    assert got[:2] == initial_eors  # the announcer's empty table, then the plan
    assert got[2:] == expected_phase1(addpath=name.endswith("addpath"))


@pytest.mark.parametrize("name", CAPTURES)
def test_replays_after_reconnect_rebuild_the_same_table(name: str) -> None:
    first, second, third = sessions(events(name))
    table = rib_of(first)
    addpath = name.endswith("addpath")
    if addpath:  # both paths of the same service prefix survive side by side
        assert {key.path_id for key in table if key.prefix == net("203.0.113.10/32")} == {1, 2}
    else:  # without ADD-PATH the second announcement replaced the first
        assert table[RouteKey(net("203.0.113.10/32"))].next_hop == addr("192.0.2.12")
    assert len(table) == (8 if addpath else 6)
    assert rib_of(second[: _first_eor_pair(second)]) == table
    after_withdraws = rib_of(second, table)
    assert set(after_withdraws) == set(table) - {RouteKey(net("2001:db8:cafe::/48")),
                                                  RouteKey(net("2001:db8:beef::/48"))}
    assert rib_of(third) == after_withdraws


def _first_eor_pair(evs: list[Event]) -> int:
    positions = [index for index, event in enumerate(evs) if isinstance(event, EndOfRib)]
    return positions[1] + 1


@pytest.mark.parametrize("pair", [("v50_basic", "v42_basic"), ("v50_addpath", "v42_addpath")])
def test_42_and_50_captures_yield_the_same_routes(pair: tuple[str, str]) -> None:
    v50, v42 = (route_events(events(name)) for name in pair)
    assert v50 == v42
    assert sum(len(event.announced) for event in v50 if isinstance(event, RouteUpdate)) > 20


# ------------------------------------------------------------------ key lines


def _line(name: str, *needles: str) -> str:
    found = [line for line in load(name) if all(needle in line for needle in needles)]
    assert found, f"no line of {name} has {needles}"
    return found[0]


def test_metric_communities_decode_from_the_u64_values() -> None:
    event = parse_line(_line("v50_addpath", '"nlri": "203.0.113.10/32"', '"path-information": "0.0.0.1"'))
    assert isinstance(event, RouteUpdate)
    (route,) = event.announced
    cpu, sessions_, score = route.communities()
    assert isinstance(cpu, MetricCommunity) and cpu.name == "cpu_utilization" and cpu.value == 42.5
    assert isinstance(sessions_, MetricCommunity) and sessions_.name == "active_sessions" and sessions_.value == 17
    assert isinstance(score, MetricCommunity) and score.name == "overall_score" and score.value == 7.5

    event = parse_line(_line("v42_basic", '"192.0.2.12"'))
    assert isinstance(event, RouteUpdate)
    link_bw, capacity, state, unknown = event.announced[0].communities()
    assert isinstance(link_bw, LinkBandwidth) and link_bw.asn == 65000 and link_bw.bytes_per_second == 12.5e6
    assert isinstance(capacity, MetricCommunity) and capacity.value == 1000
    assert isinstance(state, MetricCommunity) and state.name == "state" and state.value == 1
    assert isinstance(unknown, MetricCommunity) and unknown.name == "unknown_0x7f" and unknown.raw_value == 0xDEADBEEF

    event = parse_line(_line("v50_basic", '"192.0.2.31"'))
    assert isinstance(event, RouteUpdate)
    assert event.announced[0].communities()[0] == OpaqueCommunity(TARGET)


def test_communities_are_packed_whole_and_a_bad_value_is_worded() -> None:
    """``ext_raw`` is every community's 8 octets in order, whatever the count (a count the packers do not keep
    is packed anyway); a value that is no unsigned 64-bit integer is refused with the value named."""
    def line(values: list[Any]) -> str:
        return json.dumps({
            "exabgp": "5.0.0", "time": 1.0, "host": "h", "pid": 1, "ppid": 1, "counter": 1, "type": "update",
            "neighbor": {"address": {"local": "10.0.0.2", "peer": "10.0.0.3"}, "asn": {"local": 65000, "peer": 65000},
                         "direction": "receive", "message": {"update": {
                             "attribute": {"origin": "igp", "extended-community": [
                                 {"value": value, "string": ""} for value in values]},
                             "announce": {"ipv4 unicast": {"192.0.2.11": [{"nlri": "203.0.113.10/32"}]}}}}}})

    for count in (0, 1, 6, 70, 300):
        values = [(index * 0x0101010101010101 + 7) % (1 << 64) for index in range(count)]
        event = parse_line(line(values))
        assert isinstance(event, RouteUpdate)
        (route,) = event.announced
        assert route.ext_raw == b"".join(value.to_bytes(8, "big") for value in values)
        assert route.ext_communities == tuple(value.to_bytes(8, "big") for value in values)
    for bad, named in ((1 << 64, str(1 << 64)), (-1, "-1"), (True, "True"), (1.5, "1.5"), ("7", "'7'")):
        with pytest.raises(ExabgpJsonError, match=named):
            parse_line(line([5, bad]))


def test_path_information_dotted_quad() -> None:
    event = parse_line(_line("v42_addpath", '"path-information": "238.107.40.0"'))
    assert isinstance(event, RouteUpdate)
    assert event.announced[0].path_id == 4_000_000_000
    assert event.announced[0].key == RouteKey(net("203.0.113.30/32"), 4_000_000_000)


@pytest.mark.parametrize("name", ["v50_addpath", "v42_addpath"])
def test_as_set_both_shapes(name: str) -> None:
    event = parse_line(_line(name, '"192.0.2.41"'))
    assert isinstance(event, RouteUpdate)
    (route,) = event.announced
    assert (route.as_path, route.as_set, route.as_path_length) == ((65001, 4_200_000_001), (65301, 65302), 3)


def test_notifications() -> None:
    cease4 = parse_line(_line("v50_basic", '"type": "notification"', '"subcode": 4'))
    assert cease4 == Notification(PEER, 6, 4, b'Shutdown Communication: "Administrative Reset"',
                                  'Shutdown Communication: "Administrative Reset"')
    assert parse_line(_line("v50_addpath", '"type": "notification"', '"subcode": 3')) == Notification(
        PEER, 6, 3, b"Peer De-configured", "Peer De-configured")
    assert parse_line(_line("v42_basic", '"type": "notification"', '"subcode": 3')) == Notification(
        PEER, 6, 3, b"Peer De-configured", None)
    assert parse_line(_line("v42_basic", '"notification": "shutdown"')) == Shutdown()


@pytest.mark.parametrize("name", CAPTURES)
def test_types_we_do_not_use_are_ignored(name: str) -> None:
    assert parse_line(_line(name, '"type": "open"')) == Ignored("open", "message type not used by dyncast")
    assert parse_line(_line(name, '"type": "keepalive"')) == Ignored("keepalive", "message type not used by dyncast")
    refresh = parse_line(_line(name, '"type": "refresh"'))
    assert isinstance(refresh, Ignored) and refresh.kind == "refresh"


def test_v42_refresh_line_is_invalid_json_but_recognised() -> None:
    line = _line("v42_basic", '"type": "refresh"')
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert parse_line(line) == Ignored("refresh", "ExaBGP 4.2 writes route-refresh lines as invalid JSON")


@pytest.mark.parametrize("name", ["v50_basic", "v42_basic"])
def test_flow_family_is_ignored(name: str) -> None:
    flow = parse_line(_line(name, '"ipv4 flow": { "no-nexthop"'))
    assert flow == Ignored("update", "no IPv4/IPv6 unicast routes (families: ipv4 flow)")
    eor = parse_line(_line(name, '"safi" : "flow"'))
    assert eor == Ignored("eor", "end-of-RIB for ipv4 flow, a family dyncast does not use")


# ------------------------------------------------------------------ variants of captured lines
# ExaBGP prints these shapes in configurations the capture does not cover; each
# test starts from a captured line and changes only what the variant changes.


def _decoded(name: str, *needles: str) -> dict[str, object]:
    data: dict[str, object] = json.loads(_line(name, *needles))
    return data


def _update_body(data: dict[str, object]) -> dict[str, object]:
    body: dict[str, object] = data["neighbor"]["message"]["update"]  # type: ignore[index]
    return body


def test_compact_nlri_and_integer_path_information() -> None:
    original = parse_line(_line("v50_addpath", '"192.0.2.21"'))
    data = _decoded("v50_addpath", '"192.0.2.21"')
    nlris = _update_body(data)["announce"]["ipv4 unicast"]["192.0.2.21"]  # type: ignore[index]
    nlris[0]["path-information"] = 3
    assert parse_line(json.dumps(data)) == original
    compact = _decoded("v50_basic", '"192.0.2.21"')
    body = _update_body(compact)
    body["announce"]["ipv4 unicast"]["192.0.2.21"] = ["203.0.113.20/32", "203.0.113.21/32"]  # type: ignore[index]
    event = parse_line(json.dumps(compact))
    assert isinstance(event, RouteUpdate)
    assert [route.key for route in event.announced] == [RouteKey(net("203.0.113.20/32")),
                                                         RouteKey(net("203.0.113.21/32"))]


def test_announce_and_withdraw_in_one_update() -> None:
    data = _decoded("v50_basic", '"192.0.2.21"')
    withdraw = _decoded("v50_basic", '"withdraw"', '"203.0.113.21/32"')
    _update_body(data)["withdraw"] = _update_body(withdraw)["withdraw"]
    event = parse_line(json.dumps(data))
    assert isinstance(event, RouteUpdate)
    assert len(event.announced) == 3 and event.withdrawn == (RouteKey(net("203.0.113.21/32")),)


def test_global_and_link_local_next_hop_keep_the_global() -> None:
    data = _decoded("v50_basic", '"2001:db8::11"')
    by_next_hop = _update_body(data)["announce"]["ipv6 unicast"]  # type: ignore[index]
    by_next_hop["fe80::11"] = copy.deepcopy(by_next_hop["2001:db8::11"])
    event = parse_line(json.dumps(data))
    assert isinstance(event, RouteUpdate)
    (route,) = event.announced
    assert route.next_hop == addr("2001:db8::11")
    reordered = {"fe80::11": by_next_hop["fe80::11"], "2001:db8::11": by_next_hop["2001:db8::11"]}
    _update_body(data)["announce"]["ipv6 unicast"] = reordered  # type: ignore[index]
    assert parse_line(json.dumps(data)) == event


def test_sent_updates_are_not_routes() -> None:
    data = _decoded("v50_basic", '"192.0.2.11"')
    data["neighbor"]["direction"] = "send"  # type: ignore[index]
    assert parse_line(json.dumps(data)) == Ignored("update", "an UPDATE sent to the peer, not received")


def test_acks_and_blank_lines() -> None:
    assert parse_line("done\n") == Ignored("ack", "done")
    assert parse_line("error") == Ignored("ack", "error")
    assert parse_line('{ "answer": "done", "message": "command completed" }') == Ignored("ack", "done")
    assert parse_line("\n") == Ignored("blank", "empty line")


def test_errors_carry_a_truncated_excerpt() -> None:
    line = _line("v50_basic", '"192.0.2.11"').replace('"203.0.113.10/32"', '"203.0.113.10/33"')
    with pytest.raises(ExabgpJsonError) as caught:
        parse_line(line)
    assert caught.value.excerpt == line[:200] + "..."
    assert repr(caught.value.excerpt) in str(caught.value) and caught.value.message in str(caught.value)
    data = _decoded("v42_basic", '"type": "state"', '"up"')
    data["neighbor"]["state"] = "idle"  # type: ignore[index]
    with pytest.raises(ExabgpJsonError, match="unknown session state 'idle'"):
        parse_line(json.dumps(data))


def test_sent_notification() -> None:
    data = _decoded("v50_basic", '"type": "notification"', '"subcode": 3')
    data["neighbor"]["direction"] = "send"  # type: ignore[index]
    event = parse_line(json.dumps(data))
    assert isinstance(event, Notification) and not event.received and (event.code, event.subcode) == (6, 3)
