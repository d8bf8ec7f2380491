"""When to send a route again: threshold-triggered updates with a minimum interval.

Pure: ``step(record, desired, now, policy)`` says what to send for one route
now (if anything), what peers then hold, and when to look at the route again.

Rules, per route (DESIGN.md section 2, CATS framework "threshold-triggered
updates and dampening"):

- A withdrawal is sent at once: an unhealthy instance must stop attracting
  flows as fast as the health check can say so.
- Any announcement (first, significant change, refresh) is sent no sooner than
  ``min_interval`` after the previous update of that route of either kind, so
  no metric sequence can make a route update more often than that.
- A change is significant when the next hop, the state flags, the version or
  the set of metrics changes, or one metric moves by at least its threshold
  (absolute, or relative to the published value). It is sent as soon as the
  minimum interval allows.
- A change below every threshold is sent at the next refresh, ``refresh_interval``
  after the last update, with the values current then. Content identical to
  what peers hold is never sent again: ExaBGP itself drops such a repeat when
  its adj-rib-out cache is on, and it would carry no information.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from dyncast_bgp.model import IPAddress, MetricsView, StateFlag


@dataclass(frozen=True, slots=True)
class Threshold:
    relative: float | None = 0.10
    absolute: float | None = None

    def crossed(self, old: float, new: float) -> bool:
        delta = abs(new - old)
        if delta == 0.0:
            return False
        if self.absolute is not None and delta >= self.absolute:
            return True
        if self.relative is not None:
            base = abs(old)
            return base == 0.0 or delta >= self.relative * base
        return False


@dataclass(frozen=True, slots=True)
class Policy:
    min_interval: float = 1.0
    refresh_interval: float = 60.0
    threshold: Threshold = Threshold()
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_interval) and self.min_interval > 0):
            raise ValueError(f"min_interval must be > 0, got {self.min_interval!r}")
        if not self.refresh_interval >= self.min_interval:
            raise ValueError("refresh_interval must be >= min_interval")

    def threshold_for(self, metric: str) -> Threshold:
        return self.thresholds.get(metric, self.threshold)


@dataclass(frozen=True, slots=True)
class Content:
    """What one route carries: next hop and metrics (communities are rendered from it)."""

    next_hop: IPAddress
    metrics: MetricsView = field(default_factory=MetricsView)
    flags: StateFlag = StateFlag.NONE
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """What peers hold for one route and when it was last updated."""

    published: Content | None = None
    sent_at: float | None = None


class Action:
    ANNOUNCE = "announce"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class Step:
    record: Record
    action: str | None = None  # Action.ANNOUNCE / Action.WITHDRAW / None
    content: Content | None = None  # what to announce, or what to withdraw
    due: float | None = None  # look at this route again at this time
    reason: str = ""


def significant(old: Content, new: Content, policy: Policy) -> str | None:
    """Why ``new`` must be sent soon instead of at the next refresh (None: it need not)."""
    if old.next_hop != new.next_hop:
        return "next hop changed"
    if old.flags != new.flags:
        return "state flags changed"
    if old.version != new.version:
        return "version changed"
    if set(old.metrics) != set(new.metrics):
        return "metric set changed"
    for name, value in new.metrics.items():
        if policy.threshold_for(name).crossed(old.metrics[name], value):
            return f"{name} crossed its threshold"
    return None


def step(record: Record, desired: Content | None, now: float, policy: Policy) -> Step:
    published, sent_at = record.published, record.sent_at
    if desired is None:
        if published is None:
            return Step(record)
        return Step(Record(None, now), Action.WITHDRAW, published, reason="withdrawn")
    earliest = now if sent_at is None else sent_at + policy.min_interval
    if published is None:
        return _announce_at(record, desired, earliest, now, "first announcement")
    if desired == published:
        return Step(record)
    reason = significant(published, desired, policy)
    if reason is None:
        assert sent_at is not None
        return _announce_at(record, desired, sent_at + policy.refresh_interval, now, "refresh")
    return _announce_at(record, desired, earliest, now, reason)


def _announce_at(record: Record, desired: Content, when: float, now: float, reason: str) -> Step:
    if now >= when:
        return Step(Record(desired, now), Action.ANNOUNCE, desired, reason=reason)
    return Step(record, due=when, reason=f"{reason}, held until {when:.3f}")
