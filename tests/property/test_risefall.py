"""Properties of the rise/fall machine, checked against an independent statement of the rule:

``healthy`` flips at result i exactly when the last k results (k = fall while
healthy, rise while not) all contradict the state held before i and none of them
came before the previous flip (the flipping result counts for the old state).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.agent.risefall import RiseFall, initial, next_interval, observe

thresholds = st.integers(min_value=1, max_value=6)
results = st.lists(st.booleans(), max_size=60)


def run(state: RiseFall, sequence: list[bool]) -> list[tuple[RiseFall, bool]]:
    steps = []
    for ok in sequence:
        state, flipped = observe(state, ok)
        steps.append((state, flipped))
    return steps


@given(rise=thresholds, fall=thresholds, start=st.booleans(), sequence=results)
def test_flips_exactly_after_rise_or_fall_consecutive_contrary_results(
        rise: int, fall: int, start: bool, sequence: list[bool]) -> None:
    healthy, last_flip = start, -1
    for index, (state, flipped) in enumerate(run(initial(rise, fall, start), sequence)):
        needed = fall if healthy else rise
        window = sequence[index - needed + 1:index + 1] if index + 1 >= needed else []
        expect_flip = index - last_flip >= needed and len(window) == needed and all(ok != healthy for ok in window)
        assert flipped == expect_flip, (index, healthy, needed)
        if flipped:
            healthy, last_flip = not healthy, index
        assert state.healthy == healthy


@given(rise=thresholds, fall=thresholds, start=st.booleans(), sequence=results)
def test_agreeing_result_never_flips_and_resets_the_streak(
        rise: int, fall: int, start: bool, sequence: list[bool]) -> None:
    state = initial(rise, fall, start)
    for ok in sequence:
        state, _ = observe(state, ok)
        agreed, flipped = observe(state, state.healthy)
        assert not flipped
        assert agreed == RiseFall(state.healthy, 0, rise, fall)


@given(rise=thresholds, fall=thresholds, start=st.booleans(), sequence=results)
def test_streak_stays_below_the_threshold_and_is_zero_after_a_flip(
        rise: int, fall: int, start: bool, sequence: list[bool]) -> None:
    for state, flipped in run(initial(rise, fall, start), sequence):
        assert 0 <= state.streak < (fall if state.healthy else rise)
        if flipped:
            assert state.streak == 0
        assert (state.rise, state.fall) == (rise, fall)


@given(rise=thresholds, fall=thresholds, start=st.booleans())
def test_settled_state_needs_exactly_its_threshold_of_contrary_results(rise: int, fall: int, start: bool) -> None:
    state = initial(rise, fall, start)
    needed = fall if start else rise
    steps = run(state, [not start] * needed)
    assert [flipped for _, flipped in steps] == [False] * (needed - 1) + [True]
    assert steps[-1][0] == RiseFall(not start, 0, rise, fall)


@given(rise=thresholds, fall=thresholds, start=st.booleans(), sequence=results,
       interval=st.floats(min_value=1.0, max_value=60.0), fast=st.floats(min_value=0.1, max_value=1.0))
def test_next_interval_is_fast_iff_a_change_is_in_progress(
        *, rise: int, fall: int, start: bool, sequence: list[bool], interval: float, fast: float) -> None:
    first = initial(rise, fall, start)
    assert next_interval(first, interval, fast) == interval
    for state, _ in run(first, sequence):
        assert next_interval(state, interval, fast) == (fast if state.streak > 0 else interval)
        assert state.changing == (state.streak > 0)


def test_rise_and_fall_of_one_follow_every_result() -> None:
    steps = run(initial(1, 1, False), [True, True, False, True])
    assert [(state.healthy, flipped) for state, flipped in steps] == [
        (True, True), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize(("healthy", "streak", "rise", "fall"), [
    (True, 0, 0, 3), (True, 0, 3, 0), (True, 3, 1, 3), (False, 2, 2, 9), (True, -1, 3, 3)])
def test_impossible_states_are_rejected(healthy: bool, streak: int, rise: int, fall: int) -> None:
    with pytest.raises(ValueError, match="must"):
        RiseFall(healthy, streak, rise, fall)
