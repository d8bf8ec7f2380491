"""Properties of the decision engine (dyncast_bgp.engine.decide), over arbitrary instances and policies."""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Sequence
from dataclasses import replace

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import CategoryWeights, ServicePolicy
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import Outcome, decide
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
BINDINGS = [ipaddress.ip_address(f"198.51.100.{n}") for n in range(1, 7)] + [ipaddress.ip_address("2001:db8::1")]
KEYS = [InstanceKey(SVC, binding, path_id) for binding in BINDINGS for path_id in (0, 7)]
TOLERANCE = 1e-9


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


metric_values = st.fixed_dictionaries({}, optional={
    "cpu_utilization": floats(0, 100),
    "memory_utilization": floats(0, 100),
    "gpu_utilization": floats(0, 100),
    # no subnormal capacities: scaling them by a power of two would not be exact
    "capacity": st.one_of(st.just(0.0), floats(1e-3, 1e6), st.sampled_from([1.0, 100.0, 1000.0])),
    "active_sessions": floats(0, 1e5),
    "queued_requests": floats(0, 1e4),
    "service_delay": floats(0, 1e6),
    "compute_score": floats(0, 10),
    "network_score": floats(0, 10),
    "overall_score": floats(0, 10),
})
paths = st.builds(
    PathMetrics,
    rtt_mean_us=st.none() | floats(0, 1e6),
    loss_mean=st.none() | floats(0, 1),
    reachable=st.sampled_from([True, True, True, False]),
)
states = st.sampled_from([InstanceState.ACTIVE] * 4 + list(InstanceState))
flag_sets = st.sampled_from([StateFlag.NONE] * 5 + [StateFlag.OVERLOADED, StateFlag.DRAINING | StateFlag.CANARY])


@st.composite
def candidate_lists(draw: st.DrawFn, min_size: int = 0) -> list[Candidate]:
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=min_size, max_size=8, unique=True))
    return [Candidate(key, draw(states), ComputeMetrics(MetricsView(draw(metric_values)), draw(flag_sets)),
                      draw(paths)) for key in keys]


category_weights = st.tuples(floats(0, 1), floats(0, 1)).filter(lambda w: w[0] + w[1] > 0).map(
    lambda w: CategoryWeights(compute=w[0], network=w[1]))
policies = st.builds(
    ServicePolicy,
    policy=st.sampled_from(["weighted", "best", "local-first", "consolidate"]),
    latency_budget_ms=st.none() | floats(0.1, 1000),
    loss_budget=st.none() | floats(0, 1),
    utilization_ceiling=floats(1, 100),
    category_weights=category_weights,
    use_agent_score=st.booleans(),
    unknown_metrics=st.sampled_from(["neutral", "pessimistic", "exclude"]),
    smoothing=floats(0.01, 1),
    hysteresis=floats(0, 1),
    min_dwell=floats(0, 10),
    max_step=floats(0.01, 1),
    local=st.sampled_from([(), (ipaddress.ip_network("198.51.100.0/30"),)]),
    spill_at=floats(1, 100),
    target_utilization=floats(1, 100),
    fallback=st.sampled_from(["least-cost", "keep", "blackhole"]),
    fallback_grace=floats(0, 20),
)
weighted_policies = policies.map(lambda p: p.model_copy(update={"policy": "weighted"}))


def check_valid(outcome: Outcome) -> None:
    """Weights >= 0, summing to 1 whenever some instance is eligible.

    An excluded instance gets 0 and is listed in ``excluded``, except one under a soft limit (utilisation
    ceiling, overloaded flag) that is still shedding the weight it had: target 0, weight > 0, not listed
    (not in the explanation's ``excluded`` either), not eligible.
    """
    weights = outcome.decision.weights
    assert all(w >= 0.0 and math.isfinite(w) for w in weights.values())
    eligible = [item for item in outcome.explain if item.excluded is None and not item.shedding]
    if eligible:
        assert outcome.fallback is None
        assert math.isclose(sum(weights.values()), 1.0, abs_tol=TOLERANCE)
        for item in outcome.explain:
            if item.shedding:
                assert item.target == 0.0 and item.weight > 0.0 and item.key in weights
                assert item.excluded is None and item.to_dict()["eligible"] is False
                assert item.key not in outcome.decision.excluded
                assert "no new share, shedding by slew" in outcome.decision.reasons[item.key]
            elif item.excluded is not None:
                assert item.weight == 0.0 and item.key not in weights
                assert item.key in outcome.decision.excluded
    else:
        assert outcome.fallback is not None
        assert not weights or math.isclose(sum(weights.values()), 1.0, abs_tol=TOLERANCE)
        unhealthy = {item.key for item in outcome.explain
                     if item.state is InstanceState.DOWN or not item.path.reachable}
        assert not unhealthy & set(weights)  # never a down or unreachable instance, not even as a fallback


def step_all(candidates: Sequence[Candidate], policy: ServicePolicy, memory: ServiceMemory | None,
             now: float) -> Outcome:
    return decide(SVC, candidates, policy, memory, now)


def target_of(outcome: Outcome, key: InstanceKey) -> float:
    return next(item.target or 0.0 for item in outcome.explain if item.key == key)


@settings(max_examples=300, deadline=None)
@given(candidate_lists(), policies, st.lists(st.tuples(candidate_lists(), floats(0, 30)), max_size=4))
def test_weights_are_a_valid_split_at_every_step(first: list[Candidate], policy: ServicePolicy,
                                                 later: list[tuple[list[Candidate], float]]) -> None:
    outcome = step_all(first, policy, None, 0.0)
    check_valid(outcome)
    now = 0.0
    for candidates, gap in later:
        now += gap
        outcome = step_all(candidates, policy, outcome.memory, now)
        check_valid(outcome)


@settings(max_examples=200, deadline=None)
@given(candidate_lists(), candidate_lists(), policies, st.randoms(use_true_random=False), floats(0, 30))
def test_order_of_candidates_never_matters(first: list[Candidate], second: list[Candidate], policy: ServicePolicy,
                                           rng: object, gap: float) -> None:
    shuffled_first, shuffled_second = list(first), list(second)
    rng.shuffle(shuffled_first)  # type: ignore[attr-defined]
    rng.shuffle(shuffled_second)  # type: ignore[attr-defined]
    a = step_all(first, policy, None, 0.0)
    b = step_all(shuffled_first, policy, None, 0.0)
    assert a == b and a.to_dict() == b.to_dict()
    assert step_all(second, policy, a.memory, gap) == step_all(shuffled_second, policy, b.memory, gap)


@settings(max_examples=200, deadline=None)
@given(candidate_lists(), candidate_lists(), policies, floats(0, 30))
def test_identical_inputs_give_identical_outputs(first: list[Candidate], second: list[Candidate],
                                                 policy: ServicePolicy, gap: float) -> None:
    a = step_all(first, policy, None, 0.0)
    b = step_all(first, policy, None, 0.0)
    assert a == b and a.to_dict() == b.to_dict() and a.memory == b.memory
    assert step_all(second, policy, a.memory, gap).to_dict() == step_all(second, policy, b.memory, gap).to_dict()


def _with(candidate: Candidate, **metrics: float) -> Candidate:
    values = dict(candidate.metrics.values)
    values.update(metrics)
    return Candidate(candidate.key, candidate.state, ComputeMetrics(MetricsView(values), candidate.metrics.flags),
                     candidate.path)


def _with_path(candidate: Candidate, **path: float) -> Candidate:
    current = candidate.path
    fields = {"rtt_mean_us": current.rtt_mean_us, "loss_mean": current.loss_mean, "reachable": current.reachable}
    fields.update(path)
    return Candidate(candidate.key, candidate.state, candidate.metrics, PathMetrics(**fields))  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(candidate_lists(min_size=1), weighted_policies, st.data(),
       st.sampled_from(["cpu_utilization", "memory_utilization", "active_sessions", "queued_requests",
                        "service_delay", "rtt_mean_us", "loss_mean"]))
def test_more_load_or_path_cost_never_raises_the_weighted_target(candidates: list[Candidate],
                                                                 policy: ServicePolicy, data: st.DataObject,
                                                                 what: str) -> None:
    index = data.draw(st.integers(0, len(candidates) - 1))
    chosen = candidates[index]
    bound = 1.0 if what == "loss_mean" else 100.0 if what.endswith("utilization") else 1e6
    if what in ("rtt_mean_us", "loss_mean"):
        low = data.draw(floats(0, bound))
        high = data.draw(floats(low, bound))
        before, after = _with_path(chosen, **{what: low}), _with_path(chosen, **{what: high})
    else:
        low = data.draw(floats(0, bound))
        high = data.draw(floats(low, bound))
        before, after = _with(chosen, **{what: low}), _with(chosen, **{what: high})
    lighter = step_all([*candidates[:index], before, *candidates[index + 1:]], policy, None, 0.0)
    heavier = step_all([*candidates[:index], after, *candidates[index + 1:]], policy, None, 0.0)
    assert target_of(heavier, chosen.key) <= target_of(lighter, chosen.key) + 1e-12


def _scaled(candidates: Sequence[Candidate], factor: float) -> list[Candidate]:
    out = []
    for candidate in candidates:
        capacity = candidate.metrics.values.get("capacity")
        out.append(candidate if capacity is None else _with(candidate, capacity=capacity * factor))
    return out


@settings(max_examples=300, deadline=None)
@given(candidate_lists(), candidate_lists(), policies, st.integers(-10, 10), floats(0, 30))
def test_scaling_every_capacity_changes_nothing(first: list[Candidate], second: list[Candidate],
                                                policy: ServicePolicy, exponent: int, gap: float) -> None:
    # a power of two scales every product and sum exactly, so the decision must be identical to the bit
    factor = 2.0 ** exponent
    base = step_all(first, policy, None, 0.0)
    scaled = step_all(_scaled(first, factor), policy, None, 0.0)
    assert dict(base.decision.weights) == dict(scaled.decision.weights)
    assert dict(base.decision.excluded) == dict(scaled.decision.excluded)
    assert base.memory == scaled.memory
    later = step_all(second, policy, base.memory, gap)
    later_scaled = step_all(_scaled(second, factor), policy, scaled.memory, gap)
    assert dict(later.decision.weights) == dict(later_scaled.decision.weights)


@settings(max_examples=200, deadline=None)
@given(candidate_lists(min_size=1), policies, floats(1e-3, 1e3))
def test_scaling_by_any_factor_changes_nothing_but_rounding(candidates: list[Candidate], policy: ServicePolicy,
                                                            factor: float) -> None:
    base = step_all(candidates, policy, None, 0.0)
    scaled = step_all(_scaled(candidates, factor), policy, None, 0.0)
    assert dict(base.decision.excluded) == dict(scaled.decision.excluded)
    assert set(base.decision.weights) == set(scaled.decision.weights)
    if policy.policy != "best":  # best may break a near-tie the other way; the others are continuous
        for key, weight in base.decision.weights.items():
            assert math.isclose(weight, scaled.decision.weights[key], rel_tol=1e-6, abs_tol=1e-9)


@st.composite
def healthy_steps(draw: st.DrawFn) -> tuple[list[Candidate], list[Candidate]]:
    """Two successive candidate lists of healthy instances: the same ones with new metrics, maybe some new ones."""
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=8, unique=True))
    extra = draw(st.lists(st.sampled_from([k for k in KEYS if k not in keys]), max_size=3, unique=True))
    healthy = metric_values.filter(lambda values: values.get("capacity", 1.0) > 0.0 and all(
        values.get(name, 0.0) < 100.0 for name in ("cpu_utilization", "memory_utilization", "gpu_utilization")))

    def one(key: InstanceKey) -> Candidate:
        path = PathMetrics(rtt_mean_us=draw(st.none() | floats(0, 1e6)), loss_mean=draw(st.none() | floats(0, 1)))
        return Candidate(key, InstanceState.ACTIVE, ComputeMetrics(MetricsView(draw(healthy))), path)

    return [one(key) for key in keys], [one(key) for key in keys + extra]


@settings(max_examples=300, deadline=None)
@given(healthy_steps(), policies, floats(0, 30))
def test_one_step_moves_no_weight_more_than_max_step(steps: tuple[list[Candidate], list[Candidate]],
                                                     policy: ServicePolicy, gap: float) -> None:
    # no hard limit (no budgets, no unknown-metrics exclusion), so that only a soft limit (the utilisation
    # ceiling, drawn at random) can exclude an instance, and a soft limit walks a weight down by the slew
    # limit too; the exception (a hard exclusion or a withdrawal frees the share at once) is tested below
    # and in tests/unit/test_engine_policies.py. The fallback (every instance over the ceiling) is not a step.
    policy = policy.model_copy(update={"latency_budget_ms": None, "loss_budget": None,
                                       "unknown_metrics": "neutral" if policy.unknown_metrics == "exclude"
                                       else policy.unknown_metrics})
    first, second = steps
    before = step_all(first, policy, None, 0.0)
    after = step_all(second, policy, before.memory, gap)
    assume(before.fallback is None and after.fallback is None)
    old, new = before.decision.weights, after.decision.weights
    for key in set(old) | set(new):
        assert abs(new.get(key, 0.0) - old.get(key, 0.0)) <= policy.max_step + TOLERANCE


HARD = {
    "down": lambda c: replace(c, state=InstanceState.DOWN),
    "draining": lambda c: replace(c, state=InstanceState.DRAINING),
    "unreachable": lambda c: replace(c, path=PathMetrics(reachable=False)),
    "rtt over budget": lambda c: replace(c, path=PathMetrics(rtt_mean_us=2e6)),
}


def _overloaded(candidate: Candidate, ceiling: float) -> Candidate:
    return replace(candidate, metrics=ComputeMetrics(candidate.metrics.values, StateFlag.OVERLOADED))


def _at_ceiling(candidate: Candidate, ceiling: float) -> Candidate:
    return _with(candidate, cpu_utilization=ceiling)


SOFT = {"overloaded": _overloaded, "at the ceiling": _at_ceiling}


@st.composite
def limit_cases(draw: st.DrawFn) -> tuple[ServicePolicy, list[Candidate], int]:
    """A policy with a latency budget of 1 s, and healthy instances all well below its ceiling; one of them chosen."""
    policy = draw(policies).model_copy(update={"latency_budget_ms": 1000.0, "loss_budget": None,
                                               "unknown_metrics": "neutral"})
    room = policy.utilization_ceiling / (1.0 + policy.hysteresis)  # below the re-admission level
    keys = draw(st.lists(st.sampled_from(KEYS), min_size=2, max_size=6, unique=True))
    candidates = [Candidate(key, InstanceState.ACTIVE, ComputeMetrics(MetricsView({
        "cpu_utilization": draw(floats(0, room * 0.99)), "capacity": draw(floats(1, 1000))})),
        PathMetrics(rtt_mean_us=draw(floats(0, 1e5)))) for key in keys]
    return policy, candidates, draw(st.integers(0, len(candidates) - 1))


@settings(max_examples=200, deadline=None)
@given(limit_cases(), st.sampled_from(sorted(HARD)))
def test_a_hard_exclusion_takes_the_weight_to_zero_at_once(case: tuple[ServicePolicy, list[Candidate], int],
                                                           which: str) -> None:
    policy, candidates, index = case
    before = step_all(candidates, policy, None, 0.0)
    chosen = candidates[index]
    assume(before.decision.weights.get(chosen.key, 0.0) > 0.0)
    # inside the dwell: a hard exclusion does not wait for it
    after = step_all([*candidates[:index], HARD[which](chosen), *candidates[index + 1:]], policy, before.memory, 0.0)
    assert chosen.key not in after.decision.weights and chosen.key in after.decision.excluded
    check_valid(after)


@settings(max_examples=150, deadline=None)
@given(limit_cases(), st.sampled_from(sorted(SOFT)), st.lists(floats(0, 30), min_size=1, max_size=6))
def test_a_soft_limit_never_grows_a_weight_sheds_by_the_slew_limit_and_reaches_zero(
        case: tuple[ServicePolicy, list[Candidate], int], which: str, gaps: list[float]) -> None:
    policy, candidates, index = case
    outcome = step_all(candidates, policy, None, 0.0)
    chosen = candidates[index]
    weight = outcome.decision.weights.get(chosen.key, 0.0)
    assume(weight > 0.0)
    limited = [*candidates[:index], SOFT[which](chosen, policy.utilization_ceiling), *candidates[index + 1:]]
    now = 0.0
    for gap in gaps:  # arbitrary timing, dwell included: never up, never down by more than max_step
        now += gap
        outcome = step_all(limited, policy, outcome.memory, now)
        check_valid(outcome)
        new = outcome.decision.weights.get(chosen.key, 0.0)
        assert new <= weight + TOLERANCE and weight - new <= policy.max_step + TOLERANCE
        assert (chosen.key in outcome.decision.excluded) == (new == 0.0)
        weight = new
    for _ in range(2000):  # the limit persists: the weight reaches 0 (not merely the deadband)
        if weight == 0.0:
            break
        now += max(policy.min_dwell, 1.0)
        outcome = step_all(limited, policy, outcome.memory, now)
        new = outcome.decision.weights.get(chosen.key, 0.0)
        assert new <= weight + TOLERANCE and weight - new <= policy.max_step + TOLERANCE
        weight = new
    assert weight == 0.0 and chosen.key in outcome.decision.excluded
    assert not outcome.converging or outcome.fallback is not None


@settings(max_examples=300, deadline=None)
@given(candidate_lists(min_size=1), policies)
def test_the_inline_scores_agree_with_the_reference_formulas(candidates: list[Candidate],
                                                             policy: ServicePolicy) -> None:
    # assess() writes the formulas of engine/scoring.py out inline for speed; the explanation's factor
    # breakdown uses the functions there: both must give the same L1 and L2 scores
    shares = policy.category_weights
    for item in step_all(candidates, policy, None, 0.0).explain:
        factors = dict(item.factors)
        compute = [factors[name] for name in ("utilisation", "service_delay", "backlog") if name in factors]
        network = [factors[name] for name in ("reachable", "rtt", "loss") if name in factors]
        if item.score_source == "computed" and compute:
            assert math.isclose(item.compute, 10.0 * min(compute), rel_tol=1e-12, abs_tol=1e-12)
        if network:
            assert math.isclose(item.network, 10.0 * math.prod(network), rel_tol=1e-12, abs_tol=1e-12)
        if item.score_source != "agent overall_score":
            total = shares.compute + shares.network  # shares first: a subnormal weight times a score underflows
            expected = shares.compute / total * item.compute + shares.network / total * item.network
            assert math.isclose(item.overall, expected, rel_tol=1e-9, abs_tol=1e-9)
