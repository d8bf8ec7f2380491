"""Properties of the audit log's materiality test (router.audit_min_change), over real decisions."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.router.audit import material, written
from tests.property.test_engine_batch import SERVICES, Scenario, scenarios


def histories(scenario: Scenario) -> list[list[Outcome]]:
    """Each service's outcomes, step after step."""
    shared, steps, caps, gaps = scenario
    services = SERVICES[:len(steps[0])]
    policies = [shared[index % len(shared)] for index in range(len(services))]
    memories: list[ServiceMemory | None] = [None] * len(services)
    result: list[list[Outcome]] = [[] for _ in services]
    now = 0.0
    for lists, gap in zip(steps, gaps, strict=True):
        now += gap
        outcomes = decide_many([Request(*fields) for fields in zip(services, lists, policies, memories, caps,
                                                                   strict=True)], now)
        for history, outcome in zip(result, outcomes, strict=True):
            history.append(outcome)
        memories = [outcome.memory for outcome in outcomes]
    return result


@settings(max_examples=200, deadline=None)
@given(scenarios(), st.floats(1e-9, 1.0), st.floats(1e-9, 1.0))
def test_materiality(scenario: Scenario, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    for history in histories(scenario):
        for before, after in pairwise(history):
            last = written(before)
            assert not material(written(after), after, low)  # the decision written: nothing moved
            if material(last, after, high):  # a smaller minimum never writes less
                assert material(last, after, low)
            weights, old = after.decision.weights, last.weights
            if set(weights) != set(old) or set(after.decision.excluded) != set(last.excluded) \
                    or after.fallback != last.fallback:
                assert material(last, after, 1.0)  # whatever the minimum
            elif max((abs(w - old[k]) for k, w in weights.items()), default=0.0) < low:
                assert not material(last, after, low)
            else:
                assert material(last, after, low)
