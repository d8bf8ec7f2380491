"""Properties of the load generator's aggregation: counts conserve, shares sum to 1, order does not matter."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.lab.loadgen import NO_INSTANCE, RequestEvent, Tally, bucketize, session_facts, window_stats

INSTANCES = st.sampled_from(["a", "b", "c", None])


@st.composite
def runs(draw: st.DrawFn) -> list[RequestEvent]:
    """Sessions of 1..5 requests; times increase within a session; some fail, some change instance."""
    events: list[RequestEvent] = []
    for session in range(draw(st.integers(0, 12))):
        client = draw(st.sampled_from(["", "c2"]))
        t = draw(st.floats(0.0, 20.0, allow_nan=False))
        for index in range(draw(st.integers(1, 5))):
            t += draw(st.floats(0.0, 3.0, allow_nan=False))
            ok = draw(st.booleans())
            events.append(RequestEvent(t, session, index, draw(INSTANCES), draw(st.floats(0.0, 1e4, allow_nan=False)),
                                       ok, None if ok else draw(st.sampled_from(["reset", "status 503"])), client))
    return events


def in_session_order(events: list[RequestEvent]) -> list[RequestEvent]:
    return sorted(events, key=lambda e: (e.client, e.session, e.index))


@given(runs(), st.floats(0.1, 7.0))
@settings(max_examples=200)
def test_buckets_conserve_requests_failures_sessions_and_moves(events: list[RequestEvent], width: float) -> None:
    buckets = bucketize(events, width)
    facts = session_facts(events)
    assert sum(b.requests for b in buckets) == len(events)
    assert sum(b.failures for b in buckets) == sum(not e.ok for e in events)
    assert sum(b.sessions for b in buckets) == len(facts)
    assert sum(b.moves for b in buckets) == sum(f.moved_at is not None for f in facts.values())
    for bucket in buckets:
        assert math.isclose(bucket.end - bucket.start, width, rel_tol=1e-9, abs_tol=1e-9)
        if bucket.sessions:
            assert math.isclose(sum(bucket.shares.values()), 1.0)
        else:
            assert bucket.shares == {}
        if bucket.p50_ms is not None:
            assert bucket.p99_ms is not None and bucket.p50_ms <= bucket.p99_ms
        assert (bucket.p50_ms is None) == (bucket.requests == bucket.failures)
        assert sum(bucket.errors.values()) == bucket.failures


@given(runs(), st.randoms(use_true_random=False))
def test_order_of_events_does_not_matter(events: list[RequestEvent], rng: random.Random) -> None:
    shuffled = list(events)
    rng.shuffle(shuffled)
    assert bucketize(shuffled, 1.0) == bucketize(events, 1.0)


@given(runs())
def test_the_live_tally_agrees_with_the_offline_aggregation(events: list[RequestEvent]) -> None:
    tally = Tally()
    for event in in_session_order(events):
        tally.add(event)
    live = tally.stats()
    offline = window_stats(events, -math.inf, math.inf)
    assert (live.requests, live.failures, live.moves, live.new_sessions, live.errors) == (
        offline.requests, offline.failures, offline.moves, offline.new_sessions, offline.errors)
    assert (live.p50_ms, live.p99_ms) == (offline.p50_ms, offline.p99_ms)


@given(runs(), st.dictionaries(st.sampled_from(["a", "b", "c"]), st.sampled_from(["site-1", "site-2"])))
def test_grouping_into_sites_keeps_the_totals(events: list[RequestEvent], sites: dict[str, str]) -> None:
    stats = window_stats(events, -math.inf, math.inf)
    grouped = stats.grouped(sites)
    assert grouped.sessions == stats.sessions
    assert grouped.new_sessions.get(NO_INSTANCE, 0) == stats.new_sessions.get(NO_INSTANCE, 0)
    if stats.sessions:
        assert math.isclose(sum(grouped.shares.values()), 1.0)


@given(runs(), st.floats(0.0, 30.0), st.floats(0.0, 30.0))
def test_adjacent_windows_add_up(events: list[RequestEvent], a: float, b: float) -> None:
    low, high = sorted((a, b))
    facts = session_facts(events)
    left = window_stats(events, -math.inf, low, facts)
    middle = window_stats(events, low, high, facts)
    right = window_stats(events, high, math.inf, facts)
    assert left.requests + middle.requests + right.requests == len(events)
    assert left.sessions + middle.sessions + right.sessions == len(facts)
