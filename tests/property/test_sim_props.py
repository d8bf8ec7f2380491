"""Properties of the simulator's pure parts: damping, views, splits, the oscillation index, arrivals."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.sim.information import Feed, Report, build_view, check_causal, publishes
from dyncast_bgp.sim.policies import NO_ROUTE, Split
from dyncast_bgp.sim.scenario import Damping, Ingress, Surge
from dyncast_bgp.sim.stats import oscillation_index
from dyncast_bgp.sim.world import Arrivals

times = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)
percent = st.floats(min_value=0.0, max_value=100.0, allow_nan=False)
dampings = st.builds(Damping, relative=st.floats(0.0, 1.0), absolute=st.none() | st.floats(0.0, 50.0),
                     min_interval_s=st.floats(0.1, 10.0), refresh_s=st.floats(10.0, 100.0))


@given(dampings, times, st.floats(0.0, 200.0), percent, percent, st.integers(0, 50), st.integers(0, 50))
def test_damping_never_sends_sooner_than_min_interval_and_always_refreshes(  # noqa: PLR0917 - hypothesis
        damping: Damping, published: float, gap: float, old: float, new: float, old_backlog: int,
        new_backlog: int) -> None:
    previous = Report(0, published, published, old, old_backlog, 0)
    sent = publishes(previous, new, new_backlog, published + gap, damping)
    if gap < damping.min_interval_s - 1e-6:
        assert not sent
    if gap >= damping.refresh_s:
        assert sent
    if gap >= damping.min_interval_s and damping.absolute is not None and abs(new - old) >= damping.absolute > 0:
        assert sent


@given(dampings, times, percent)
def test_after_a_withdrawal_the_next_report_goes_out_at_once(damping: Damping, now: float, value: float) -> None:
    assert publishes(Report(0, now, now, withdrawn=True), value, 0, now, damping)


@settings(max_examples=60)
@given(st.lists(st.tuples(st.floats(0.0, 100.0), percent), min_size=1, max_size=30), times,
       st.floats(0.0, 20.0))
def test_a_view_holds_only_reports_published_before_now_minus_the_delay(
        points: list[tuple[float, float]], now: float, delay: float) -> None:
    feed = Feed(1)
    for published, value in sorted(points):
        feed.publish(Report(0, published, published, value))
    view = build_view(feed, ingress=0, now=now, delay_s=delay, names=("a",), capacities=(1.0,), servers=(1,),
                      rtt_ms=(1.0,), reachable=(True,))
    check_causal(view, now)
    newest = [p for p in sorted(points) if p[0] <= now - delay + 1e-9]  # the feed allows 1 ns of rounding
    if newest:
        assert view.sites[0].measured_at == newest[-1][0]
    else:
        assert view.sites[0].measured_at is None and not view.sites[0].announced


@given(st.lists(st.floats(0.0, 10.0), min_size=1, max_size=6))
def test_a_split_picks_each_site_in_proportion_to_its_weight(weights: list[float]) -> None:
    split = Split()
    split.set(list(enumerate(weights)))
    total = sum(weights)
    if total <= 0.0:
        assert split.pick(0.5) == NO_ROUTE
        return
    n = 2000
    picks = [split.pick((k + 0.5) / n) for k in range(n)]
    for site, weight in enumerate(weights):
        assert abs(picks.count(site) / n - weight / total) <= 1.0 / n + 1e-9
    assert abs(sum(split.shares().values()) - 1.0) < 1e-9


@given(st.lists(st.lists(st.integers(0, 1000), min_size=3, max_size=3), min_size=2, max_size=40))
def test_oscillation_index_is_a_fraction_of_the_traffic(traffic: list[list[int]]) -> None:
    assert 0.0 <= oscillation_index(traffic) <= 1.0 + 1e-12


def test_oscillation_index_of_steady_and_of_flapping_shares() -> None:
    assert oscillation_index([[10, 20, 30]] * 10) == 0.0
    assert oscillation_index([[100, 0], [0, 100]] * 5) == 1.0


@settings(max_examples=40)
@given(st.integers(0, 2**32), st.floats(1.0, 500.0), st.floats(0.0, 50.0), st.floats(1.0, 50.0),
       st.floats(0.0, 3.0))
def test_arrivals_increase_and_respect_the_surges(seed: int, rate: float, start: float, length: float,
                                                   factor: float) -> None:
    ingress = Ingress(name="i", rate=rate, rtt_ms={"a": 1.0},
                      surges=(Surge(start=start, end=start + length, factor=factor),))
    arrivals = Arrivals(ingress, 1.0, random.Random(seed))
    t, seen = 0.0, []
    for _ in range(200):
        nxt = arrivals.next_after(t)
        assert nxt > t
        seen.append(nxt)
        t = nxt
    if factor == 0.0:
        assert not [x for x in seen if start <= x < start + length]
