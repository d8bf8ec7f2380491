"""What the router's metrics endpoint exports of each service, by ``router.metrics_instances``.

A scrape makes these a slice of services at a time (:mod:`~dyncast_bgp.router.slices`):

- ``all``: every instance's metrics, metrics age, scores, eligibility and weight, from its explanation. About 10
  series per instance, and reading an explanation of the batch path decides its service again (decision 0006):
  about 1 s of CPU per 1,000 services of 16 instances.
- ``weights``: ``dyncast_router_weight`` only, read from the decision itself (the excluded instances at 0): one
  series per instance, no explanation read. Eligibility is not among them: an instance shedding its weight
  still has one, and only its explanation says it is shedding.
- ``none``: no per-instance series; the service's fallback only.

The path series are per D-BID, not per service: the runtime makes them from the engine's path measurements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

from prometheus_client.samples import Sample

from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.obs.metrics import INSTANCE_FAMILIES, WEIGHT_FAMILY, instance_samples, weight_samples

Mode = Literal["all", "weights", "none"]  # router.metrics_instances


class Gauges(NamedTuple):
    """What the metrics endpoint exports of one service."""

    service: str
    fallback: str | None
    samples: dict[str, list[Sample]]  # its instances' samples, by family name (only the families exported)


def every_gauge(outcome: Outcome) -> Gauges:
    """``all``. The instances' gauges are dropped here, a service at a time: kept to the end of the read, freeing
    them all at once held the loop (about 90 ms at 1,000 services)."""
    service = str(outcome.decision.service)
    return Gauges(service, outcome.fallback,
                  instance_samples([{"service": service, **item.gauges()} for item in outcome.explain]))


def weights_only(outcome: Outcome) -> Gauges:
    """``weights``: the decision's weights, its excluded instances at 0, in instance order (the explanation's)."""
    decision = outcome.decision
    service = str(decision.service)
    weights = list(decision.weights.items())
    weights += [(key, 0.0) for key in decision.excluded if key not in decision.weights]
    weights.sort(key=lambda pair: pair[0].sort_key)
    return Gauges(service, outcome.fallback,
                  {WEIGHT_FAMILY: weight_samples(service, [(str(key.binding), round(weight, 6))
                                                           for key, weight in weights])})


def fallback_only(outcome: Outcome) -> Gauges:
    """``none``."""
    return Gauges(str(outcome.decision.service), outcome.fallback, {})


GAUGES: dict[Mode, Callable[[Outcome], Gauges]] = {"all": every_gauge, "weights": weights_only,
                                                   "none": fallback_only}
"""The per-service builder of each ``router.metrics_instances`` value."""
EXPORTED: dict[Mode, tuple[str, ...]] = {"all": tuple(INSTANCE_FAMILIES), "weights": (WEIGHT_FAMILY,), "none": ()}
"""The per-instance families each ``router.metrics_instances`` value exports (declared even with no service)."""
