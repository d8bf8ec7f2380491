"""Properties of the agent's update damping (dyncast_bgp.agent.damping)."""

from __future__ import annotations

import ipaddress
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.agent.damping import Action, Content, Policy, Record, Threshold, step
from dyncast_bgp.model import MetricsView, StateFlag

HOP = ipaddress.ip_address("198.51.100.1")
OTHER_HOP = ipaddress.ip_address("198.51.100.2")

policies = st.builds(
    Policy,
    min_interval=st.floats(0.05, 10.0),
    refresh_interval=st.floats(10.0, 100.0),
    threshold=st.builds(Threshold, relative=st.one_of(st.none(), st.floats(0.0, 1.0)),
                        absolute=st.one_of(st.none(), st.floats(0.0, 50.0))),
)
contents = st.one_of(
    st.none(),
    st.builds(
        Content,
        next_hop=st.sampled_from([HOP, OTHER_HOP]),
        metrics=st.dictionaries(st.sampled_from(["cpu_utilization", "active_sessions", "capacity"]),
                                st.floats(0, 1000, allow_nan=False), max_size=3).map(MetricsView),
        flags=st.sampled_from([StateFlag.NONE, StateFlag.DRAINING]),
    ),
)
# a sequence of (time gap, desired content) observations
timelines = st.lists(st.tuples(st.floats(0.0, 5.0), contents), min_size=1, max_size=60)


def run(policy: Policy, timeline: list[tuple[float, Content | None]]) -> list[tuple[float, str, Content | None]]:
    """Drive one route through the timeline, honouring due times the way the agent does."""
    record, now, sent = Record(), 0.0, []
    desired: Content | None = None
    due: float | None = None
    for gap, wanted in timeline:
        target = now + gap
        while due is not None and due <= target:  # the agent wakes up at due times
            now = due
            result = step(record, desired, now, policy)
            record, due = result.record, result.due
            if result.action:
                sent.append((now, result.action, result.content))
        now, desired = target, wanted
        result = step(record, desired, now, policy)
        record, due = result.record, result.due
        if result.action:
            sent.append((now, result.action, result.content))
    return sent


@settings(max_examples=300)
@given(policies, timelines)
def test_announcements_never_closer_than_min_interval(policy: Policy,
                                                      timeline: list[tuple[float, Content | None]]) -> None:
    sent = run(policy, timeline)
    for (t0, _, _), (t1, action, _) in itertools.pairwise(sent):
        if action == Action.ANNOUNCE:
            assert t1 - t0 >= policy.min_interval - 1e-9


@settings(max_examples=300)
@given(policies, timelines)
def test_withdraw_is_immediate_and_final_state_converges(policy: Policy,
                                                         timeline: list[tuple[float, Content | None]]) -> None:
    record, now = Record(), 0.0
    for gap, wanted in timeline:
        now += gap
        result = step(record, wanted, now, policy)
        if wanted is None and record.published is not None:
            assert result.action == Action.WITHDRAW
        record = result.record
    # after waiting long enough, what peers hold is what is desired, or differs only below thresholds
    final = timeline[-1][1]
    later = step(record, final, now + policy.refresh_interval + policy.min_interval + 1, policy)
    assert later.record.published == final


@given(policies, st.floats(0, 100), st.floats(0, 100))
def test_change_below_threshold_waits_for_refresh(policy: Policy, old: float, new: float) -> None:
    first = Content(HOP, MetricsView({"cpu_utilization": old}))
    second = Content(HOP, MetricsView({"cpu_utilization": new}))
    record = step(Record(), first, 0.0, policy).record
    result = step(record, second, policy.min_interval, policy)
    crossed = policy.threshold.crossed(old, new)
    if old == new:
        assert result.action is None and result.due is None
    elif crossed:
        assert result.action == Action.ANNOUNCE
    elif policy.refresh_interval <= policy.min_interval:  # the refresh is already due
        assert result.action == Action.ANNOUNCE and result.reason == "refresh"
    else:
        assert result.action is None and result.due == policy.refresh_interval


def test_threshold_semantics() -> None:
    relative = Threshold(relative=0.1, absolute=None)
    assert not relative.crossed(50.0, 54.9)
    assert relative.crossed(50.0, 55.0)
    assert relative.crossed(0.0, 0.1)  # any change from zero is infinitely relative
    absolute = Threshold(relative=None, absolute=5.0)
    assert not absolute.crossed(0.0, 4.9)
    assert absolute.crossed(10.0, 5.0)
    both = Threshold(relative=0.5, absolute=1.0)
    assert both.crossed(100.0, 101.0)  # absolute alone is enough


def test_next_hop_change_is_significant() -> None:
    policy = Policy(min_interval=1.0, refresh_interval=60.0)
    record = step(Record(), Content(HOP), 0.0, policy).record
    held = step(record, Content(OTHER_HOP), 0.5, policy)
    assert held.action is None and held.due == 1.0
    sent = step(record, Content(OTHER_HOP), 1.0, policy)
    assert sent.action == Action.ANNOUNCE and sent.content == Content(OTHER_HOP)
