"""The batch decision (dyncast_bgp.engine.batch.decide_many) against the per-service oracle (engine.decide.decide).

Every generated scenario is a few services (sharing policies and instance counts, so that the batch path
decides them together as columns) decided over several steps, each path feeding its own memories forward:
weights (bit for bit, in order), exclusions, memory, status and convergence must be those of ``decide``
at every step, over all policies, states, flags, holds, caps, fallbacks, limits with hysteresis and
shedding under soft limits.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import CategoryWeights, ServicePolicy
from dyncast_bgp.engine import vector
from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.candidate import Candidate, ident_of
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.engine.eligibility import flap_damped
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.model import (
    ComputeMetrics,
    Decision,
    InstanceKey,
    InstanceState,
    IPAddress,
    MetricsView,
    PathMetrics,
    ServiceId,
    StateFlag,
)

SERVICES = [ServiceId.parse(f"203.0.113.{n}/32") for n in range(1, 9)]
BINDINGS: list[IPAddress] = [ipaddress.ip_address(f"198.51.100.{n}") for n in range(1, 6)]
V6: list[IPAddress] = [ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("::ffff:198.51.100.9")]


def floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


utilisation = st.one_of(floats(0, 100), st.sampled_from([0.0, 50.0, 80.0, 85.0, 89.9, 90.0, 95.0, 100.0]))
metric_values = st.fixed_dictionaries({}, optional={
    "cpu_utilization": utilisation,
    "memory_utilization": utilisation,
    "gpu_utilization": utilisation,
    "capacity": st.one_of(st.just(0.0), floats(1e-3, 1e6), st.sampled_from([1.0, 100.0, 400.0, 1000.0])),
    "active_sessions": st.one_of(floats(0, 1e5), st.integers(0, 500).map(float)),
    "queued_requests": st.one_of(floats(0, 1e4), st.integers(0, 50).map(float)),
    "service_delay": floats(0, 1e6),
    "compute_score": floats(-1, 11),
    "network_score": floats(-1, 11),
    "overall_score": floats(-1, 11),
})
path_values = st.none() | floats(0, 1e6) | st.sampled_from([math.nan, math.inf])
paths = st.builds(
    PathMetrics,
    rtt_mean_us=st.none() | floats(0, 60_000) | path_values,
    loss_mean=st.none() | floats(0, 1) | st.sampled_from([-0.1, 1.5]),
    reachable=st.sampled_from([True, True, True, True, False]),
)
states = st.sampled_from([InstanceState.ACTIVE] * 6 + list(InstanceState))
flag_sets = st.sampled_from([StateFlag.NONE] * 6 + [StateFlag.OVERLOADED, StateFlag.DRAINING | StateFlag.CANARY,
                                                    StateFlag.REDUCED_REDUNDANCY])
holds = st.sampled_from([None] * 12 + [flap_damped(3.0), flap_damped(12.5)])
category_weights = st.tuples(floats(0, 1), floats(0, 1)).filter(lambda w: w[0] + w[1] > 0).map(
    lambda w: CategoryWeights(compute=w[0], network=w[1]))
policies = st.builds(
    ServicePolicy,
    policy=st.sampled_from(["weighted"] * 6 + ["best", "local-first", "consolidate"]),
    latency_budget_ms=st.none() | floats(0.1, 60),
    loss_budget=st.none() | floats(0, 1),
    utilization_ceiling=floats(1, 100) | st.just(90.0),
    category_weights=category_weights,
    use_agent_score=st.booleans(),
    unknown_metrics=st.sampled_from(["neutral", "pessimistic", "exclude"]),
    smoothing=floats(0.01, 1),
    hysteresis=floats(0, 1),
    min_dwell=floats(0, 10),
    max_step=floats(0.01, 1),
    local=st.sampled_from([(), (ipaddress.ip_network("198.51.100.0/30"),)]),
    fallback=st.sampled_from(["least-cost", "keep", "blackhole"]),
    fallback_grace=floats(0, 20),
)


# mostly healthy instances: most services keep an eligible instance, so the columns decide them
healthy_states = st.sampled_from([InstanceState.ACTIVE] * 20 + list(InstanceState))
healthy_paths = st.builds(PathMetrics, rtt_mean_us=st.none() | floats(0, 60_000), loss_mean=st.none() | floats(0, 0.2),
                          reachable=st.sampled_from([True] * 20 + [False]))
healthy_holds = st.sampled_from([None] * 40 + [flap_damped(3.0)])


def candidate(draw: st.DrawFn, key: InstanceKey, healthy: bool) -> Candidate:
    if healthy:
        return Candidate(key, draw(healthy_states),
                         ComputeMetrics(MetricsView(draw(metric_values)), draw(flag_sets)), draw(healthy_paths),
                         hold=draw(healthy_holds))
    return Candidate(key, draw(states), ComputeMetrics(MetricsView(draw(metric_values)), draw(flag_sets)),
                     draw(paths), hold=draw(holds))


@st.composite
def scenarios(draw: st.DrawFn, *, healthy: bool = False
              ) -> tuple[list[ServicePolicy], list[list[list[Candidate]]], list[Any], list[float]]:
    """Policies; per step, per service, its candidates (sorted like the RIB lists them, now and then not);
    per service its caps (None mostly); the time between steps."""
    shared = draw(st.lists(policies, min_size=1, max_size=2))
    count = draw(st.integers(1, 6))
    services = SERVICES[:count]
    sizes = [draw(st.sampled_from([2, 3, 4, 5, 6] if healthy else [1, 2, 3, 3, 4])) for _ in services]
    pool = [InstanceKey(service, binding, path_id) for service in services
            for binding in BINDINGS + draw(st.sampled_from([[], [], V6])) for path_id in (0, 7)]
    keys = [sorted([key for key in pool if key.service == service][:size * 2:2], key=ident_of)
            for service, size in zip(services, sizes, strict=True)]
    steps: list[list[list[Candidate]]] = []
    for _ in range(draw(st.integers(1, 6 if healthy else 4))):
        lists = []
        for service_keys in keys:
            chosen = service_keys if draw(st.integers(0, 9)) else draw(st.permutations(service_keys))
            if service_keys and not draw(st.integers(0, 9)):
                chosen = chosen[1:]  # an instance gone
            lists.append([candidate(draw, key, healthy) for key in chosen])
        steps.append(lists)
    marks = [draw(st.sampled_from([None] * 6 + ["cap"])) for _ in services]
    caps = [None if mark is None or not key_list else {key_list[0]: draw(floats(0, 1))}
            for mark, key_list in zip(marks, keys, strict=True)]
    gaps = [draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 60.0]) | floats(0, 30)) for _ in steps]
    return shared, steps, caps, gaps


def fingerprint(outcome: Outcome) -> tuple[Any, ...]:
    """Everything a decision computes eagerly, floats by their bits."""
    decision, memory = outcome.decision, outcome.memory
    return (decision.service, [(key, weight.hex()) for key, weight in decision.weights.items()],
            list(decision.excluded.items()), [(ident, weight.hex()) for ident, weight in memory.weights.items()],
            memory.moved_at, memory.incumbent, memory.limited, memory.ineligible_since,
            outcome.fallback, outcome.status, outcome.converging)


def explained(outcome: Outcome) -> tuple[str, dict[InstanceKey, str]]:
    """The explanation (as ``dyncast ctl explain`` prints it; JSON text, so that a NaN input compares equal to
    itself) and the reason texts."""
    return json.dumps(outcome.to_dict(), sort_keys=True), dict(outcome.decision.reasons)


Scenario = tuple[list[ServicePolicy], list[list[list[Candidate]]], list[Any], list[float]]


@settings(max_examples=400, deadline=None)
@given(scenarios(), st.integers(1, 3))
def test_decide_many_equals_decide_step_after_step(scenario: Scenario, min_batch: int) -> None:
    check_steps(scenario, min_batch)


@settings(max_examples=400, deadline=None)
@given(scenarios(healthy=True), st.integers(1, 2))
def test_decide_many_equals_decide_mostly_healthy(scenario: Scenario, min_batch: int) -> None:
    check_steps(scenario, min_batch)


def check_steps(scenario: Scenario, min_batch: int) -> None:
    shared, steps, caps, gaps = scenario
    services = SERVICES[:len(steps[0])]
    chosen_policies = [shared[index % len(shared)] for index in range(len(services))]
    oracle: list[ServiceMemory | None] = [None] * len(services)
    batch: list[ServiceMemory | None] = [None] * len(services)
    now = 0.0
    for lists, gap in zip(steps, gaps, strict=True):
        now += gap
        expected = [decide(service, candidates, policy, memory, now, caps=cap) for service, candidates, policy, memory,
                    cap in zip(services, lists, chosen_policies, oracle, caps, strict=True)]
        got = decide_many([Request(*fields) for fields in zip(services, lists, chosen_policies, batch, caps,
                                                              strict=True)], now, min_batch=min_batch)
        assert [fingerprint(outcome) for outcome in got] == [fingerprint(outcome) for outcome in expected]
        assert [explained(outcome) for outcome in got] == [explained(outcome) for outcome in expected]
        oracle = [outcome.memory for outcome in expected]
        batch = [outcome.memory for outcome in got]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(floats(0, 1e6), st.just(0.0), floats(0, 1e-300)), min_size=1, max_size=20),
                min_size=1, max_size=8).map(lambda rows: [row + [0.0] * (20 - len(row)) for row in rows]))
def test_row_sums_add_like_python_sum(rows: Sequence[list[float]]) -> None:
    assert vector.row_sums(np.array(rows)).tolist() == [sum(row) for row in rows]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(st.one_of(floats(0, 1e17), st.integers(0, 2**40).map(float)), min_size=3, max_size=3),
                min_size=1, max_size=6))
def test_fleet_sums_are_fsum(rows: Sequence[list[float]]) -> None:
    values = np.array(rows)
    assert vector._exact_sums(values).tolist() == [math.fsum(row) for row in rows]


_ANY_FLOAT = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.floats(-1e-12, 1e-12))


@given(st.lists(_ANY_FLOAT, max_size=6), st.booleans(), st.lists(_ANY_FLOAT, max_size=3), st.randoms())
def test_checked_decision_is_the_constructors_or_raises_its_error(raw: list[float], normalise: bool,
                                                                  outside: list[float], rng: Any) -> None:
    """``vector.sound_weights`` says of a row what ``Decision``'s own checks say of the weights in its mask (the
    values outside it, anything), and ``Decision.checked`` with it builds what the constructor builds."""
    service = ServiceId.parse("203.0.113.10/32")
    keys = [InstanceKey(service, ipaddress.ip_address(f"198.51.100.{i + 1}")) for i in range(len(raw))]
    total = sum(raw)
    values = [v / total for v in raw] if normalise and math.isfinite(total) and total > 0 else raw
    weights = dict(zip(keys, values, strict=True))
    row = [(value, True) for value in values] + [(value, False) for value in outside]
    rng.shuffle(row)
    sound = vector.sound_weights(np.array([[value for value, _ in row]], np.float64).reshape(1, len(row)),
                                 np.array([[inside for _, inside in row]], np.bool_).reshape(1, len(row)))
    assert sound.shape == (1,)
    try:
        expected: Decision | str = Decision(service, weights, {}, {})
    except ValueError as exc:
        expected = str(exc)
    assert bool(sound[0]) == isinstance(expected, Decision)
    try:
        got: Decision | str = Decision.checked(service, weights, bool(sound[0]), {}, {})
    except ValueError as exc:
        got = str(exc)
    assert got == expected
