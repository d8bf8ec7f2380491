"""Router-side flap dampening (engine/flap.py) by hand-computed examples, and through the engine owner."""

from __future__ import annotations

import ipaddress
import math

import pytest

from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import FlapDampening, RouterConfig
from dyncast_bgp.engine.flap import FlapState, FlapTracker, ceiling, decayed, flap, release_at, settle
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import InstanceKey, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import EndOfRib, PeerState, Route, RouteKey, RouteUpdate, SessionState
from dyncast_bgp.wire.metrics import encode_metrics

P = FlapDampening()  # penalty 1, half-life 15 s, suppress 2.5, reuse 1, max_suppress 60 s
PEER = ipaddress.ip_address("10.0.0.3")
SVC = ServiceId.parse("203.0.113.10/32")
A, B = ipaddress.IPv4Address("198.51.100.11"), ipaddress.IPv4Address("198.51.100.12")
KEY = InstanceKey(SVC, A)


def test_penalty_halves_every_half_life_and_is_capped() -> None:
    state = flap(FlapState(), P, 0.0)
    assert state.penalty == 1.0 and not state.suppressed
    assert math.isclose(decayed(state, P, 15.0), 0.5) and math.isclose(decayed(state, P, 30.0), 0.25)
    assert decayed(state, P, -5.0) == 1.0  # time running backwards decays nothing
    assert ceiling(P) == 16.0  # reuse * 2^(60/15)
    for second in range(100):
        state = flap(state, P, float(second) / 10)
    assert state.penalty == 16.0 and state.suppressed


def test_three_fast_flaps_suppress_and_reuse_follows_the_half_life() -> None:
    state = FlapState()
    for at in (0.0, 1.0, 2.0):
        state = flap(state, P, at)
    expected = 2 ** (-2 / 15) + 2 ** (-1 / 15) + 1
    assert math.isclose(state.penalty, expected) and state.suppressed and state.peak == state.penalty
    release = release_at(state, P)
    assert release is not None and math.isclose(release, 2.0 + 15 * math.log2(expected))
    assert settle(state, P, release - 0.01).suppressed
    assert not settle(state, P, release + 0.01).suppressed


def test_two_flaps_or_slow_flaps_never_suppress() -> None:
    state = flap(flap(FlapState(), P, 0.0), P, 0.0)
    assert state.penalty == 2.0 and not state.suppressed
    slow = FlapState()
    for flap_number in range(200):  # one flap every 12 s forever: steady state 1/(1 - 2^(-12/15)) = 2.35
        slow = flap(slow, P, 12.0 * flap_number)
        assert not slow.suppressed


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="reuse"):
        FlapDampening(suppress=1.0, reuse=1.0)
    with pytest.raises(ValueError, match="raise max_suppress"):
        FlapDampening(half_life=15, max_suppress=10)
    with pytest.raises(ConfigError, match=r"router.services.203.0.113.10.flap_dampening"):
        parse("bgp: {router_id: 192.0.2.1, local_as: 65000}\n"
              "router: {services: {203.0.113.10: {flap_dampening: {suppress: 0.5}}}}\n")


def test_tracker_counts_a_comeback_not_a_first_appearance() -> None:
    tracker = FlapTracker()
    tracker.appeared(KEY, P, 0.0)
    assert tracker.flaps == 0 and not tracker.known(KEY)
    tracker.vanished(KEY, 1.0)
    tracker.appeared(KEY, P, 2.0)
    assert tracker.flaps == 1 and tracker.penalty(KEY, P, 2.0) == 1.0
    tracker.flags(KEY, True, P, 3.0)  # overloaded: not yet a flap
    tracker.flags(KEY, True, P, 4.0)
    tracker.flags(KEY, False, P, 5.0)  # cleared: a flap
    assert tracker.flaps == 2
    assert tracker.forget(5.0 + 20 * 15 - 1, lambda _: 15.0) == 0
    assert tracker.forget(5.0 + 20 * 15 + 1, lambda _: 15.0) == 1
    assert not tracker.watches(SVC) and len(tracker) == 0


def _route(next_hop: ipaddress.IPv4Address, path_id: int, flags: StateFlag = StateFlag.NONE) -> Route:
    communities = tuple(c.pack() for c in encode_metrics({"cpu_utilization": 20, "capacity": 100}, flags=flags))
    return Route(prefix=SVC.prefix, next_hop=next_hop, path_id=path_id, ext_raw=b"".join(communities))


def _engine(**flap: float) -> RouterEngine:
    return RouterEngine(RouterConfig.model_validate({
        "defaults": {"max_step": 1.0, "min_dwell": 0, "smoothing": 1.0, "fallback_grace": 0,
                     "flap_dampening": flap}}))


def _excluded(engine: RouterEngine) -> str | None:
    outcome = engine.outcome(SVC)
    assert outcome is not None
    return {str(k.binding): r for k, r in outcome.decision.excluded.items()}.get(str(A))


def test_an_instance_flapping_every_second_is_held_out_then_readmitted_once_stable() -> None:
    engine = _engine()
    engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), 0.0)
    engine.step(0.0)
    now, flaps = 0.0, 0
    while _excluded(engine) is None:  # withdrawn, back a second later, ...
        engine.on_event(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 1),)), now + 0.5)
        engine.step(now + 0.5)
        now += 1.0
        engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), now)
        engine.step(now)
        flaps += 1
        assert flaps < 10
    assert flaps == 3  # excluded within a few flaps
    reason = _excluded(engine)
    assert reason is not None and reason.startswith("flap-damped (penalty 2.")
    outcome = engine.outcome(SVC)
    assert outcome is not None and {str(k.binding): w for k, w in outcome.decision.weights.items()} == {str(B): 1.0}
    # stable from now on: readmitted when the penalty has decayed below reuse, at the time the engine asks for
    release = engine.next_due()
    assert release is not None and math.isclose(release, now + 15 * math.log2(engine.flaps.penalty(
        InstanceKey(SVC, A), P, now)), rel_tol=1e-9)
    engine.step(release - 0.1)
    assert _excluded(engine) is not None
    engine.step(release)
    assert _excluded(engine) is None


def test_overload_flag_flapping_is_dampened_and_dampening_can_be_off() -> None:
    for enabled in (True, False):
        engine = _engine(enabled=enabled)
        engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), 0.0)
        engine.step(0.0)
        for second in range(4):
            engine.on_event(RouteUpdate(PEER, (_route(A, 1, StateFlag.OVERLOADED),)), second + 0.5)
            engine.step(second + 0.5)
            engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), second + 1.0)
            engine.step(second + 1.0)
        reason = _excluded(engine)
        assert (reason is not None and reason.startswith("flap-damped")) is enabled


def test_one_restart_or_a_drain_cycle_is_not_dampened() -> None:
    engine = _engine()
    engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), 0.0)
    engine.step(0.0)
    engine.on_event(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 1),)), 1.0)
    engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), 2.0)
    engine.on_event(RouteUpdate(PEER, (_route(A, 1, StateFlag.DRAINING),)), 3.0)
    engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), 4.0)
    engine.step(4.0)
    assert _excluded(engine) is None


def test_maintenance_never_counts_a_load_spike_and_a_rolling_restart_are_not_three_flaps() -> None:
    """What the three-site lab does to s1a: overload cleared (a flap), then drain, restart while drained
    (withdrawn, back), undrain, all within a few seconds. Only the overload counts."""
    engine = _engine()
    engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), 0.0)
    engine.step(0.0)
    script: list[tuple[float, RouteUpdate]] = [
        (1.0, RouteUpdate(PEER, (_route(A, 1, StateFlag.OVERLOADED),))),
        (2.0, RouteUpdate(PEER, (_route(A, 1),))),  # overload cleared: flap 1
        (3.0, RouteUpdate(PEER, (_route(A, 1, StateFlag.DRAINING),))),  # drain
        (4.0, RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 1),))),  # restarted while drained
        (5.0, RouteUpdate(PEER, (_route(A, 1, StateFlag.DRAINING),))),  # back, still drained: maintenance
        (6.0, RouteUpdate(PEER, (_route(A, 1),))),  # undrain: maintenance
    ]
    for when, event in script:
        engine.on_event(event, when)
        engine.step(when)
    assert engine.flaps.flaps == 1
    assert _excluded(engine) is None
    # the same comings and goings without the draining flag are instability: dampened
    for second in range(7, 10):
        engine.on_event(RouteUpdate(PEER, withdrawn=(RouteKey(SVC.prefix, 1),)), second + 0.0)
        engine.step(second + 0.0)
        engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), second + 0.5)
        engine.step(second + 0.5)
    reason = _excluded(engine)
    assert reason is not None and reason.startswith("flap-damped")


def _gr_engine() -> RouterEngine:
    """An engine whose peer negotiated graceful restart (its paths kept stale 30 s after it goes down)."""
    return RouterEngine(RouterConfig.model_validate({
        "defaults": {"max_step": 1.0, "min_dwell": 0, "smoothing": 1.0, "fallback_grace": 0}}), stale_time=30.0)


def _reflector_restart(engine: RouterEngine, now: float, *, renumber: int, flush_a: bool) -> None:
    """The peer (a route reflector) goes down and comes back. ``renumber`` (the restart's number, from 1): it
    numbers its ADD-PATH ids afresh, A's id now carrying B (ids alternate 1/2 and 2/1 from one restart to the
    next) and A coming in a later UPDATE on a new id; 0: same ids. ``flush_a``: its End-of-RIB comes before A
    (an agent whose session to it came back late), A after it."""
    engine.on_event(PeerState(PEER, SessionState.DOWN, "restart"), now)
    engine.step(now)
    engine.on_event(PeerState(PEER, SessionState.UP), now + 1.0)
    if renumber:
        a_was, b_now = (1, 1) if renumber % 2 else (2, 2)  # before this restart A had id 1 (odd) or 2 (even)
        engine.on_event(RouteUpdate(PEER, (_route(B, b_now),)), now + 1.1)  # A's old id now carries B
        engine.step(now + 1.1)  # a step between the two UPDATEs: A has no path
        engine.on_event(RouteUpdate(PEER, (_route(A, 3 - a_was),)), now + 1.2)  # A on B's old id
    elif not flush_a:
        engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), now + 1.1)
    else:
        engine.on_event(RouteUpdate(PEER, (_route(B, 2),)), now + 1.1)
    engine.on_event(EndOfRib(PEER, "ipv4 unicast"), now + 1.3)
    engine.step(now + 1.3)
    if flush_a:
        engine.on_event(RouteUpdate(PEER, (_route(A, 1),)), now + 2.0)
    engine.step(now + 2.0)


@pytest.mark.parametrize(("renumber", "flush_a"), [(True, False), (False, True)])
def test_a_route_reflector_restarting_is_no_flap_of_its_instances(renumber: bool, flush_a: bool) -> None:
    """A vanishing in a peer's restart (stale id re-announced for another instance, or flushed at its End-of-RIB)
    is the session's doing: five restarts in ten seconds never hold A out (CI at 25ec77a: s1a flap-damped at both
    ingresses after the three-site lab's reflector restarts). A's own withdrawals still count (the test above)."""
    engine = _gr_engine()
    engine.on_event(RouteUpdate(PEER, (_route(A, 1), _route(B, 2))), 0.0)
    engine.step(0.0)
    for restart in range(5):
        _reflector_restart(engine, 2.0 * restart + 1.0, renumber=restart + 1 if renumber else 0, flush_a=flush_a)
        outcome = engine.outcome(SVC)
        assert outcome is not None
        assert _excluded(engine) is None, (restart, dict(outcome.decision.excluded))
        assert {str(k.binding) for k, w in outcome.decision.weights.items() if w > 0} == {str(A), str(B)}
    assert engine.flaps.penalty(KEY, P, 11.0) == 0.0
