"""The numbers a decision needs from a :class:`ServicePolicy`, derived once per policy.

A :class:`~dyncast_bgp.config.schema.ServicePolicy` is a frozen pydantic model;
reading its fields, converting units and even hashing it (pydantic hashes every
field in Python) on every decision would cost more than the decision itself.
:func:`params_for` turns it into a flat :class:`Params` (the units the engine
computes in: microseconds, fractions, percent) and memoises it by the policy
object's identity, then by value.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.model import IPNetwork

REFERENCE_LATENCY_US = 10_000.0
"""Latency at which the RTT and service-delay factors are 0.5 when no latency budget is set (10 ms)."""
REFERENCE_LOSS = 0.01
"""Loss at which the loss factor is 0.5 when no (positive) loss budget is set (1 %)."""
NEUTRAL_SCORE = 5.0
"""L1 score of a category with no known input under ``unknown_metrics: neutral`` (and ``exclude``)."""
WORST_SCORE = 0.0
"""L1 score of a category with no known input under ``unknown_metrics: pessimistic``."""
NEUTRAL_UTILISATION = 50.0
"""Utilisation (percent) assumed for free capacity when none is reported (neutral)."""
WORST_UTILISATION = 100.0
"""Utilisation (percent) assumed for free capacity when none is reported (pessimistic)."""
_MEMO_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Params:
    """A :class:`ServicePolicy` flattened for the decision (see docs/control-law.md)."""

    policy: str
    latency_budget_us: float | None
    latency_ref_us: float
    loss_budget: float | None
    loss_ref: float
    ceiling: float
    compute_share: float
    network_share: float
    use_agent_score: bool
    unknown: str
    unknown_score: float
    unknown_load: float
    alpha: float
    hysteresis: float
    min_dwell: float
    max_step: float
    local: tuple[IPNetwork, ...]
    spill_at: float
    target_utilization: float
    fallback: str
    fallback_grace: float
    readmit_factor: float
    """An instance excluded for a limit comes back below ``limit * readmit_factor`` = ``limit / (1 + hysteresis)``."""
    screen_utilisation: float
    screen_rtt_us: float
    screen_loss: float
    """Below all three ``screen_*`` (each limit * ``readmit_factor``; infinite when unset) no limit can apply,
    limited or not: the hot loop's cheap pre-check before :func:`~dyncast_bgp.engine.eligibility.limit_exclusion`."""


@functools.lru_cache(maxsize=_MEMO_SIZE)
def _params(policy: ServicePolicy) -> Params:
    budget_us = policy.latency_budget_ms * 1000.0 if policy.latency_budget_ms is not None else None
    loss_budget = policy.loss_budget
    weights = policy.category_weights
    total = weights.compute + weights.network
    pessimistic = policy.unknown_metrics == "pessimistic"
    readmit = 1.0 / (1.0 + policy.hysteresis)
    return Params(
        policy=policy.policy,
        latency_budget_us=budget_us,
        latency_ref_us=budget_us if budget_us is not None else REFERENCE_LATENCY_US,
        loss_budget=loss_budget,
        loss_ref=loss_budget if loss_budget else REFERENCE_LOSS,
        ceiling=policy.utilization_ceiling,
        compute_share=weights.compute / total,
        network_share=weights.network / total,
        use_agent_score=policy.use_agent_score,
        unknown=policy.unknown_metrics,
        unknown_score=WORST_SCORE if pessimistic else NEUTRAL_SCORE,
        unknown_load=WORST_UTILISATION if pessimistic else NEUTRAL_UTILISATION,
        alpha=policy.smoothing,
        hysteresis=policy.hysteresis,
        min_dwell=policy.min_dwell,
        max_step=policy.max_step,
        local=policy.local,
        spill_at=policy.spill_at,
        target_utilization=policy.target_utilization,
        fallback=policy.fallback,
        fallback_grace=policy.fallback_grace,
        readmit_factor=readmit,
        screen_utilisation=policy.utilization_ceiling * readmit,
        screen_rtt_us=budget_us * readmit if budget_us is not None else math.inf,
        screen_loss=loss_budget * readmit if loss_budget is not None else math.inf,
    )


_by_identity: dict[int, tuple[ServicePolicy, Params]] = {}


def params_for(policy: ServicePolicy) -> Params:
    """The :class:`Params` of ``policy``.

    Memoised by identity first (the owner passes the same policy object for a
    service every time; the entry holds the policy, so its id cannot be
    reused while cached), then by value (equal policies share one Params).
    """
    hit = _by_identity.get(id(policy))
    if hit is not None and hit[0] is policy:
        return hit[1]
    params = _params(policy)
    if len(_by_identity) >= _MEMO_SIZE:
        _by_identity.clear()
    _by_identity[id(policy)] = (policy, params)
    return params
