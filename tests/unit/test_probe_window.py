"""Window statistics and the material-change rule (dyncast_bgp.probe.window), by example."""

from __future__ import annotations

import pytest

from dyncast_bgp.model import PathMetrics
from dyncast_bgp.probe.window import (
    ChangeThreshold,
    PathWindow,
    changed_materially,
    default_sub_window,
    loss_peak_of,
    sub_window_bounds,
)


def fill(window: PathWindow, outcomes: list[int | None], first_seq: int = 1) -> None:
    for offset, rtt in enumerate(outcomes):
        window.record(first_seq + offset, rtt)


def test_empty_window_is_unknown_but_reachable() -> None:
    assert PathWindow(10, 3).metrics() == PathMetrics(None, None, None, None, None, True)


def test_statistics_of_a_mixed_window() -> None:
    window = PathWindow(8, 3, sub_window=2)
    fill(window, [1000, None, 3000, 2000, None, None, 4000, 5000])
    metrics = window.metrics(throughput_bps=1e9)
    assert metrics.rtt_mean_us == pytest.approx((1 + 3 + 2 + 4 + 5) / 5)
    assert metrics.rtt_peak_us == pytest.approx(5.0)
    assert metrics.loss_mean == pytest.approx(3 / 8)
    assert metrics.loss_peak == pytest.approx(1.0)  # the sub-window [None, None]
    assert metrics.throughput_bps == 1e9
    assert metrics.reachable


def test_old_outcomes_leave_the_window() -> None:
    window = PathWindow(3, 5)
    fill(window, [9000, None, 1000, 2000, 3000])
    assert window.samples() == [1000, 2000, 3000]
    metrics = window.metrics()
    assert (metrics.rtt_mean_us, metrics.rtt_peak_us, metrics.loss_mean) == (2.0, 3.0, 0.0)


def test_sub_windows_partition_from_the_newest() -> None:
    assert default_sub_window(10) == 3 and default_sub_window(1) == 1 and default_sub_window(20) == 5
    assert sub_window_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert sub_window_bounds(2, 3) == [(0, 2)]
    assert sub_window_bounds(0, 3) == []
    assert loss_peak_of([True, False, False, False, True, True, False], 3) == pytest.approx(2 / 3)


def test_unreachable_after_n_losses_in_a_row_and_back_with_one_reply() -> None:
    window = PathWindow(10, 3)
    fill(window, [100, None, None])
    assert window.reachable and window.consecutive_losses == 2
    window.record(4, None)
    assert not window.reachable and not window.metrics().reachable
    window.record(5, 100)
    assert window.reachable and window.consecutive_losses == 0


def test_streak_is_not_bounded_by_the_window() -> None:
    window = PathWindow(2, 5)
    fill(window, [None] * 4)
    assert window.reachable
    window.record(5, None)
    assert not window.reachable


def test_a_loss_older_than_the_newest_reply_does_not_extend_the_streak() -> None:
    window = PathWindow(10, 2)
    window.record(2, 500)
    window.record(1, None)  # completed after probe 2 (reordered): not "in a row" after the reply
    window.record(3, None)
    assert window.consecutive_losses == 1 and window.reachable


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        PathWindow(0, 3)
    with pytest.raises(ValueError):
        PathWindow(5, 0)
    with pytest.raises(ValueError):
        PathWindow(5, 3, sub_window=6)
    with pytest.raises(ValueError):
        PathWindow(5, 3).record(1, -1)


BASE = PathMetrics(rtt_mean_us=10_000.0, rtt_peak_us=12_000.0, loss_mean=0.1, loss_peak=0.2, reachable=True)
THRESHOLD = ChangeThreshold(rtt_relative=0.1, rtt_absolute_us=500.0, loss_absolute=0.05)


@pytest.mark.parametrize(("new", "material"), [
    (BASE, False),
    (PathMetrics(10_900.0, 12_000.0, 0.1, 0.2), False),  # 9 %
    (PathMetrics(11_000.0, 12_000.0, 0.1, 0.2), True),  # 10 %
    (PathMetrics(10_000.0, 13_100.0, 0.1, 0.2), False),  # peak +9 %
    (PathMetrics(10_000.0, 12_000.0, 0.14, 0.2), False),
    (PathMetrics(10_000.0, 12_000.0, 0.15, 0.2), True),
    (PathMetrics(10_000.0, 12_000.0, 0.1, 0.3), True),
    (PathMetrics(10_000.0, 12_000.0, 0.1, 0.2, reachable=False), True),
    (PathMetrics(10_000.0, 12_000.0, 0.1, 0.2, throughput_bps=1e6), True),
    (PathMetrics(None, None, 0.1, 0.2), True),
])
def test_material_change(new: PathMetrics, material: bool) -> None:
    assert changed_materially(BASE, new, THRESHOLD) is material
    assert changed_materially(None, new, THRESHOLD)


def test_small_rtts_need_the_absolute_floor() -> None:
    old = PathMetrics(rtt_mean_us=50.0, rtt_peak_us=60.0, loss_mean=0.0, loss_peak=0.0)
    jitter = PathMetrics(rtt_mean_us=300.0, rtt_peak_us=400.0, loss_mean=0.0, loss_peak=0.0)
    assert not changed_materially(old, jitter, THRESHOLD)  # +500 % but below 500 us
