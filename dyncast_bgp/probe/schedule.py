"""When each target is probed, which probes are outstanding, and what their outcome was (pure).

:class:`ProbeSchedule` is the prober without sockets or sleeping: the I/O layer
(:mod:`dyncast_bgp.probe.prober`) asks it which probes are due, tells it when
each was sent and which replies arrived, and lets it expire the rest. Time is
always passed in, so tests drive it with a fake clock.

Scheduling: every target is probed once per ``interval`` on a fixed grid
``start + phase + k * interval``. The k-th target ever added gets the phase
``frac(offset + k * 0.618...) * interval`` (a golden-ratio sequence), so any
number of targets, added at any time, are spread evenly over the interval
without bursts, and a random ``offset`` per prober keeps the ingress routers
that probe the same agent out of step. A target is never sent two probes to
catch up after a stall: the slots missed are skipped (and counted).

Timeouts: all probes share one timeout, so deadlines come in send order and a
FIFO is the whole timer wheel; replies are matched by (target, sequence) in a
dict per target, and entries whose probe was answered are skipped when they
reach the front. A probe counts as lost when no valid reply came within
``timeout`` (a later reply is counted as late and changes nothing).

Hot paths hold references to the per-target records and key them by the
address *text* (whose hash Python caches), never hashing ``ipaddress``
objects per packet.
"""

from __future__ import annotations

import enum
import heapq
import ipaddress
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from dyncast_bgp.model import IPAddress, PathMetrics
from dyncast_bgp.probe.packet import U32, U64
from dyncast_bgp.probe.window import DEFAULT_THRESHOLD, ChangeThreshold, PathWindow, Values, values_differ

GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
Change = tuple[IPAddress, PathMetrics]


class Slot(NamedTuple):
    """A probe that is due: ``sequence`` is its 32-bit wire sequence number, ``text`` the target address as text."""

    address: IPAddress
    text: str
    sequence: int
    target: _Target


class Outcome(enum.Enum):
    MATCHED = "matched"
    LATE = "late"  # matched, but after the timeout: counted as lost
    UNKNOWN = "unknown"  # no such probe outstanding (already expired, never sent, or target removed)
    MISMATCH = "mismatch"  # a probe with this sequence is outstanding, but the send time differs


@dataclass(frozen=True, slots=True)
class TargetStatus:
    """Counters and timestamps of one target, for logs and ``dyncast ctl``."""

    address: IPAddress
    metrics: PathMetrics
    sent: int
    replies: int
    lost: int
    late: int
    consecutive_losses: int
    last_reply_at: float | None
    streak_started_at: float | None
    """Send time of the first probe of the current run of losses (None while answering)."""


@dataclass(slots=True)
class _Pending:
    serial: int
    sent_at: float
    stamp: int


@dataclass(slots=True, eq=False)
class _Target:
    address: IPAddress
    text: str
    window: PathWindow
    phase: float
    throughput: float | None = None
    cached: PathMetrics | None = None  # None: the window changed since it was last built
    reported: Values | None = None
    active: bool = True
    slot: int = 0
    serial: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)
    sent: int = 0
    replies: int = 0
    lost: int = 0
    late: int = 0
    last_reply_at: float | None = None
    streak_started_at: float | None = None


@dataclass(slots=True)
class ScheduleCounters:
    skipped_slots: int = 0
    unknown_replies: int = 0
    late_replies: int = 0
    mismatched_replies: int = 0


def stamp_of(at: float) -> int:
    """The send-time field of a probe sent at ``at`` seconds (nanoseconds, 64 bits)."""
    return round(at * 1e9) & U64


class ProbeSchedule:
    """Probe schedule, outstanding probes and windows of every target; all times are passed in."""

    def __init__(self, *, interval: float, timeout: float, window: int, unreachable_after: int, start: float,
                 sub_window: int | None = None, phase_offset: float = 0.0,
                 threshold: ChangeThreshold = DEFAULT_THRESHOLD,
                 throughput: Mapping[IPAddress, float] | None = None) -> None:
        if not (interval > 0 and 0 < timeout <= interval):
            raise ValueError(f"need 0 < timeout ({timeout}) <= interval ({interval})")
        self.interval = interval
        self.timeout = timeout
        self.window_size = window
        self.unreachable_after = unreachable_after
        self.sub_window = sub_window
        self.threshold = threshold
        self.counters = ScheduleCounters()
        self._start = start
        self._phase_offset = phase_offset % 1.0
        self._added = 0
        self._throughput: dict[IPAddress, float] = dict(throughput or {})
        self._targets: dict[IPAddress, _Target] = {}
        self._by_text: dict[str, _Target] = {}
        self._due: list[tuple[float, int, _Target]] = []  # (time, tie-break, target)
        self._deadlines: deque[tuple[float, _Target, int]] = deque()  # (deadline, target, sequence)
        self._outstanding = 0

    # ---------------------------------------------------------------- targets

    @property
    def targets(self) -> frozenset[IPAddress]:
        return frozenset(self._targets)

    def set_targets(self, addresses: Iterable[IPAddress], now: float) -> tuple[list[IPAddress], list[IPAddress]]:
        """Probe exactly ``addresses`` from now on; returns ``(added, removed)``, sorted.

        A target that stays keeps its window and schedule; a removed target's
        outstanding probes are forgotten (their replies count as unknown).
        """
        wanted = set(addresses)
        removed = sorted((a for a in self._targets if a not in wanted), key=_address_key)
        added = sorted((a for a in wanted if a not in self._targets), key=_address_key)
        for address in removed:
            target = self._targets.pop(address)
            del self._by_text[target.text]
            target.active = False
            self._outstanding -= len(target.pending)
            target.pending.clear()
        for address in added:
            self._add(address, now)
        return added, removed

    def _add(self, address: IPAddress, now: float) -> None:
        phase = ((self._phase_offset + self._added * GOLDEN) % 1.0) * self.interval
        self._added += 1
        window = PathWindow(self.window_size, self.unreachable_after, self.sub_window)
        throughput = self._throughput.get(address)
        target = _Target(address, str(address), window, phase, throughput)
        target.slot = max(0, math.ceil((now - self._slot_time(target, 0)) / self.interval))
        self._targets[address] = target
        self._by_text[target.text] = target
        heapq.heappush(self._due, (self._slot_time(target, target.slot), self._added, target))

    def _slot_time(self, target: _Target, slot: int) -> float:
        """Slot ``slot`` of ``target`` on its grid (computed, never accumulated, so it does not drift)."""
        return self._start + target.phase + slot * self.interval

    def set_throughput(self, throughput: Mapping[IPAddress, float]) -> list[Change]:
        """Replace the configured capacities (bits/s); returns the targets whose metrics changed."""
        self._throughput = dict(throughput)
        changes = []
        for target in self._targets.values():
            target.throughput = self._throughput.get(target.address)
            change = self._refresh(target)
            if change is not None:
                changes.append(change)
        return changes

    # ---------------------------------------------------------------- sending

    def due(self, now: float) -> list[Slot]:
        """Every probe due at or before ``now``, one per target at most; each target moves to its next slot."""
        slots: list[Slot] = []
        heap = self._due
        while heap and heap[0][0] <= now:
            _, order, target = heapq.heappop(heap)
            if not target.active:
                continue  # removed (a re-added address has a new record and its own entry)
            target.serial += 1
            slots.append(Slot(target.address, target.text, target.serial & U32, target))
            following = target.slot + 1
            if self._slot_time(target, following) <= now:
                late = math.floor((now - self._slot_time(target, following)) / self.interval) + 1
                self.counters.skipped_slots += late
                following += late
            target.slot = following
            heapq.heappush(heap, (self._slot_time(target, following), order, target))
        return slots

    def sent(self, slot: Slot, at: float) -> int:
        """Record that ``slot`` goes out at ``at``; returns the send-time stamp the packet must carry."""
        stamp = stamp_of(at)
        target = slot.target
        if target.active:
            target.sent += 1
            target.pending[slot.sequence] = _Pending(target.serial, at, stamp)
            self._outstanding += 1
            self._deadlines.append((at + self.timeout, target, slot.sequence))
        return stamp

    # ---------------------------------------------------------------- outcomes

    def reply(self, address: IPAddress | str, sequence: int, stamp: int,
              now: float) -> tuple[Outcome, Change | None]:
        """A reply from ``address`` (object or text) for ``sequence``, carrying send time ``stamp``, came at ``now``."""
        target = self._by_text.get(address) if isinstance(address, str) else self._targets.get(address)
        if target is None and isinstance(address, str):  # a textual form other than ours (e.g. IPv6 spelling)
            parsed = _parse(address)
            target = None if parsed is None else self._targets.get(parsed)
        pending = None if target is None else target.pending.get(sequence)
        if target is None or pending is None:
            self.counters.unknown_replies += 1
            return Outcome.UNKNOWN, None
        if pending.stamp != stamp:
            self.counters.mismatched_replies += 1
            return Outcome.MISMATCH, None
        del target.pending[sequence]
        self._outstanding -= 1
        elapsed = now - pending.sent_at
        if elapsed > self.timeout:
            self.counters.late_replies += 1
            target.late += 1
            return Outcome.LATE, self._lose(target, pending)
        target.replies += 1
        target.last_reply_at = now
        target.window.record(pending.serial, max(0, round(elapsed * 1e9)))
        if target.window.consecutive_losses == 0:
            target.streak_started_at = None
        return Outcome.MATCHED, self._refresh(target)

    def expire(self, now: float) -> list[Change]:
        """Count every probe whose timeout passed by ``now`` as lost; returns the material changes."""
        changes: list[Change] = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, target, sequence = deadlines.popleft()
            pending = target.pending.pop(sequence, None)
            if pending is None:
                continue  # answered in time (or late: already counted), or the target was removed
            self._outstanding -= 1
            change = self._lose(target, pending)
            if change is not None:
                changes.append(change)
        return changes

    def _lose(self, target: _Target, pending: _Pending) -> Change | None:
        target.lost += 1
        before = target.window.consecutive_losses
        target.window.record(pending.serial, None)
        if before == 0 and target.window.consecutive_losses == 1:
            target.streak_started_at = pending.sent_at
        return self._refresh(target)

    def _refresh(self, target: _Target) -> Change | None:
        """Called after every change of a target's window; builds PathMetrics only when it must."""
        target.cached = None
        values = target.window.values(target.throughput)
        if target.reported is None or values_differ(target.reported, values, self.threshold):
            target.reported = values
            return target.address, _metrics(target)
        return None

    # ---------------------------------------------------------------- reading

    def next_wakeup(self) -> float | None:
        """The earliest time something is due: a probe to send or a timeout to expire."""
        if self._due and self._deadlines:
            return min(self._due[0][0], self._deadlines[0][0])
        if self._due:
            return self._due[0][0]
        return self._deadlines[0][0] if self._deadlines else None

    @property
    def outstanding(self) -> int:
        """Probes sent and neither answered nor expired yet."""
        return self._outstanding

    def metrics(self) -> dict[IPAddress, PathMetrics]:
        return {address: _metrics(target) for address, target in self._targets.items()}

    def status(self, address: IPAddress) -> TargetStatus | None:
        target = self._targets.get(address)
        if target is None:
            return None
        return TargetStatus(address, _metrics(target), target.sent, target.replies, target.lost, target.late,
                            target.window.consecutive_losses, target.last_reply_at, target.streak_started_at)

    def window(self, address: IPAddress) -> PathWindow | None:
        target = self._targets.get(address)
        return None if target is None else target.window


def _metrics(target: _Target) -> PathMetrics:
    if target.cached is None:
        target.cached = target.window.metrics(target.throughput)
    return target.cached


def _address_key(address: IPAddress) -> tuple[int, int]:
    return address.version, int(address)


def _parse(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
