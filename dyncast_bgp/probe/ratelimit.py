"""Token buckets that keep an echo responder from being a useful reflector (pure; time passed in).

Each source address gets a bucket of ``per_source_burst`` tokens refilled at
``per_source_rate`` per second, and all sources together share one bucket
(``total_rate`` / ``total_burst``), so spoofing many sources cannot raise the
reply rate above the total either. A reply costs one token from both; when
either is empty the request is dropped. The per-source table holds at most
``max_sources`` entries; the least recently seen source is forgotten first
(it comes back with a full bucket, which the shared bucket still bounds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Replies per second (and bursts) an echo responder grants; see docs/probes.md."""

    per_source_rate: float = 100.0
    per_source_burst: float = 200.0
    total_rate: float = 5000.0
    total_burst: float = 5000.0
    max_sources: int = 65536

    def __post_init__(self) -> None:
        if min(self.per_source_rate, self.per_source_burst, self.total_rate, self.total_burst) <= 0:
            raise ValueError("rates and bursts must be positive")
        if self.per_source_burst < 1 or self.total_burst < 1:
            raise ValueError("bursts must allow at least one reply")
        if self.max_sources < 1:
            raise ValueError("max_sources must be at least 1")


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; starts full."""

    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.last = now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class SourceLimiter:
    """Per-source buckets plus one shared bucket; :meth:`allow` answers "may I reply to this one?"."""

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.limits = limits
        self._total = TokenBucket(limits.total_rate, limits.total_burst, now)
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def allow(self, source: str, now: float) -> bool:
        """True (and one token taken from both buckets) when a reply to ``source`` is within the limits."""
        bucket = self._sources.get(source)
        if bucket is None:
            if len(self._sources) >= self.limits.max_sources:
                self._sources.popitem(last=False)
            bucket = TokenBucket(self.limits.per_source_rate, self.limits.per_source_burst, now)
            self._sources[source] = bucket
        else:
            self._sources.move_to_end(source)
        bucket.refill(now)
        self._total.refill(now)
        if bucket.tokens < 1.0 or self._total.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        self._total.tokens -= 1.0
        return True
