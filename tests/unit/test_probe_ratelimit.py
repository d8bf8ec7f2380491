"""Token buckets of the echo responder (dyncast_bgp.probe.ratelimit)."""

from __future__ import annotations

import pytest

from dyncast_bgp.probe.ratelimit import RateLimits, SourceLimiter, TokenBucket


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=3.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert not bucket.take(0.05)  # half a token
    assert bucket.take(0.1)
    assert not bucket.take(0.1)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # refills to burst, not beyond


def test_time_going_backwards_adds_nothing() -> None:
    bucket = TokenBucket(rate=10.0, burst=1.0, now=5.0)
    assert bucket.take(5.0)
    assert not bucket.take(4.0)


def test_sources_have_their_own_buckets() -> None:
    limiter = SourceLimiter(RateLimits(per_source_rate=1.0, per_source_burst=2.0), now=0.0)
    assert [limiter.allow("192.0.2.1", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("192.0.2.2", 0.0)
    assert limiter.allow("192.0.2.1", 1.0)


def test_the_shared_bucket_bounds_spoofed_sources() -> None:
    limits = RateLimits(per_source_rate=100.0, per_source_burst=100.0, total_rate=5.0, total_burst=5.0)
    limiter = SourceLimiter(limits, now=0.0)
    allowed = sum(limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0) for i in range(1000))
    assert allowed == 5


def test_a_refused_request_costs_no_token() -> None:
    limits = RateLimits(per_source_rate=1.0, per_source_burst=1.0, total_rate=1.0, total_burst=1.0)
    limiter = SourceLimiter(limits, now=0.0)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("b", 0.0)  # shared bucket empty: b's own bucket keeps its token
    assert limiter.allow("b", 1.0)


def test_the_table_forgets_the_least_recently_seen_source() -> None:
    limiter = SourceLimiter(RateLimits(per_source_rate=0.001, per_source_burst=1.0, max_sources=2), now=0.0)
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0)
    assert not limiter.allow("a", 0.0)  # a is now the most recent
    assert limiter.allow("c", 0.0)  # evicts b
    assert len(limiter) == 2
    assert not limiter.allow("a", 0.0)  # still remembered (and empty)
    assert limiter.allow("b", 0.0)  # forgotten: back with a full bucket


@pytest.mark.parametrize("fields", [{"per_source_rate": 0.0}, {"total_burst": 0.5}, {"max_sources": 0}])
def test_limits_are_validated(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimits(**fields)  # type: ignore[arg-type]
