"""The router's RIB: announcements, withdrawals, ADD-PATH, peers going down with and without GR."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.model import InstanceKey, InstanceState, PathMetrics, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import (
    EndOfRib,
    ExabgpJsonError,
    PeerState,
    Route,
    RouteKey,
    RouteUpdate,
    SessionState,
    parse_line,
)
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.ip_address("10.0.0.3")
OTHER_PEER = ipaddress.ip_address("10.0.0.9")
SVC = ServiceId.parse("203.0.113.10/32")
A, B = ipaddress.ip_address("198.51.100.11"), ipaddress.ip_address("198.51.100.12")
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "exabgp_json"


def route(next_hop: ipaddress.IPv4Address | ipaddress.IPv6Address, path_id: int, cpu: float,
          flags: StateFlag = StateFlag.NONE) -> Route:
    communities = tuple(c.pack() for c in encode_metrics({"cpu_utilization": cpu}, flags=flags))
    return Route(prefix=SVC.prefix, next_hop=next_hop, path_id=path_id, ext_raw=b"".join(communities))


def no_path(_: object) -> PathMetrics:
    return PathMetrics()


def cpus(rib: Rib, now: float = 0.0, **kwargs: float) -> dict[str, float | None]:
    return {str(c.key.binding): c.metrics.get("cpu_utilization")
            for c in rib.candidates(SVC, now, path_of=no_path, **kwargs)}


def test_add_path_instances_withdraw_and_replace() -> None:
    rib = Rib()
    changed = rib.apply(RouteUpdate(PEER, (route(A, 1, 20), route(B, 2, 70))), 0.0)
    assert changed == {SVC}
    assert cpus(rib) == {"198.51.100.11": 20.0, "198.51.100.12": 70.0}
    rib.apply(RouteUpdate(PEER, (route(A, 1, 30),)), 1.0)  # same path id: replaces
    assert cpus(rib) == {"198.51.100.11": 30.0, "198.51.100.12": 70.0}
    rib.apply(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 2),)), 2.0)
    assert cpus(rib) == {"198.51.100.11": 30.0}
    rib.check_invariants()
    assert rib.apply(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 2),)), 3.0) == set()


def test_draining_flag_becomes_state_and_old_metrics_become_unknown() -> None:
    rib = Rib()
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20, StateFlag.DRAINING),)), 0.0)
    (candidate,) = rib.candidates(SVC, 100.0, path_of=no_path, max_age=60.0)
    assert candidate.state is InstanceState.DRAINING  # the flag survives ageing
    assert candidate.metrics.get("cpu_utilization") is None and candidate.metrics_age == 100.0


def test_same_instance_from_two_peers_is_one_candidate_with_the_freshest_metrics() -> None:
    rib = Rib()
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20),)), 0.0)
    rib.apply(RouteUpdate(OTHER_PEER, (route(A, 7, 25),)), 1.0)
    assert cpus(rib) == {"198.51.100.11": 25.0}


def test_peer_down_without_graceful_restart_removes_its_paths_at_once() -> None:
    rib = Rib(stale_time=0)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20),)), 0.0)
    rib.apply(RouteUpdate(OTHER_PEER, (route(B, 1, 40),)), 0.0)
    assert rib.apply(PeerState(PEER, SessionState.DOWN, "hold timer expired"), 5.0) == {SVC}
    assert cpus(rib) == {"198.51.100.12": 40.0}
    rib.check_invariants()


def test_graceful_restart_keeps_stale_paths_until_time_or_end_of_rib() -> None:
    rib = Rib(stale_time=120)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20), route(B, 2, 30))), 0.0)
    rib.apply(PeerState(PEER, SessionState.DOWN, None), 10.0)
    assert cpus(rib) == {"198.51.100.11": 20.0, "198.51.100.12": 30.0}  # forwarding continues
    assert rib.next_expiry() == 130.0
    rib.apply(PeerState(PEER, SessionState.UP, None), 20.0)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 22),)), 21.0)  # re-sent after the restart
    rib.apply(EndOfRib(PEER, "ipv4 unicast"), 22.0)  # B was not re-sent: gone now
    assert cpus(rib) == {"198.51.100.11": 22.0}
    rib.apply(PeerState(PEER, SessionState.DOWN, None), 30.0)
    assert rib.expire(149.0) == set()
    assert rib.expire(150.0) == {SVC}
    assert cpus(rib, 150.0) == {}
    rib.check_invariants()


def test_malformed_metric_is_counted_and_that_metric_is_unknown() -> None:
    rib = Rib()
    bad_cpu = bytes.fromhex("83012280" + "43960000")  # 300.0 percent
    rib.apply(RouteUpdate(PEER, (Route(SVC.prefix, A, 1, ext_raw=bad_cpu),)), 0.0)
    assert cpus(rib) == {"198.51.100.11": None}
    assert rib.counters.metric_problems == 1


@pytest.mark.parametrize("capture", sorted(GOLDEN.glob("*.jsonl")), ids=lambda p: p.name)
def test_recorded_exabgp_output_of_both_versions_builds_a_consistent_rib(capture: Path) -> None:
    rib = Rib(stale_time=0)
    for number, line in enumerate(capture.read_text().splitlines()):
        try:
            event = parse_line(line)
        except ExabgpJsonError:
            continue
        rib.apply(event, float(number))
        rib.check_invariants()
    assert rib.counters.announced > 0 and rib.counters.withdrawn > 0


def test_a_path_keeps_one_instance_key_until_its_next_hop_changes() -> None:
    rib = Rib()
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20),)), 0.0)
    first, = rib.candidates(SVC, 0.0, path_of=no_path)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 40),)), 1.0)  # new metrics, same next hop: the same key object
    again, = rib.candidates(SVC, 1.0, path_of=no_path)
    assert again.key is first.key and again.metrics.get("cpu_utilization") == 40.0
    rib.apply(RouteUpdate(PEER, (route(B, 1, 50),)), 2.0)  # the path now leads to another instance
    moved, = rib.candidates(SVC, 2.0, path_of=no_path)
    assert moved.key.binding == B and moved.key != first.key and hash(moved.key) == hash(InstanceKey(SVC, B))
    rib.check_invariants()


def test_candidates_come_in_canonical_order_whatever_the_arrival_order() -> None:
    rib = Rib()
    bindings = [ipaddress.ip_address(f"198.51.100.{n}") for n in (30, 2, 17, 9)] + [ipaddress.ip_address("2001:db8::1")]
    rib.apply(RouteUpdate(PEER, tuple(route(binding, n, 10.0) for n, binding in enumerate(bindings, 1))), 0.0)
    keys = [candidate.key for candidate in rib.candidates(SVC, 0.0, path_of=no_path)]
    assert keys == sorted(keys) and [str(key.binding) for key in keys] == [
        "198.51.100.2", "198.51.100.9", "198.51.100.17", "198.51.100.30", "2001:db8::1"]


def test_two_copies_received_at_the_same_instant_pick_the_lower_peer_whatever_the_order() -> None:
    picks = set()
    for first, second in ((PEER, OTHER_PEER), (OTHER_PEER, PEER)):
        rib = Rib()
        rib.apply(RouteUpdate(first, (route(A, 1, 10.0 if first == PEER else 90.0),)), 5.0)
        rib.apply(RouteUpdate(second, (route(A, 1, 10.0 if second == PEER else 90.0),)), 5.0)
        picks.add(tuple(cpus(rib, 5.0).items()))
    assert picks == {(("198.51.100.11", 10.0),)}  # 10.0.0.3 < 10.0.0.9: its copy, in both orders


def test_a_vanishing_in_a_peer_s_restart_is_tagged_as_the_session_s() -> None:
    """``Transition.session``: set for a stale path flushed (End-of-RIB, expiry) or a stale path's id re-used for
    another D-BID; not for a withdrawal, a live path's id re-used, an appearance, or a peer down without a stale
    time."""
    rib = Rib(stale_time=30, track_instances=True)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20), route(B, 2, 30))), 0.0)
    rib.apply(RouteUpdate(PEER, (route(B, 1, 20),)), 1.0)  # a live id re-used: A really went
    rib.apply(RouteUpdate(PEER, (route(A, 3, 20),)), 1.5)
    rib.apply(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 3),)), 2.0)
    assert [(str(t.binding), t.present, t.session) for t in rib.take_transitions()] == [
        ("198.51.100.11", True, False), ("198.51.100.12", True, False), ("198.51.100.11", False, False),
        ("198.51.100.11", True, False), ("198.51.100.11", False, False)]
    rib.apply(RouteUpdate(PEER, (route(A, 3, 20),)), 3.0)  # A on 3, B on 1 and 2
    rib.apply(PeerState(PEER, SessionState.DOWN, None), 4.0)
    rib.apply(RouteUpdate(PEER, (route(B, 3, 20),)), 5.0)  # after the restart: A's stale id 3 now carries B
    rib.apply(EndOfRib(PEER, "ipv4 unicast"), 6.0)  # B's stale ids 1 and 2 flushed: B still has id 3
    rib.apply(RouteUpdate(PEER, (route(A, 4, 20),)), 7.0)
    rib.apply(PeerState(PEER, SessionState.DOWN, None), 8.0)
    assert rib.expire(38.0) == {SVC}  # nothing came back: both flushed at the expiry
    assert sorted((str(t.binding), t.present, t.session) for t in rib.take_transitions()) == [
        ("198.51.100.11", False, True), ("198.51.100.11", False, True), ("198.51.100.11", True, False),
        ("198.51.100.11", True, False), ("198.51.100.12", False, True)]
    plain = Rib(stale_time=0, track_instances=True)
    plain.apply(RouteUpdate(PEER, (route(A, 1, 20),)), 0.0)
    plain.apply(PeerState(PEER, SessionState.DOWN, None), 1.0)
    assert [t.session for t in plain.take_transitions()] == [False, False]  # no graceful restart: counted


def test_an_end_of_rib_flushes_only_its_own_family_of_stale_paths() -> None:
    """A dual-stack peer back from a restart sends its IPv4 routes and marker first: its stale IPv6 paths wait
    for the IPv6 marker (or the stale time), they are not flushed by the IPv4 one."""
    six = ServiceId.parse("2001:db8::10/128")
    v6_hop = ipaddress.ip_address("2001:db8:1::11")
    v6_route = route(v6_hop, 5, 40)._replace(prefix=six.prefix)
    rib = Rib(stale_time=120)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 20), route(B, 2, 30), v6_route)), 0.0)
    rib.apply(PeerState(PEER, SessionState.DOWN, None), 10.0)
    rib.apply(PeerState(PEER, SessionState.UP, None), 20.0)
    rib.apply(RouteUpdate(PEER, (route(A, 1, 22),)), 21.0)
    assert rib.apply(EndOfRib(PEER, "ipv4 unicast"), 22.0) == {SVC}  # B (IPv4, not re-sent) goes
    assert cpus(rib) == {"198.51.100.11": 22.0}
    assert [str(c.key.binding) for c in rib.candidates(six, 22.0, path_of=no_path)] == [str(v6_hop)]  # kept
    assert rib.next_expiry() == 130.0  # the IPv6 stale path still expires in time
    assert rib.apply(EndOfRib(PEER, "ipv6 unicast"), 23.0) == {six}  # not re-sent: gone with its own marker
    assert rib.candidates(six, 23.0, path_of=no_path) == [] and rib.next_expiry() is None
    rib.check_invariants()
