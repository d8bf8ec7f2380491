"""What a service does when no instance is eligible.

First, for ``fallback_grace`` seconds from the moment the service ran out of
eligible instances, the last decision is kept ("grace"): a short dip (every
instance briefly over a limit, a burst of probe loss) should not reshuffle
flows. After the grace, per ``fallback``:

- ``least-cost``: the healthy-but-ineligible instances (not down, reachable)
  of the best tier — over a limit or of unknown metrics first, then draining
  or of capacity 0, then drained — weighted like the ``weighted`` policy
  (free capacity * score, so the least loaded and the cheapest paths first),
  reached from the last weights by ordinary stability steps.
- ``keep``: the last decision, for as long as it lasts.
- ``blackhole``: no weights at all; the runtime withdraws the service from the
  dataplane and logs it loudly.

Safety holds here too: "keeping" the last decision keeps only its instances
that are still healthy (renormalised); when none is, nothing is kept. Down or
unreachable instances never get new flows, not even from a fallback.
"""

from __future__ import annotations

from dataclasses import dataclass

from dyncast_bgp.engine.assess import Assessment
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.policies import by_merit
from dyncast_bgp.engine.weights import normalise

GRACE = "grace"
LEAST_COST = "least-cost"
KEEP = "keep"
BLACKHOLE = "blackhole"


@dataclass(frozen=True, slots=True)
class Plan:
    """The fallback in force, over ``indices`` (into the assessment).

    Either fixed ``weights`` (grace, keep, blackhole: nothing smooths them) or,
    for least-cost, a ``target`` that stability steps move toward.
    """

    mode: str
    note: str
    indices: list[int]
    weights: list[float] | None = None
    target: list[float] | None = None


def kept(a: Assessment, memory: ServiceMemory) -> tuple[list[int], list[float]]:
    """The last decision restricted to instances still present and healthy, renormalised (empty if none)."""
    previous = memory.weights
    indices = [i for i, exclusion in enumerate(a.exclusions)
               if previous.get(a.idents[i], 0.0) > 0.0 and (exclusion is None or exclusion.healthy)]
    if not indices:
        return [], []
    return indices, normalise([previous[a.idents[i]] for i in indices])


def least_cost_pool(a: Assessment) -> list[int]:
    """The healthy-but-ineligible instances of the most preferred tier, in canonical order."""
    tiers = {i: exclusion.tier for i, exclusion in enumerate(a.exclusions)
             if exclusion is not None and exclusion.healthy}
    if not tiers:
        return []
    best = min(tiers.values())
    return [i for i, tier in tiers.items() if tier == best]


def plan(a: Assessment, memory: ServiceMemory, p: Params, *, since: float, now: float) -> Plan:
    """The fallback for a service with no eligible instance since ``since``."""
    indices, weights = kept(a, memory)
    left = p.fallback_grace - (now - since)
    if indices and left > 0.0:
        return Plan(GRACE, f"fallback: keeping last decision ({left:.1f} s of grace left)", indices, weights)
    if p.fallback == KEEP:
        note = "fallback: keeping last decision" if indices else "fallback keep: no healthy instance left to keep"
        return Plan(KEEP, note, indices, weights)
    if p.fallback == BLACKHOLE:
        return Plan(BLACKHOLE, "fallback: blackhole (no eligible instance)", [], [])
    pool = least_cost_pool(a)
    if not pool:
        return Plan(LEAST_COST, "fallback least-cost: no healthy instance", [], [])
    return Plan(LEAST_COST, "fallback least-cost: free capacity x score over the healthy-but-ineligible", pool,
                target=by_merit(a, pool))
