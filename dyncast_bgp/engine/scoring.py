"""Scores of one instance: L0 metrics -> L1 category scores -> one L2 score.

The CATS metric levels (DESIGN.md section 3, docs/wire-format.md): raw metrics
(L0) become one score per category (L1: compute, network), which become one
overall score (L2); every score is 0-10, 10 best. The formulas (the rationale
is in docs/control-law.md):

Compute L1 = 10 * min(f_u, f_d, f_b) over the factors whose inputs are known:

- ``f_u = 1 - u/100``, ``u`` the busiest of cpu/memory/gpu utilisation
  (percent, clamped to 0-100): the resource that saturates first limits the
  instance, and the free fraction is linear in it.
- ``f_d = R/(R + service_delay)``: 1 at no delay, 0.5 at the reference ``R``
  (the latency budget, else 10 ms), never 0: a smooth, unit-free penalty.
- ``f_b = min(1, 1/r)``, ``r = ((n + 1)/c) / (Σ(n_j + 1)/Σc_j)``: ``n`` the requests
  in the system (active sessions + queued requests), ``c`` the capacity, the
  sums over the instances that report both. ``r`` is the instance's backlog per
  unit of capacity relative to its peers' (1 = average; the +1 keeps idle
  instances from looking infinitely better than ones with one session). Only
  above-average backlog costs score. Relative, so capacities only matter as
  ratios: scaling every capacity changes nothing.

The minimum (a bottleneck) rather than a mean: an instance with a full queue is
not rescued by an idle CPU.

Network L1 = 10 * f_rtt * f_loss, ``f_rtt = R/(R + rtt_mean)`` (``R`` as above),
``f_loss = L/(L + loss_mean)`` (``L`` the loss budget, else 1 %); 0 when the
path is unreachable. A product: delay and loss both cut a flow's goodput, and
TCP goodput falls with their product (Mathis et al.).

L2 = (w_c * compute + w_n * network) / (w_c + w_n), the configured
``category_weights``. With ``use_agent_score`` the agent's ``overall_score`` is
the L2 as is; its ``compute_score`` replaces the computed compute L1, and its
``network_score`` stands in for the network L1 when this router measures none.

Unknown (absent) inputs, per ``unknown_metrics``: a category with no input at
all scores 5 (``neutral``, ``exclude``) or 0 (``pessimistic``); with ``exclude``
the instance is excluded (:mod:`~dyncast_bgp.engine.eligibility`). An unknown
utilisation counts as 50 % (100 % when pessimistic) for free capacity. An
unknown capacity, when peers report theirs, counts as their median
(``neutral``) or their smallest (``pessimistic``); when no instance reports a
capacity, all count as equal (1).

Free capacity, what the policies share out: ``capacity * max(1 - load/100, 0.01)``.

The decision's hot loop (:mod:`~dyncast_bgp.engine.assess`) computes these
inline, for speed; the functions here are the same formulas one at a time, for
the explanation (:func:`factors`) and the rarely taken paths. A test checks
that both agree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from dyncast_bgp.engine.params import Params
from dyncast_bgp.model import PathMetrics

BACKLOG_PSEUDOCOUNT = 1.0
SCORE_FLOOR = 0.1
"""Smallest L2 used in a merit, so that an eligible instance scoring 0 keeps a little weight."""
FREE_FLOOR = 0.01
"""Smallest free fraction used for free capacity, so that every eligible instance keeps some weight."""
COMPUTED = "computed"
AGENT_COMPUTE = "agent compute_score"
AGENT_OVERALL = "agent overall_score"


class Fleet(NamedTuple):
    """What scoring one instance needs to know about its peers (all candidates of the service).

    ``neutral_capacity``/``worst_capacity``: the median and the smallest
    capacity reported (> 0), used for instances that report none; 1.0 when no
    instance reports one (``capacity_known`` False). ``backlog_ref``:
    ``Σ(n + 1)/Σc`` over the instances reporting a backlog and a capacity,
    None when none does.
    """

    capacity_known: bool
    neutral_capacity: float
    worst_capacity: float
    backlog_ref: float | None


def busiest(values: Mapping[str, float]) -> float | None:
    """The highest of the reported cpu/memory/gpu utilisations, clamped to 0-100; None if none."""
    get = values.get
    found = [value for value in (get("cpu_utilization"), get("memory_utilization"), get("gpu_utilization"))
             if value is not None]
    if not found:
        return None
    return min(max(*found, 0.0), 100.0)


def backlog(values: Mapping[str, float]) -> tuple[float, float] | None:
    """(requests in the system, capacity) when both are reported (capacity > 0), else None."""
    capacity = values.get("capacity")
    if capacity is None or capacity <= 0.0:
        return None
    active = values.get("active_sessions")
    queued = values.get("queued_requests")
    if active is None and queued is None:
        return None
    return max(active or 0.0, 0.0) + max(queued or 0.0, 0.0), capacity


def fleet(capacities: list[float], requests: Sequence[float], backlog_capacities: Sequence[float]) -> Fleet:
    """The :class:`Fleet` from the reported capacities (> 0; sorted in place) and, for the instances that
    report a backlog, their ``n + 1`` and capacity.

    The sums are exact (``math.fsum``), so the result does not depend on the order of the instances.
    """
    reference = math.fsum(requests) / math.fsum(backlog_capacities) if requests else None
    if not capacities:
        return Fleet(False, 1.0, 1.0, reference)
    capacities.sort()
    middle = len(capacities) // 2
    median = capacities[middle] if len(capacities) % 2 else (capacities[middle - 1] + capacities[middle]) / 2
    return Fleet(True, median, capacities[0], reference)


def latency_factor(latency_us: float, reference_us: float) -> float:
    """``R/(R + x)``: 1 at no latency, 0.5 at the reference."""
    return reference_us / (reference_us + max(latency_us, 0.0))


def loss_factor(loss: float, reference: float) -> float:
    """``L/(L + loss)``: 1 at no loss, 0.5 at the reference."""
    return reference / (reference + min(max(loss, 0.0), 1.0))


def backlog_factor(requests: float, capacity: float, reference: float) -> float:
    """``min(1, 1/r)`` with ``r`` the backlog per capacity relative to the fleet's ``reference``."""
    relative = (requests + BACKLOG_PSEUDOCOUNT) / capacity / reference
    return 1.0 if relative <= 1.0 else 1.0 / relative


def compute_factors(values: Mapping[str, float], fleet: Fleet, p: Params) -> list[tuple[str, float]]:
    """The compute factors (0-1) whose inputs are known: utilisation, service delay, backlog."""
    factors: list[tuple[str, float]] = []
    utilisation = busiest(values)
    if utilisation is not None:
        factors.append(("utilisation", 1.0 - utilisation / 100.0))
    delay = values.get("service_delay")
    if delay is not None:
        factors.append(("service_delay", latency_factor(delay, p.latency_ref_us)))
    pair = backlog(values)
    if pair is not None and fleet.backlog_ref is not None:
        factors.append(("backlog", backlog_factor(pair[0], pair[1], fleet.backlog_ref)))
    return factors


def network_factors(path: PathMetrics, p: Params) -> list[tuple[str, float]]:
    """The network factors (0-1) whose inputs are known: reachability, RTT, loss."""
    if not path.reachable:
        return [("reachable", 0.0)]
    factors: list[tuple[str, float]] = []
    if path.rtt_mean_us is not None:
        factors.append(("rtt", latency_factor(path.rtt_mean_us, p.latency_ref_us)))
    if path.loss_mean is not None:
        factors.append(("loss", loss_factor(path.loss_mean, p.loss_ref)))
    return factors


def factors(values: Mapping[str, float], path: PathMetrics, fleet: Fleet, p: Params) -> tuple[tuple[str, float], ...]:
    """Every known factor (0-1) behind an instance's L1 scores, by name, for the explanation."""
    return (*compute_factors(values, fleet, p), *network_factors(path, p))


def clamp_score(value: float) -> float:
    """``value`` clamped to the 0-10 score range."""
    return min(max(value, 0.0), 10.0)
