"""Flap dampening (engine/flap.py): properties that hold for any parameters and any flap history."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import FlapDampening
from dyncast_bgp.engine.flap import FlapState, ceiling, decayed, flap, release_at, settle


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
