"""Flap dampening (engine/flap.py): properties that hold for any parameters and any flap history."""

from __future__ import annotations

import ipaddress
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import FlapDampening
from dyncast_bgp.engine.flap import FlapState, FlapTracker, ceiling, decayed, flap, release_at, settle
from dyncast_bgp.model import InstanceKey, ServiceId


@st.composite
def params(draw: st.DrawFn) -> FlapDampening:
    half_life = draw(st.floats(0.5, 120))
    reuse = draw(st.floats(0.1, 5))
    suppress = reuse * draw(st.floats(1.1, 10))
    needed = half_life * math.log2(suppress / reuse)  # max_suppress must let the cap exceed suppress
    max_suppress = draw(st.floats(min(needed * 1.01 + 0.01, 64 * half_life), 64 * half_life))
    return FlapDampening(penalty=draw(st.floats(0.1, 5)), half_life=half_life, suppress=suppress, reuse=reuse,
                         max_suppress=max_suppress)


gaps = st.lists(st.floats(0, 100), min_size=1, max_size=30)


def history(p: FlapDampening, intervals: list[float]) -> tuple[FlapState, float]:
    state, now = FlapState(), 0.0
    for gap in intervals:
        now += gap
        state = flap(state, p, now)
    return state, now


@settings(max_examples=200, deadline=None)
@given(params(), gaps, st.floats(0, 1000), st.floats(0, 1000))
def test_penalty_decays_monotonically_without_flaps(p: FlapDampening, intervals: list[float], a: float,
                                                   b: float) -> None:
    state, last = history(p, intervals)
    early, late = sorted((a, b))
    assert decayed(state, p, last + late) <= decayed(state, p, last + early) <= state.penalty
    assert state.penalty <= ceiling(p) * (1 + 1e-12)


@settings(max_examples=200, deadline=None)
@given(params(), gaps)
def test_suppression_ends_by_max_suppress_after_the_last_flap(p: FlapDampening, intervals: list[float]) -> None:
    state, last = history(p, intervals)
    release = release_at(state, p)
    if release is not None:
        assert release <= last + p.max_suppress * (1 + 1e-9)
    assert not settle(state, p, last + p.max_suppress * (1 + 1e-9)).suppressed


@settings(max_examples=200, deadline=None)
@given(params(), st.integers(1, 200), st.floats(1.0, 100.0))
def test_flaps_spaced_beyond_the_steady_state_gap_are_never_suppressed(p: FlapDampening, count: int,
                                                                     slack: float) -> None:
    """Steady state of one flap every T: penalty/(1 - 2^(-T/h)); at or below suppress for T >= T_min."""
    if p.penalty >= p.suppress:
        return  # then a single flap suppresses (a stable instance still never is: see below)
    t_min = -p.half_life * math.log2(1 - p.penalty / p.suppress)
    state = FlapState()
    for number in range(count):
        state = flap(state, p, number * t_min * (1 + slack / 100))
        assert not state.suppressed


@settings(max_examples=100, deadline=None)
@given(params(), st.floats(0, 1e6))
def test_a_stable_instance_is_never_suppressed(p: FlapDampening, now: float) -> None:
    state = settle(FlapState(), p, now)
    assert not state.suppressed and decayed(state, p, now) == 0.0 and release_at(state, p) is None


seen = st.lists(st.tuples(st.floats(0, 30), st.sampled_from(["seen", "vanished", "appeared"]), st.booleans(),
                          st.booleans()), max_size=40)


@settings(max_examples=200, deadline=None)
@given(params(), seen)
def test_observe_is_draining_flags_and_held_in_one_lookup(p: FlapDampening,
                                                          events: list[tuple[float, str, bool, bool]]) -> None:
    """The router's one call per flagged instance (FlapTracker.observe) leaves the tracker as the three
    calls it stands for do, and answers what held() answers, whatever the instance's history."""
    key = InstanceKey(ServiceId(ipaddress.ip_network("203.0.113.1/32")), ipaddress.ip_address("198.51.100.1"))
    one, three = FlapTracker(), FlapTracker()
    now = 0.0
    for gap, what, raised, draining in events:
        now += gap
        if what == "seen":
            three.draining(key, draining, now)
            three.flags(key, raised, p, now)
            assert one.observe(key, raised, draining, p, now) == three.held(key, p, now)
        else:
            for tracker in (one, three):
                tracker.vanished(key, now) if what == "vanished" else tracker.appeared(key, p, now)
        assert one.known(key) == three.known(key) and one.flaps == three.flaps
        assert one.penalty(key, p, now) == three.penalty(key, p, now)
        assert one.release_at(key, p) == three.release_at(key, p)
        assert one._entries.get(key) == three._entries.get(key)
        one.check_invariants()
        three.check_invariants()
