"""``router.metrics_instances: weights`` exports the weights ``all`` exports, without reading explanations."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.obs.metrics import WEIGHT_FAMILY
from dyncast_bgp.router.gauges import every_gauge, fallback_only, weights_only
from tests.property.test_engine_batch import SERVICES, Scenario, scenarios


def weight_series(outcome: Outcome, build: object) -> list[tuple[tuple[tuple[str, str], ...], float]]:
    assert callable(build)
    samples = build(outcome).samples.get(WEIGHT_FAMILY, [])
    return [(tuple(sorted(sample.labels.items())), sample.value) for sample in samples]


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.integers(1, 3))
def test_the_weights_mode_is_the_weight_series_of_every_explanation(scenario: Scenario, min_batch: int) -> None:
    shared, steps, caps, gaps = scenario
    services = SERVICES[:len(steps[0])]
    policies = [shared[index % len(shared)] for index in range(len(services))]
    memories: list[ServiceMemory | None] = [None] * len(services)
    now = 0.0
    for lists, gap in zip(steps, gaps, strict=True):
        now += gap
        outcomes = decide_many([Request(*fields) for fields in zip(services, lists, policies, memories, caps,
                                                                   strict=True)], now, min_batch=min_batch)
        for outcome in outcomes:
            light, whole = weights_only(outcome), every_gauge(outcome)
            assert weight_series(outcome, weights_only) == weight_series(outcome, every_gauge)  # order too
            assert set(light.samples) == {WEIGHT_FAMILY} and (light.service, light.fallback) == (
                whole.service, whole.fallback)
            none = fallback_only(outcome)
            assert none.samples == {} and (none.service, none.fallback) == (whole.service, whole.fallback)
        memories = [outcome.memory for outcome in outcomes]
