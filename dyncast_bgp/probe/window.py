"""Per-target statistics over a sliding window of probe outcomes (pure: no I/O, no clock).

A :class:`PathWindow` holds the outcomes of the last ``size`` *completed* probes
of one target, in the order they completed: a round-trip time in nanoseconds,
or a loss (no valid reply within the timeout). From them (docs/probes.md):

- ``rtt_mean_us``: mean RTT of the answered probes in the window (None: none answered);
- ``rtt_peak_us``: largest RTT in the window (None: none answered);
- ``loss_mean``: lost / completed probes in the window (None: nothing completed);
- ``loss_peak``: the window is cut into sub-windows of ``sub_window`` consecutive
  probes counted from the newest (default ``ceil(size / 4)``; the oldest
  sub-window takes the remainder, so it holds ``sub_window`` to
  ``2 * sub_window - 1`` probes, or all of them while fewer than ``sub_window``
  completed); ``loss_peak`` is the largest loss ratio of a sub-window. Because
  the sub-windows partition the window, ``loss_peak >= loss_mean`` always;
- ``reachable``: False once ``unreachable_after`` probes in a row (by probe
  sequence, not bounded by the window) were lost; True again with the next reply.

Every update is O(1) amortised and reading the metrics is O(number of
sub-windows) (at most 5 with the default), so thousands of targets cost little.
Sums are kept in integer nanoseconds, so they never drift.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from dyncast_bgp.model import PathMetrics

SUB_WINDOWS = 4
LOST = -1
Values = tuple[float | None, float | None, float | None, float | None, float | None, bool]
"""The fields of :class:`PathMetrics` in order: RTT mean and peak (us), loss mean and peak, throughput, reachable."""
_EPSILON = 1e-9  # ratios such as 0.15 - 0.1 fall just short of 0.05 in binary floating point


def default_sub_window(size: int) -> int:
    return max(1, math.ceil(size / SUB_WINDOWS))


def sub_window_bounds(count: int, sub_window: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each sub-window over ``count`` outcomes (oldest first)."""
    if count <= 0:
        return []
    blocks = max(1, count // sub_window)
    first_end = count - (blocks - 1) * sub_window
    return [(0, first_end)] + [(first_end + i * sub_window, first_end + (i + 1) * sub_window)
                               for i in range(blocks - 1)]


def loss_peak_of(lost: Sequence[bool], sub_window: int) -> float | None:
    """Reference definition of ``loss_peak`` over outcomes ``lost`` (oldest first)."""
    bounds = sub_window_bounds(len(lost), sub_window)
    if not bounds:
        return None
    return max(sum(lost[start:end]) / (end - start) for start, end in bounds)


class PathWindow:
    """The last ``size`` probe outcomes of one target and the statistics over them."""

    __slots__ = ("_cum", "_last_reply_seq", "_max", "_outcomes", "_replies", "_rtt_sum", "_streak",
                 "_total", "size", "sub_window", "unreachable_after")

    def __init__(self, size: int, unreachable_after: int, sub_window: int | None = None) -> None:
        if size < 1 or unreachable_after < 1:
            raise ValueError("window size and unreachable_after must be at least 1")
        if sub_window is not None and not 1 <= sub_window <= size:
            raise ValueError(f"sub_window must be within 1..{size}")
        self.size = size
        self.unreachable_after = unreachable_after
        self.sub_window = sub_window or default_sub_window(size)
        self._outcomes: deque[int] = deque()  # RTT in ns, or LOST
        self._cum: deque[int] = deque([0])  # losses before each position: len(_outcomes) + 1 entries
        self._max: deque[tuple[int, int]] = deque()  # (completion index, RTT), RTTs decreasing
        self._total = 0  # outcomes recorded so far (completion index of the next one)
        self._rtt_sum = 0
        self._replies = 0
        self._streak = 0
        self._last_reply_seq = -1

    # ---------------------------------------------------------------- updates

    def record(self, sequence: int, rtt_ns: int | None) -> None:
        """Record probe ``sequence`` (increasing per target) as answered after ``rtt_ns`` or lost (None)."""
        if rtt_ns is not None and rtt_ns < 0:
            raise ValueError(f"negative RTT {rtt_ns} ns")
        if len(self._outcomes) == self.size:
            self._evict()
        index = self._total
        self._total += 1
        if rtt_ns is None:
            self._outcomes.append(LOST)
            self._cum.append(self._cum[-1] + 1)
            if sequence > self._last_reply_seq:
                self._streak += 1
            return
        self._outcomes.append(rtt_ns)
        self._cum.append(self._cum[-1])
        self._rtt_sum += rtt_ns
        self._replies += 1
        while self._max and self._max[-1][1] <= rtt_ns:
            self._max.pop()
        self._max.append((index, rtt_ns))
        if sequence > self._last_reply_seq:
            self._last_reply_seq = sequence
            self._streak = 0

    def _evict(self) -> None:
        oldest = self._outcomes.popleft()
        self._cum.popleft()
        if oldest != LOST:
            self._rtt_sum -= oldest
            self._replies -= 1
        first = self._total - len(self._outcomes)
        while self._max and self._max[0][0] < first:
            self._max.popleft()

    # ---------------------------------------------------------------- reading

    @property
    def count(self) -> int:
        """Completed probes in the window."""
        return len(self._outcomes)

    @property
    def losses(self) -> int:
        return self._cum[-1] - self._cum[0]

    @property
    def consecutive_losses(self) -> int:
        """Probes lost in a row after the newest answered one."""
        return self._streak

    @property
    def reachable(self) -> bool:
        return self._streak < self.unreachable_after

    def samples(self) -> list[int | None]:
        """The window's outcomes, oldest first: RTT in ns or None for a loss."""
        return [None if value == LOST else value for value in self._outcomes]

    def loss_peak(self) -> float | None:
        """:func:`loss_peak_of` over the window, from the running loss counts (no list built)."""
        count = len(self._outcomes)
        if count == 0:
            return None
        cum = self._cum
        if cum[-1] == cum[0]:
            return 0.0
        sub = self.sub_window
        blocks = max(1, count // sub)
        first_end = count - (blocks - 1) * sub
        peak = (cum[first_end] - cum[0]) / first_end
        for end in range(first_end + sub, count + 1, sub):
            peak = max(peak, (cum[end] - cum[end - sub]) / sub)
        return peak

    def values(self, throughput_bps: float | None = None) -> Values:
        """The fields of :meth:`metrics` as a plain tuple (cheap: the per-probe path compares these)."""
        count = len(self._outcomes)
        replies = self._replies
        return (self._rtt_sum / replies / 1000.0 if replies else None,
                self._max[0][1] / 1000.0 if replies else None,
                (count - replies) / count if count else None,
                self.loss_peak(),
                throughput_bps,
                self._streak < self.unreachable_after)

    def metrics(self, throughput_bps: float | None = None) -> PathMetrics:
        """The window as :class:`PathMetrics`; ``throughput_bps`` is passed through (never measured here)."""
        return PathMetrics(*self.values(throughput_bps))


@dataclass(frozen=True, slots=True)
class ChangeThreshold:
    """When new path metrics differ *materially* from the last ones reported.

    A change is material when ``reachable`` or the throughput changes, a value
    appears or disappears, an RTT (mean or peak) moves by at least
    ``max(rtt_absolute_us, rtt_relative * old)``, or a loss ratio (mean or
    peak) moves by at least ``loss_absolute``.
    """

    rtt_relative: float = 0.10
    rtt_absolute_us: float = 500.0
    loss_absolute: float = 0.05


def changed_materially(old: PathMetrics | None, new: PathMetrics, threshold: ChangeThreshold) -> bool:
    """True when ``new`` differs materially from ``old`` (always when there is no ``old``)."""
    if old is None:
        return True
    return values_differ(_values(old), _values(new), threshold)


def _values(metrics: PathMetrics) -> Values:
    return (metrics.rtt_mean_us, metrics.rtt_peak_us, metrics.loss_mean, metrics.loss_peak,
            metrics.throughput_bps, metrics.reachable)


def values_differ(old: Values, new: Values, threshold: ChangeThreshold) -> bool:
    """:func:`changed_materially` on the tuples of :meth:`PathWindow.values`."""
    if old[5] != new[5] or old[4] != new[4]:
        return True
    for index in (0, 1):
        before, after = old[index], new[index]
        if before is None or after is None:
            if before is not after:
                return True
        elif abs(after - before) >= max(threshold.rtt_absolute_us, threshold.rtt_relative * before) - _EPSILON:
            return True
    for index in (2, 3):
        before, after = old[index], new[index]
        if before is None or after is None:
            if before is not after:
                return True
        elif abs(after - before) >= threshold.loss_absolute - _EPSILON:
            return True
    return False


DEFAULT_THRESHOLD = ChangeThreshold()
