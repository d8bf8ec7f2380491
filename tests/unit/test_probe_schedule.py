"""The pure probe schedule (dyncast_bgp.probe.schedule) driven by a fake clock."""

from __future__ import annotations

import ipaddress
import math
from collections import Counter

import pytest

from dyncast_bgp.model import IPAddress, PathMetrics
from dyncast_bgp.probe.schedule import Change, Outcome, ProbeSchedule, Slot

A = ipaddress.ip_address("10.0.0.1")
B = ipaddress.ip_address("fd00::2")


class Harness:
    """Steps a schedule through time in small ticks; ``answer(addr, slot, now)`` gives an RTT or None."""

    def __init__(self, schedule: ProbeSchedule, tick: float = 0.001) -> None:
        self.schedule = schedule
        self.tick = tick
        self.now = 0.0
        self.changes: list[tuple[float, Change]] = []
        self.sent: list[tuple[float, Slot]] = []
        self._inflight: list[tuple[float, Slot, int]] = []

    def run_until(self, end: float, rtt: dict[IPAddress, float | None]) -> None:
        while self.now < end:
            self.now = round(self.now + self.tick, 9)
            for arrival, slot, stamp in [item for item in self._inflight if item[0] <= self.now]:
                self._inflight.remove((arrival, slot, stamp))
                _, change = self.schedule.reply(slot.address, slot.sequence, stamp, self.now)
                if change:
                    self.changes.append((self.now, change))
            self.changes += [(self.now, change) for change in self.schedule.expire(self.now)]
            for slot in self.schedule.due(self.now):
                stamp = self.schedule.sent(slot, self.now)
                self.sent.append((self.now, slot))
                delay = rtt.get(slot.address)
                if delay is not None:
                    self._inflight.append((self.now + delay, slot, stamp))


def make(**kwargs: object) -> ProbeSchedule:
    settings: dict[str, object] = {"interval": 0.1, "timeout": 0.05, "window": 10, "unreachable_after": 3,
                                   "start": 0.0} | kwargs
    return ProbeSchedule(**settings)  # type: ignore[arg-type]


def test_replies_give_rtt_and_no_loss() -> None:
    harness = Harness(make())
    harness.schedule.set_targets([A, B], 0.0)
    harness.run_until(1.2, {A: 0.010, B: 0.020})
    metrics = harness.schedule.metrics()
    assert metrics[A].rtt_mean_us == pytest.approx(10_000, abs=1_001)  # replies seen on the next 1 ms tick
    assert metrics[B].rtt_mean_us == pytest.approx(20_000, abs=1_001)
    assert metrics[A].loss_mean == 0.0 and metrics[A].reachable
    status = harness.schedule.status(A)
    assert status is not None and status.sent >= 11 and status.sent - 1 <= status.replies <= status.sent
    assert status.lost == 0 and status.last_reply_at is not None


def test_a_silent_target_is_unreachable_within_three_intervals_of_its_first_lost_probe() -> None:
    harness = Harness(make())
    harness.schedule.set_targets([A], 0.0)
    harness.run_until(0.5, {A: 0.005})
    harness.run_until(1.5, {A: None})
    states = [(t, m.reachable) for t, (address, m) in harness.changes if address == A]
    flips = [(t, reachable) for (t, reachable), (_, before) in zip(states[1:], states, strict=False)
             if reachable != before]
    assert [reachable for _, reachable in flips] == [False]
    first_lost = min(t for t, slot in harness.sent if t > 0.5)
    assert flips[0][0] - first_lost <= 3 * 0.1 + 1e-9
    # from the failure: N intervals + timeout at most (plus the harness's 1 ms tick)
    assert flips[0][0] - 0.5 <= 3 * 0.1 + 0.05 + harness.tick + 1e-9
    status = harness.schedule.status(A)
    assert status is not None and status.streak_started_at == pytest.approx(first_lost)
    harness.run_until(1.7, {A: 0.005})
    back = [(t, m) for t, (address, m) in harness.changes if address == A and m.reachable and t > 1.5]
    assert back and back[0][0] - 1.5 <= 0.1 + 0.005 + 0.002
    assert harness.schedule.status(A).streak_started_at is None  # type: ignore[union-attr]


def test_loss_is_decided_at_the_timeout_not_before() -> None:
    schedule = make(timeout=0.05)
    schedule.set_targets([A], 0.0)
    slot = schedule.due(0.1)[0]
    schedule.sent(slot, 0.02)
    assert schedule.expire(0.0699) == [] and schedule.outstanding == 1
    changes = schedule.expire(0.07)
    assert schedule.outstanding == 0
    assert changes == [(A, PathMetrics(None, None, 1.0, 1.0, None, True))]


def test_reply_outcomes() -> None:
    schedule = make()
    schedule.set_targets([A], 0.0)
    first, = schedule.due(0.1)
    stamp = schedule.sent(first, 0.01)
    assert schedule.reply(A, first.sequence, stamp + 1, 0.02) == (Outcome.MISMATCH, None)
    assert schedule.reply(A, first.sequence + 1, stamp, 0.02) == (Outcome.UNKNOWN, None)
    outcome, change = schedule.reply(A, first.sequence, stamp, 0.02)
    assert outcome is Outcome.MATCHED and change is not None and change[1].rtt_mean_us == pytest.approx(10_000)
    assert schedule.reply(A, first.sequence, stamp, 0.021)[0] is Outcome.UNKNOWN  # a duplicate
    second, = schedule.due(0.2)
    stamp = schedule.sent(second, 0.11)
    outcome, change = schedule.reply(A, second.sequence, stamp, 0.11 + 0.0501)
    assert outcome is Outcome.LATE and change is not None and change[1].loss_mean == 0.5
    counters = schedule.counters
    assert (counters.mismatched_replies, counters.unknown_replies, counters.late_replies) == (1, 2, 1)


def test_probes_of_many_targets_are_spread_without_bursts() -> None:
    schedule = make(interval=1.0, timeout=1.0)
    targets = [ipaddress.ip_address(0x0A000000 + i) for i in range(5000)]
    schedule.set_targets(targets, 0.0)
    buckets: Counter[int] = Counter()
    per_target: Counter[IPAddress] = Counter()
    for step in range(1, 3001):  # 3 s in 1 ms steps
        now = step / 1000
        for slot in schedule.due(now):
            schedule.sent(slot, now)
            per_target[slot.address] += 1
            buckets[math.floor(now * 100)] += 1  # 10 ms buckets
        schedule.expire(now)
    assert set(per_target.values()) <= {3, 4} and len(per_target) == 5000
    assert sum(per_target.values()) <= 15_000 + 10  # a 4th probe only for phases within the first tick
    average = 5000 / 100
    # golden-ratio phases are even: random phases would put ~70 (1.4x) in the fullest bucket
    assert max(buckets.values()) <= 1.2 * average
    assert min(buckets[b] for b in range(1, 300)) >= 0.8 * average


def test_targets_added_later_join_the_grid_and_removed_ones_are_forgotten() -> None:
    schedule = make()
    schedule.set_targets([A], 0.0)
    slot, = schedule.due(0.1)
    stamp = schedule.sent(slot, 0.05)
    added, removed = schedule.set_targets([B], 0.06)
    assert (added, removed) == ([B], [A])
    assert schedule.reply(A, slot.sequence, stamp, 0.07)[0] is Outcome.UNKNOWN
    assert schedule.metrics().keys() == {B}
    assert schedule.expire(1.0) == []
    first_b = schedule.due(0.06 + 0.1)
    assert [s.address for s in first_b] == [B]
    assert schedule.set_targets([A, B], 0.2) == ([A], [])
    assert schedule.status(A) is not None and schedule.status(A).sent == 0  # type: ignore[union-attr]


def test_a_stalled_loop_skips_slots_instead_of_bursting() -> None:
    schedule = make()
    schedule.set_targets([A, B], 0.0)
    assert len(schedule.due(0.1)) == 2
    assert len(schedule.due(1.05)) == 2  # 10 intervals late: one probe each
    assert schedule.counters.skipped_slots >= 16
    assert schedule.due(1.05) == []


def test_only_material_changes_are_reported() -> None:
    schedule = make()
    schedule.set_targets([A], 0.0)
    reported = []
    for step in range(1, 21):
        slot, = schedule.due(step * 0.1)
        stamp = schedule.sent(slot, step * 0.1)
        _, change = schedule.reply(A, slot.sequence, stamp, step * 0.1 + 0.010 + (step % 2) * 0.0001)
        reported.append(change)
    assert reported[0] is not None
    assert all(change is None for change in reported[1:])  # +-100 us on 10 ms is not material


def test_throughput_is_configured_never_measured() -> None:
    schedule = make(throughput={A: 1e9})
    schedule.set_targets([A, B], 0.0)
    assert schedule.metrics()[A].throughput_bps == 1e9 and schedule.metrics()[B].throughput_bps is None
    changes = schedule.set_throughput({B: 5e8})
    assert {address for address, _ in changes} == {A, B}
    assert schedule.metrics()[A].throughput_bps is None and schedule.metrics()[B].throughput_bps == 5e8


def test_timeout_must_not_exceed_interval() -> None:
    with pytest.raises(ValueError):
        make(timeout=0.2)
