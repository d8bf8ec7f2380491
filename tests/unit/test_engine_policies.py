"""The decision engine by example: policies, eligibility, unknown metrics, fallback and stability.

Every expectation is computed by hand from the formulas in docs/control-law.md;
the comment above each says how.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping

import pytest

from dyncast_bgp.config.schema import CategoryWeights, ServicePolicy
from dyncast_bgp.engine.candidate import Candidate, ident_of
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.engine.explain import InstanceExplain
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    InstanceState,
    MetricsView,
    PathMetrics,
    ServiceId,
    StateFlag,
)

SVC = ServiceId.parse("203.0.113.10/32")
A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"
# no smoothing: the weights go straight to the target (the stability tests below turn it back on)
FAST = {"smoothing": 1.0, "max_step": 1.0, "min_dwell": 0.0}


def cand(address: str, *, state: InstanceState = InstanceState.ACTIVE, path: PathMetrics | None = None,
         flags: StateFlag = StateFlag.NONE, **metrics: float) -> Candidate:
    return Candidate(InstanceKey(SVC, ipaddress.ip_address(address)), state,
                     ComputeMetrics(MetricsView(metrics), flags), path or PathMetrics())


def key(address: str) -> InstanceKey:
    return InstanceKey(SVC, ipaddress.ip_address(address))


def weights(outcome: Outcome) -> dict[str, float]:
    return {str(k.binding): w for k, w in outcome.decision.weights.items()}


def excluded(outcome: Outcome) -> dict[str, str]:
    return {str(k.binding): reason for k, reason in outcome.decision.excluded.items()}


def item(outcome: Outcome, address: str) -> InstanceExplain:
    return next(i for i in outcome.explain if str(i.key.binding) == address)


def run(candidates: list[Candidate], memory: ServiceMemory | None = None, now: float = 0.0, /,
        **policy: object) -> Outcome:
    return decide(SVC, candidates, ServicePolicy.model_validate(policy), memory, now)


# ------------------------------------------------------------------ scores and weighted


def test_weighted_by_free_capacity_times_score() -> None:
    # compute = 10 (1 - u/100): 8 and 4; network unknown -> 5; L2 = .6 c + .4 n = 6.8 and 4.4
    # free = 1000 (1 - u/100) = 800 and 400; merit = free * L2 = 5440 and 1760; target = merit / 7200
    out = run([cand(B, cpu_utilization=60, capacity=1000), cand(A, cpu_utilization=20, capacity=1000)], **FAST)
    assert weights(out) == pytest.approx({A: 5440 / 7200, B: 1760 / 7200})
    a = item(out, A)
    assert (a.compute, a.network, a.overall, a.free) == pytest.approx((8.0, 5.0, 6.8, 800.0))
    assert a.unknown == ("network",)
    assert out.status == "started from the capacity split; arrived at target"
    assert out.fallback is None and not out.converging


def test_a_service_starts_from_the_capacity_split_and_ramps() -> None:
    # the same instances with the default stability: capacity split 1/2, 1/2; target 5440/7200 = .7556;
    # gap .2556, EWMA .3 (below the slew limit .1/.2556 = .39): A = .5 + .3 * .2556 = .5767
    out = run([cand(A, cpu_utilization=20, capacity=1000), cand(B, cpu_utilization=60, capacity=1000)])
    assert weights(out) == pytest.approx({A: 0.5 + 0.3 * (5440 / 7200 - 0.5), B: 0.5 - 0.3 * (5440 / 7200 - 0.5)})
    assert out.status == "started from the capacity split; moving" and out.converging
    assert out.memory.moved_at == 0.0  # the dwell runs from the start
    # capacities 1 : 3, equal free capacity (.5) and score: the start is 1/4, 3/4, the target 1/2, 1/2;
    # without EWMA the gap .25 is slew-limited to .1
    uneven = run([cand(A, overall_score=5, capacity=1, cpu_utilization=50),
                  cand(B, overall_score=5, capacity=3, cpu_utilization=83.3333333333)], use_agent_score=True,
                 smoothing=1.0)
    assert uneven.status == "started from the capacity split; moving (slew-limited)"
    assert weights(uneven) == pytest.approx({A: 0.35, B: 0.65}, abs=1e-6)


def test_network_score_from_rtt_and_loss() -> None:
    # R = 10 ms: rtt 10 ms -> f_rtt = .5; L = 1 %: loss 1 % -> f_loss = .5; network = 10 * .5 * .5 = 2.5
    # compute = 10 (1 - .5) = 5 for both; L2(A) = .6*5 + .4*2.5 = 4.0, L2(B) = .6*5 + .4*10 = 7.0
    slow = PathMetrics(rtt_mean_us=10_000.0, loss_mean=0.01)
    clean = PathMetrics(rtt_mean_us=0.0, loss_mean=0.0)
    out = run([cand(A, path=slow, cpu_utilization=50, capacity=100),
               cand(B, path=clean, cpu_utilization=50, capacity=100)], **FAST)
    assert item(out, A).network == pytest.approx(2.5)
    assert item(out, B).overall == pytest.approx(7.0)
    # equal free capacity (50): target in proportion to L2, 4 : 7
    assert weights(out) == pytest.approx({A: 4 / 11, B: 7 / 11})


def test_category_weights_and_latency_budget_as_reference() -> None:
    # network only; budget 20 ms is the reference: rtt 20 ms -> 5, rtt 0 -> 10
    out = run([cand(A, path=PathMetrics(rtt_mean_us=20_000.0), capacity=1),
               cand(B, path=PathMetrics(rtt_mean_us=0.0), capacity=1)],
              category_weights=CategoryWeights(compute=0, network=1), latency_budget_ms=20.0, **FAST)
    assert item(out, A).overall == pytest.approx(5.0)
    assert weights(out) == pytest.approx({A: 1 / 3, B: 2 / 3})


def test_backlog_and_service_delay_factors_take_the_minimum() -> None:
    # backlog ref = (9 + 1 + 29 + 1) / (10 + 10) = 2; r(A) = (10/10)/2 = .5 -> 1; r(B) = (30/10)/2 = 1.5 -> 2/3
    # B: utilisation 10 % -> .9; delay 10 ms -> .5 (the minimum); compute(B) = 5
    out = run([cand(A, active_sessions=9, capacity=10), cand(B, active_sessions=29, capacity=10, cpu_utilization=10,
                                                              service_delay=10_000)], **FAST)
    assert item(out, A).compute == pytest.approx(10.0)
    assert item(out, B).compute == pytest.approx(5.0)
    assert dict(item(out, B).factors) == pytest.approx(
        {"utilisation": 0.9, "service_delay": 0.5, "backlog": 2 / 3})


def test_agent_scores_when_asked() -> None:
    both = [cand(A, overall_score=8.0, compute_score=1.0, capacity=1), cand(B, overall_score=2.0, capacity=1)]
    used = run(both, use_agent_score=True, **FAST)
    assert item(used, A).score_source == "agent overall_score"
    # free = 1 * (1 - 50/100) = .5 for both (utilisation unknown -> 50 %): target 8 : 2
    assert weights(used) == pytest.approx({A: 0.8, B: 0.2})
    ignored = run(both, **FAST)
    assert item(ignored, A).score_source == "computed"
    assert weights(ignored) == pytest.approx({A: 0.5, B: 0.5})
    # without an L2, the agent's compute_score replaces the computed compute L1
    compute_only = run([cand(A, compute_score=10.0, cpu_utilization=90, capacity=1)], use_agent_score=True, **FAST)
    assert item(compute_only, A).compute == 10.0 and item(compute_only, A).score_source == "agent compute_score"


# ------------------------------------------------------------------ eligibility


def test_every_exclusion_has_its_reason() -> None:
    out = run([
        cand("198.51.100.1", state=InstanceState.DOWN, cpu_utilization=1),
        cand("198.51.100.2", path=PathMetrics(reachable=False), cpu_utilization=1),
        cand("198.51.100.3", state=InstanceState.DRAINING, cpu_utilization=1),
        cand("198.51.100.4", state=InstanceState.DRAINED, cpu_utilization=1),
        cand("198.51.100.5", cpu_utilization=95),  # the ceiling is inclusive
        cand("198.51.100.6", path=PathMetrics(rtt_mean_us=5_001.0), cpu_utilization=1),
        cand("198.51.100.7", path=PathMetrics(loss_mean=0.02), cpu_utilization=1),
        cand("198.51.100.8", flags=StateFlag.OVERLOADED, cpu_utilization=1),
        cand("198.51.100.9", capacity=0, cpu_utilization=1),
        cand("198.51.100.10", state=InstanceState.CANARY, cpu_utilization=1),
        cand("198.51.100.11", path=PathMetrics(rtt_mean_us=5_000.0, loss_mean=0.01), cpu_utilization=94.9),
    ], utilization_ceiling=95, latency_budget_ms=5, loss_budget=0.01, **FAST)
    assert excluded(out) == {
        "198.51.100.1": "down",
        "198.51.100.2": "unreachable: path probes unanswered",
        "198.51.100.3": "draining",
        "198.51.100.4": "drained",
        "198.51.100.5": "utilisation over the 95% ceiling",
        "198.51.100.6": "rtt over the 5 ms budget",
        "198.51.100.7": "loss over the 0.01 budget",
        "198.51.100.8": "overloaded (agent flag)",
        "198.51.100.9": "capacity 0",
    }
    # a canary takes flows; values exactly at a latency or loss budget are within it
    assert set(weights(out)) == {"198.51.100.10", "198.51.100.11"}
    assert item(out, "198.51.100.1").excluded == "down"
    assert item(out, "198.51.100.10").excluded is None


def test_a_limit_readmits_with_hysteresis() -> None:
    # ceiling 95, hysteresis .1: back in below 95 / 1.1 = 86.36 %
    policy = {"utilization_ceiling": 95, **FAST}
    first = run([cand(A, cpu_utilization=96), cand(B, cpu_utilization=10)], **policy)
    assert excluded(first) == {A: "utilisation over the 95% ceiling"}
    held = run([cand(A, cpu_utilization=90), cand(B, cpu_utilization=10)], first.memory, 1.0, **policy)
    assert excluded(held) == {A: "utilisation not yet back below 86.36% (ceiling 95%)"}
    back = run([cand(A, cpu_utilization=86), cand(B, cpu_utilization=10)], held.memory, 2.0, **policy)
    assert excluded(back) == {} and weights(back)[A] > 0.0
    # without the memory of the exclusion, 90 % is simply within the ceiling
    assert excluded(run([cand(A, cpu_utilization=90), cand(B, cpu_utilization=10)], **policy)) == {}


# ------------------------------------------------------------------ unknown metrics


def test_unknown_metrics_neutral() -> None:
    # A reports nothing: compute 5, network 5, load 50 %, capacity = the peers' median (1000)
    out = run([cand(A), cand(B, cpu_utilization=50, capacity=1000)], **FAST)
    a = item(out, A)
    assert (a.compute, a.network, a.load, a.capacity) == (5.0, 5.0, 50.0, 1000.0)
    assert a.unknown == ("compute", "network", "capacity")
    assert weights(out) == pytest.approx({A: 0.5, B: 0.5})


def test_unknown_metrics_pessimistic() -> None:
    # A: compute 0, network 0 (L2 0 -> floored to .1), load 100 % (free floor 1 %), capacity = smallest (100)
    # merit(A) = 100 * .01 * .1 = .1; B: compute 5, network 0 -> L2 3, free 500 -> merit 1500
    out = run([cand(A), cand(B, cpu_utilization=50, capacity=1000), cand(C, cpu_utilization=50, capacity=100)],
              unknown_metrics="pessimistic", **FAST)
    a = item(out, A)
    assert (a.compute, a.network, a.load, a.capacity, a.free) == pytest.approx((0.0, 0.0, 100.0, 100.0, 1.0))
    # C: free 50, L2 3 -> 150
    assert weights(out) == pytest.approx({A: 0.1 / 1650.1, B: 1500 / 1650.1, C: 150 / 1650.1})


def test_unknown_metrics_exclude() -> None:
    probed = PathMetrics(rtt_mean_us=1000.0)
    out = run([cand(A, path=probed), cand(B, path=probed, cpu_utilization=50, capacity=1000)],
              unknown_metrics="exclude", **FAST)
    assert excluded(out) == {A: "unknown metrics: compute, capacity"}
    # a category weighted 0 does not count
    network_only = run([cand(A, path=probed, capacity=1), cand(B, path=probed, cpu_utilization=50, capacity=1)],
                       unknown_metrics="exclude", category_weights=CategoryWeights(compute=0, network=1), **FAST)
    assert excluded(network_only) == {}


# ------------------------------------------------------------------ the other policies


def test_best_holds_the_incumbent_within_the_hysteresis() -> None:
    policy = {"policy": "best", "use_agent_score": True, "hysteresis": 0.1, **FAST}
    first = run([cand(A, overall_score=6.0), cand(B, overall_score=5.0)], **policy)
    assert weights(first) == {A: 1.0, B: 0.0}
    # 6.5 <= 6.0 * 1.1 = 6.6: A holds
    held = run([cand(A, overall_score=6.0), cand(B, overall_score=6.5)], first.memory, 1.0, **policy)
    assert weights(held) == {A: 1.0, B: 0.0}
    assert "held: a challenger needs more than 6.60" in held.decision.reasons[key(A)]
    # 6.7 > 6.6: B takes over
    switched = run([cand(A, overall_score=6.0), cand(B, overall_score=6.7)], held.memory, 2.0, **policy)
    assert weights(switched) == {A: 0.0, B: 1.0}
    # ... and now holds against A in the same way
    back = run([cand(A, overall_score=7.3), cand(B, overall_score=6.7)], switched.memory, 3.0, **policy)
    assert weights(back) == {A: 0.0, B: 1.0}
    # ties go to the lowest D-BID, whatever the order given
    tie = run([cand(B, overall_score=5.0), cand(A, overall_score=5.0)], **policy)
    assert weights(tie) == {A: 1.0, B: 0.0}


def test_local_first_spills_in_proportion() -> None:
    local = "10.0.0.1"
    policy = {"policy": "local-first", "local": ("10.0.0.0/24",), "spill_at": 80, "utilization_ceiling": 95, **FAST}
    calm = run([cand(local, cpu_utilization=50, capacity=10), cand(A, cpu_utilization=0, capacity=10)], **policy)
    assert weights(calm) == {local: 1.0, A: 0.0}
    # locals at 85 %: spill = (85 - 80) / (95 - 80) = 1/3
    busy = run([cand(local, cpu_utilization=85, capacity=10), cand(A, cpu_utilization=0, capacity=10)], **policy)
    assert weights(busy) == pytest.approx({local: 2 / 3, A: 1 / 3})
    # no local instance eligible: everything remote, by merit
    gone = run([cand(local, state=InstanceState.DOWN), cand(A, cpu_utilization=0, capacity=10)], **policy)
    assert weights(gone) == {A: 1.0}


def test_local_first_scales_the_local_share_it_held_toward_spill_at() -> None:
    local = "10.0.0.1"
    policy = {"policy": "local-first", "local": ("10.0.0.0/24",), "spill_at": 80, "utilization_ceiling": 95, **FAST}

    def at(load: float, memory: ServiceMemory | None, now: float) -> Outcome:
        return run([cand(local, cpu_utilization=load, capacity=10), cand(A, cpu_utilization=0, capacity=10)],
                   memory, now, **policy)

    first = at(85, None, 0.0)  # nothing held yet: the curve, (85 - 80) / 15 = 1/3
    assert weights(first)[local] == pytest.approx(2 / 3)
    second = at(85, first.memory, 1.0)  # held 2/3 at 85 %: keep 2/3 * 80/85, more than the curve spills
    assert weights(second)[local] == pytest.approx(2 / 3 * 80 / 85)
    cooler = at(60, second.memory, 2.0)  # below spill_at the share grows back by the same ratio, not all at once
    assert weights(cooler)[local] == pytest.approx(2 / 3 * 80 / 85 * 80 / 60)
    surge = at(94, cooler.memory, 3.0)  # a surge: the curve's (94 - 80) / 15 spill beats the ratio's
    assert weights(surge)[local] == pytest.approx(1 - 14 / 15)
    assert "local share" in item(second, local).reason


def test_consolidate_packs_below_the_target() -> None:
    policy = {"policy": "consolidate", "target_utilization": 70, **FAST}
    # demand = 1000*.3 + 500*.3 + 500*.3 = 600 <= 700: all of it on the largest
    light = run([cand(A, cpu_utilization=30, capacity=1000), cand(B, cpu_utilization=30, capacity=500),
                 cand(C, cpu_utilization=30, capacity=500)], **policy)
    assert weights(light) == {A: 1.0, B: 0.0, C: 0.0}
    # demand = 600 + 300 + 300 = 1200: A 700, B 350 (its 70 %), C the remaining 150
    heavy = run([cand(A, cpu_utilization=60, capacity=1000), cand(B, cpu_utilization=60, capacity=500),
                 cand(C, cpu_utilization=60, capacity=500)], **policy)
    assert weights(heavy) == pytest.approx({A: 700 / 1200, B: 350 / 1200, C: 150 / 1200})
    # over every target (2000 > 1400): the excess by capacity
    full = run([cand(A, cpu_utilization=100, capacity=1000), cand(B, cpu_utilization=100, capacity=1000)],
               utilization_ceiling=100, **policy)
    assert weights(full) == pytest.approx({A: 0.5, B: 0.5})


def test_caps_water_fill() -> None:
    both = [cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10)]
    out = decide(SVC, both, ServicePolicy(**FAST), None, 0.0, caps={key(A): 0.2})
    assert weights(out) == pytest.approx({A: 0.2, B: 0.8})
    assert "capped at 0.2" in out.decision.reasons[key(A)]


# ------------------------------------------------------------------ fallback


def test_fallback_grace_then_least_cost() -> None:
    policy = {"fallback": "least-cost", "fallback_grace": 10.0, "utilization_ceiling": 90, **FAST}
    start = run([cand(A, cpu_utilization=20, capacity=10), cand(B, cpu_utilization=20, capacity=30)], **policy)
    assert weights(start) == pytest.approx({A: 0.25, B: 0.75})
    over = [cand(A, cpu_utilization=91, capacity=10), cand(B, cpu_utilization=95, capacity=30),
            cand(C, state=InstanceState.DOWN)]
    grace = run(over, start.memory, 1.0, **policy)
    assert grace.fallback == "grace" and grace.converging
    assert weights(grace) == pytest.approx({A: 0.25, B: 0.75})  # kept as it was
    assert "grace left" in grace.status
    still = run(over, grace.memory, 10.9, **policy)
    assert still.fallback == "grace"
    # 10 s after it ran out: least cost over the healthy-but-ineligible, by merit (free * L2);
    # free(A) = 10 * .09 = .9, L2 = .6 * .9 + .4 * 5 = 2.54; free(B) = 30 * .05 = 1.5, L2 = .6 * .5 + 2 = 2.3
    after = run(over, still.memory, 11.0, **policy)
    assert after.fallback == "least-cost"
    merit_a, merit_b = 0.9 * 2.54, 1.5 * 2.3
    assert weights(after) == pytest.approx({A: merit_a / (merit_a + merit_b), B: merit_b / (merit_a + merit_b)})
    assert excluded(after) == {C: "down"}  # never the down instance
    # a fallback's pick is not shedding: it takes new flows because nothing else can
    assert not item(after, B).shedding
    assert item(after, B).excluded == "utilisation not yet back below 81.82% (ceiling 90%)"
    # one eligible instance again: the fallback ends; the ineligible ones are over the ceiling (a soft
    # limit), so they shed by the slew limit, which FAST sets to 1: all of it in one step
    recovered = run([cand(A, cpu_utilization=50, capacity=10), over[1], over[2]], after.memory, 12.0, **policy)
    assert recovered.fallback is None and weights(recovered) == {A: 1.0}


@pytest.mark.parametrize("mode", ["keep", "blackhole"])
def test_fallback_keep_and_blackhole(mode: str) -> None:
    policy = {"fallback": mode, "fallback_grace": 5.0, **FAST}
    start = run([cand(A, cpu_utilization=20, capacity=10), cand(B, cpu_utilization=20, capacity=10)], **policy)
    gone = [cand(A, state=InstanceState.DRAINING), cand(B, state=InstanceState.DOWN)]
    grace = run(gone, start.memory, 1.0, **policy)
    # B is down: the grace keeps only the healthy part of the last decision
    assert grace.fallback == "grace" and weights(grace) == {A: 1.0}
    after = run(gone, grace.memory, 6.0, **policy)
    assert after.fallback == mode
    assert weights(after) == ({A: 1.0} if mode == "keep" else {})
    assert excluded(after) == ({B: "down"} if mode == "keep" else {A: "draining", B: "down"})
    assert not after.converging


def test_least_cost_prefers_limits_over_draining_over_drained() -> None:
    policy = {"fallback_grace": 0.0, **FAST}
    out = run([cand(A, state=InstanceState.DRAINED, capacity=1), cand(B, state=InstanceState.DRAINING, capacity=1),
               cand(C, flags=StateFlag.OVERLOADED, capacity=1)], **policy)
    assert out.fallback == "least-cost" and weights(out) == {C: 1.0}
    out = run([cand(A, state=InstanceState.DRAINED, capacity=1), cand(B, state=InstanceState.DRAINING, capacity=1)],
              **policy)
    assert weights(out) == {B: 1.0}


def test_nothing_at_all() -> None:
    out = run([], **FAST)
    assert out.fallback == "least-cost" and weights(out) == {} and out.explain == ()


# ------------------------------------------------------------------ stability


def test_smoothing_and_slew_limit() -> None:
    # start at 1/2, 1/2; the target moves to .9/.1: gap .4; EWMA .3 -> .12, slew limit .1 -> move .1
    policy = {"smoothing": 0.3, "max_step": 0.1, "min_dwell": 0.0}
    even = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10)], **policy)
    assert weights(even) == pytest.approx({A: 0.5, B: 0.5})
    # free(A) = 10, L2(A) = 5.0 * .6 + ... ; pick loads so that the target is exactly 9 : 1 via agent L2
    skew = [cand(A, overall_score=9.0, capacity=10, cpu_utilization=50),
            cand(B, overall_score=1.0, capacity=10, cpu_utilization=50)]
    step1 = run(skew, even.memory, 1.0, use_agent_score=True, **policy)
    assert weights(step1) == pytest.approx({A: 0.6, B: 0.4})
    assert step1.status == "moving (slew-limited)" and step1.converging
    assert item(step1, A).target == pytest.approx(0.9) and item(step1, A).smoothed == pytest.approx(0.62)
    # gap .3: EWMA .09 < .1
    step2 = run(skew, step1.memory, 2.0, use_agent_score=True, **policy)
    assert weights(step2) == pytest.approx({A: 0.69, B: 0.31})
    assert step2.status == "moving"


def test_dwell_holds_then_moves() -> None:
    policy = {"smoothing": 1.0, "max_step": 1.0, "min_dwell": 5.0}
    even = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10)], **policy)
    skew = [cand(A, cpu_utilization=10, capacity=10), cand(B, cpu_utilization=90, capacity=10)]
    held = run(skew, even.memory, 4.0, **policy)
    assert weights(held) == pytest.approx({A: 0.5, B: 0.5})
    assert held.status == "held: dwell (1.0 s left)" and held.converging
    moved = run(skew, held.memory, 5.0, **policy)
    assert weights(moved)[A] > 0.9 and moved.status == "arrived at target" and not moved.converging
    assert moved.memory.moved_at == 5.0


def test_deadband_holds_small_changes() -> None:
    policy = {"smoothing": 1.0, "max_step": 1.0, "min_dwell": 0.0}
    even = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10)], **policy)
    nudge = run([cand(A, cpu_utilization=49.5, capacity=10), cand(B, cpu_utilization=50, capacity=10)],
                even.memory, 1.0, **policy)
    assert weights(nudge) == {A: 0.5, B: 0.5}
    assert nudge.status == "held: within deadband" and not nudge.converging


def test_a_new_instance_ramps_in() -> None:
    # A, B at 1/2; C arrives with the same merit: target 1/3 each, gap 1/3, slew .1 -> lambda .3
    policy = {"smoothing": 1.0, "max_step": 0.1, "min_dwell": 0.0}
    two = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10)], **policy)
    three = [cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10),
             cand(C, cpu_utilization=50, capacity=10)]
    out = run(three, two.memory, 1.0, **policy)
    assert weights(out) == pytest.approx({A: 0.45, B: 0.45, C: 0.1})
    memory, steps = out.memory, 1
    while out.converging:
        out = run(three, memory, 1.0 + steps, **policy)
        memory, steps = out.memory, steps + 1
    assert weights(out) == pytest.approx({A: 1 / 3, B: 1 / 3, C: 1 / 3}) and steps == 4


def test_an_excluded_instance_drops_to_zero_at_once() -> None:
    policy = {"smoothing": 0.3, "max_step": 0.1, "min_dwell": 5.0}
    three = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10),
                 cand(C, cpu_utilization=50, capacity=10)], **policy)
    # C goes down inside the dwell: its third goes to A and B by their target (1/2 each) at once
    out = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=50, capacity=10),
               cand(C, state=InstanceState.DOWN)], three.memory, 1.0, **policy)
    assert weights(out) == pytest.approx({A: 0.5, B: 0.5})
    assert excluded(out) == {C: "down"}


def _three(**over: Mapping[str, object]) -> list[Candidate]:
    """A, B, C of equal capacity at 50 %; ``over[address]``: that instance's changed arguments of :func:`cand`."""
    return [cand(address, **{"capacity": 10, "cpu_utilization": 50.0, **over.get(address, {})})  # type: ignore[arg-type]
            for address in (A, B, C)]


def test_a_soft_limit_sheds_by_the_slew_limit() -> None:
    # A, B, C at 1/3 each; C reaches the ceiling (a soft limit): target .5/.5/0, gap 1/3;
    # EWMA .3 and slew .1 / (1/3) = .3 agree: lambda .3, so C goes to 1/3 * .7 and A, B to 1/3 + .3/6
    policy = {"smoothing": 0.3, "max_step": 0.1, "min_dwell": 0.0}
    three = run(_three(), **policy)
    hot = _three(**{C: {"cpu_utilization": 96.0}})
    out = run(hot, three.memory, 1.0, **policy)
    assert weights(out) == pytest.approx({A: 0.35 + 1 / 30, B: 0.35 + 1 / 30, C: 0.7 / 3})
    assert excluded(out) == {}  # it still takes its (shrinking) share: not an exclusion yet
    shed = item(out, C)
    assert shed.shedding and shed.target == 0.0 and shed.excluded is None  # as in decision.excluded
    assert out.decision.reasons[key(C)].startswith(
        "utilisation 96.0% >= ceiling 95%: no new share, shedding by slew; target 0.000, weight 0.233 (moving")
    view = out.to_dict()["instances"][2]
    assert view["shedding"] is True and view["eligible"] is False and view["excluded"] is None
    assert view["reason"].startswith("utilisation 96.0% >= ceiling 95%: no new share")
    assert out.memory.limited == frozenset({ident_of(key(C))}) and out.converging
    # the limit persists: C falls by at most max_step per step, never grows, and reaches exactly 0
    memory, last, steps = out.memory, 0.7 / 3, 1
    while key(C) in out.decision.weights:
        out = run(hot, memory, 1.0 + steps, **policy)
        now = out.decision.weights.get(key(C), 0.0)
        assert 0.0 <= last - now <= 0.1 + 1e-12
        memory, last, steps = out.memory, now, steps + 1
    assert weights(out) == pytest.approx({A: 0.5, B: 0.5}) and not out.converging
    assert excluded(out) == {C: "utilisation not yet back below 86.36% (ceiling 95%)"}  # re-admission hysteresis
    assert not item(out, C).shedding and item(out, C).excluded == "utilisation not yet back below 86.36% (ceiling 95%)"
    assert steps < 15


def test_the_overloaded_flag_is_a_soft_limit_and_the_dwell_applies() -> None:
    policy = {"smoothing": 1.0, "max_step": 0.1, "min_dwell": 5.0}
    three = run(_three(), **policy)
    flagged = _three(**{C: {"flags": StateFlag.OVERLOADED}})
    held = run(flagged, three.memory, 1.0, **policy)  # inside the dwell: nothing moves, unlike a hard exclusion
    assert weights(held) == pytest.approx({A: 1 / 3, B: 1 / 3, C: 1 / 3}) and held.status.startswith("held: dwell")
    assert held.decision.reasons[key(C)].startswith("overloaded (agent flag): no new share, shedding by slew")
    moved = run(flagged, held.memory, 5.0, **policy)  # gap 1/3, slew .1: lambda .3
    assert weights(moved) == pytest.approx({A: 0.35 + 1 / 30, B: 0.35 + 1 / 30, C: 0.7 / 3})
    assert moved.status == "moving (slew-limited)"


def test_a_hard_limit_wins_over_a_soft_one() -> None:
    # C is over the ceiling and over the latency budget: the budget is a hard limit, so C drops at once
    policy = {"smoothing": 0.3, "max_step": 0.1, "min_dwell": 5.0, "latency_budget_ms": 5}
    three = run(_three(), **policy)
    out = run(_three(**{C: {"cpu_utilization": 99.0, "path": PathMetrics(rtt_mean_us=6_000.0)}}),
              three.memory, 1.0, **policy)
    assert weights(out) == pytest.approx({A: 0.5, B: 0.5})
    assert excluded(out) == {C: "rtt over the 5 ms budget"}


@pytest.mark.parametrize("name", ["best", "local-first", "consolidate"])
def test_every_policy_sheds_a_soft_limited_instance_by_the_slew_limit(name: str) -> None:
    policy = {"policy": name, "smoothing": 1.0, "max_step": 0.1, "min_dwell": 0.0, "local": (f"{C}/32",),
              "target_utilization": 60}
    start = run(_three(), **policy)
    before = weights(start).get(C, 0.0)
    assert before > 0.0
    out = run(_three(**{C: {"cpu_utilization": 97.0}}), start.memory, 1.0, **policy)
    after = weights(out).get(C, 0.0)
    assert 0.0 < after < before and before - after <= 0.1 + 1e-12
    assert item(out, C).shedding and item(out, C).target == 0.0


# ------------------------------------------------------------------ API details


def test_memory_and_explanation_details() -> None:
    # B is over the ceiling from the start: it never had a weight to shed, so it is simply excluded
    out = run([cand(A, cpu_utilization=50, capacity=10), cand(B, cpu_utilization=96, capacity=10)], **FAST)
    assert out.memory.weights == {ident_of(key(A)): 1.0}
    assert out.memory.limited == frozenset({ident_of(key(B))})
    assert out.memory.moved_at == 0.0
    view = out.to_dict()
    assert json.loads(json.dumps(view)) == view
    assert view["weights"] == {A: 1.0} and view["excluded"] == {B: "utilisation over the 95% ceiling"}
    assert [i["instance"] for i in view["instances"]] == [A, B]
    assert view["instances"][1]["eligible"] is False and view["instances"][1]["target"] is None
    assert math.isclose(sum(out.decision.weights.values()), 1.0)
    assert set(out.decision.reasons) == {key(A)}  # reasons explain weights; `excluded` the others
    assert item(out, B).reason == "utilisation over the 95% ceiling"
    assert out == run([cand(B, cpu_utilization=96, capacity=10), cand(A, cpu_utilization=50, capacity=10)], **FAST)


def test_foreign_or_duplicate_candidates_are_refused() -> None:
    other = Candidate(InstanceKey(ServiceId.parse("203.0.113.11/32"), ipaddress.ip_address(A)),
                      InstanceState.ACTIVE, ComputeMetrics(), PathMetrics())
    with pytest.raises(ValueError, match="not an instance of"):
        run([other])
    with pytest.raises(ValueError, match="listed twice"):
        run([cand(A), cand(A)])


def test_ipv6_and_add_path_ids_are_distinct_instances() -> None:
    six = ServiceId.parse("2001:db8::10/128")
    one, low = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("::1")
    keys = [InstanceKey(six, one, 1), InstanceKey(six, one, 2), InstanceKey(six, low)]
    candidates = [Candidate(k, InstanceState.ACTIVE, ComputeMetrics(MetricsView({"capacity": 1})), PathMetrics())
                  for k in keys]
    out = decide(six, candidates, ServicePolicy(**FAST), None, 0.0)
    assert list(out.decision.weights) == sorted(keys)
    assert out.decision.weights[keys[0]] == pytest.approx(1 / 3)
