"""The decision's arithmetic over many services at once: scores, the ``weighted`` target, one stability step.

Every function takes and returns arrays of shape ``(B, n)`` (``B`` services
of ``n`` instances, canonical order along a row) or ``(B,)``, and computes
exactly what :mod:`~dyncast_bgp.engine.assess`,
:mod:`~dyncast_bgp.engine.policies` (``weighted``) and
:mod:`~dyncast_bgp.engine.stability` compute for one service, bit for bit:
the same IEEE operations in the same order. Two things make that hold:

- element-wise arithmetic is the same in NumPy as in Python (``+ - * /``,
  comparisons and ``max`` of doubles are exact IEEE operations);
- every sum over a service's instances is taken left to right, one column at
  a time (:func:`row_sums`), like Python's ``sum()`` of floats (CPython 3.11
  adds in order without compensation; NumPy's own ``sum`` adds pairwise, which
  can differ in the last bit). Instances left out of a sum contribute ``+0.0``,
  which changes no partial sum of non-negative values. The fleet's backlog
  reference uses ``math.fsum``, as the scalar path does.

Absent values are NaN (:mod:`~dyncast_bgp.engine.columns`); every use of
one is masked by where it is known.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.scoring import BACKLOG_PSEUDOCOUNT, FREE_FLOOR, SCORE_FLOOR
from dyncast_bgp.engine.stability import DEADBAND

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]


def row_sums(values: Floats) -> Floats:
    """The sum of each row, added left to right from 0 like Python's ``sum()`` (bit for bit)."""
    total = np.zeros(values.shape[0])
    for column in values.T:
        total += column
    return total


def sound_weights(weights: Floats, mask: Bools) -> Bools:
    """Whether each row's weights where ``mask`` pass :class:`~dyncast_bgp.model.Decision`'s checks, computed
    as it computes them: a finite sum (Python's, :func:`row_sums`), and, unless the row has none, a least
    weight >= 0 and a sum ``math.isclose`` to 1 (``abs_tol`` 1e-9)."""
    with np.errstate(over="ignore", invalid="ignore"):  # a NaN or infinite weight: not sound, no warning
        total = row_sums(np.where(mask, weights, 0.0))
        least = np.where(mask, weights, np.inf).min(axis=1, initial=np.inf)
        close = np.abs(total - 1.0) <= np.maximum(WEIGHT_SUM_TOLERANCE * np.maximum(np.abs(total), 1.0),
                                                  WEIGHT_SUM_TOLERANCE)
    sound: Bools = np.isfinite(total) & (~mask.any(axis=1) | ((least >= 0.0) & close))
    return sound


WEIGHT_SUM_TOLERANCE = 1e-9
"""``math.isclose``'s default relative tolerance and the absolute one :class:`~dyncast_bgp.model.Decision` uses."""


def normalised(values: Floats, mask: Bools) -> tuple[Floats, Bools]:
    """:func:`~dyncast_bgp.engine.weights.normalise` of each row's ``values`` where ``mask`` (0 elsewhere).

    Also says where the result is exact: a row whose sum overflows (normalise first scales it) is not.
    """
    kept = np.where(mask, values, 0.0)
    total = row_sums(kept)
    count = np.count_nonzero(mask, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0.0, 0.0, 1.0 / count)
        result = np.where(mask, np.where((total > 0.0)[:, None], kept / total[:, None], share[:, None]), 0.0)
    return result, np.isfinite(total)


def _clamp_score(values: Floats) -> Floats:
    return np.minimum(np.maximum(values, 0.0), 10.0)


class Fleet(NamedTuple):
    """:class:`~dyncast_bgp.engine.scoring.Fleet` per service: arrays of shape ``(B,)``; ``backlog_ref`` NaN
    where None."""

    capacity_known: Bools
    neutral_capacity: Floats
    worst_capacity: Floats
    backlog_ref: Floats


def fleet(capacity: Floats, backlog: Floats, has_backlog: Bools) -> Fleet:
    """:func:`~dyncast_bgp.engine.scoring.fleet` of every service (``capacity`` as reported, NaN: not)."""
    positive = capacity > 0.0
    known = np.asarray(positive.any(axis=1), np.bool_)
    ordered = np.sort(np.where(positive, capacity, np.inf), axis=1)
    count = np.count_nonzero(positive, axis=1)
    rows = np.arange(len(count))
    middle = count // 2
    upper = ordered[rows, np.minimum(middle, ordered.shape[1] - 1)]
    lower = ordered[rows, np.maximum(middle - 1, 0)]
    median = np.where(count % 2 == 1, upper, (lower + upper) / 2)
    neutral = np.where(known, median, 1.0)
    worst = np.where(known, ordered[:, 0], 1.0)
    requests, capacities = _exact_sums(np.where(has_backlog, backlog, 0.0)), _exact_sums(
        np.where(has_backlog, capacity, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        reference = np.where(has_backlog.any(axis=1), requests / capacities, np.nan)
    return Fleet(known, neutral, worst, reference)


INTEGER_LIMIT = float(2**53)
"""Integers up to this add exactly in doubles: any order gives the exact sum (what ``math.fsum`` returns)."""


def _exact_sums(values: Floats) -> Floats:
    """``math.fsum`` of each row (non-negative values): the plain sum where every value is an integer and the
    total stays below :data:`INTEGER_LIMIT` (sessions, queues and capacities usually are), ``fsum`` elsewhere."""
    total = row_sums(values)
    inexact = np.flatnonzero(~((np.floor(values) == values).all(axis=1) & (total < INTEGER_LIMIT)))
    if len(inexact):
        total[inexact] = [math.fsum(row) for row in values[inexact].tolist()]
    return total


class Scores(NamedTuple):
    """What :func:`~dyncast_bgp.engine.assess.assess` computes per instance, as columns, plus what the
    exclusion check needs (``utilisation``: NaN when unknown; the ``unknown_*`` masks; ``reported``;
    ``agent_overall``: the L2 is the agent's) and ``screen``: where some exclusion may apply, as far as the
    scores tell (state, reachability, flags and holds are the caller's); elsewhere none does but, for an
    instance ``near_ceiling``, the utilisation limit's hysteresis."""

    overall: Floats
    load: Floats
    capacity: Floats
    merit: Floats
    utilisation: Floats
    unknown_compute: Bools
    unknown_network: Bools
    unknown_capacity: Bools
    reported: Bools
    agent_overall: Bools
    screen: Bools
    near_ceiling: Bools
    """Utilisation below the ceiling but not below the re-admission level: excluded only if a limit excluded
    the instance in the previous decision (hysteresis), which the caller checks."""


def scores(metrics: dict[str, Floats], rtt: Floats, loss: Floats, reachable: Bools, p: Params) -> Scores:
    """L0 -> L1 -> L2, free capacity and merit of every instance (the formulas of
    :mod:`~dyncast_bgp.engine.scoring`, in the order :func:`~dyncast_bgp.engine.assess.assess` applies them)."""
    utilisation = np.fmax(np.fmax(metrics["cpu_utilization"], metrics["memory_utilization"]),
                          metrics["gpu_utilization"])  # fmax skips NaN: the busiest of those known
    utilisation = np.minimum(np.maximum(utilisation, 0.0), 100.0)  # NaN stays NaN
    known_utilisation = ~np.isnan(utilisation)
    reported_capacity = metrics["capacity"]
    reported = ~np.isnan(reported_capacity)
    with np.errstate(divide="ignore", invalid="ignore"):
        compute, unknown_compute, f = _compute(metrics, utilisation, known_utilisation, p)
        network, unknown_network = _network(metrics, rtt, loss, reachable, p)
    # L2
    overall = p.compute_share * compute + p.network_share * network
    agent = metrics.get("overall_score") if p.use_agent_score else None
    agent_overall = np.zeros_like(reachable)
    if agent is not None:
        agent_overall = ~np.isnan(agent)
        overall = np.where(agent_overall, _clamp_score(agent), overall)
    # free capacity and merit
    load = np.where(known_utilisation, utilisation, p.unknown_load)
    assumed = f.worst_capacity if p.unknown == "pessimistic" else f.neutral_capacity
    capacity = np.where(reported, np.where(reported_capacity > 0.0, reported_capacity, 0.0), assumed[:, None])
    unknown_capacity = ~reported & f.capacity_known[:, None]
    spare = 1.0 - load / 100.0
    free = capacity * np.where(spare > FREE_FLOOR, spare, FREE_FLOOR)
    merit = free * np.where(overall > SCORE_FLOOR, overall, SCORE_FLOOR)
    # where an exclusion may apply
    over = known_utilisation & ~(utilisation < p.ceiling)
    near = known_utilisation & ~(utilisation < p.screen_utilisation) & ~over
    screen = (reported & (capacity <= 0.0)) | over
    screen |= (~np.isnan(rtt) & ~(rtt < p.screen_rtt_us)) | (~np.isnan(loss) & ~(loss < p.screen_loss))
    if p.unknown == "exclude":
        screen |= unknown_compute | unknown_network | unknown_capacity
    return Scores(overall, load, capacity, merit, utilisation, unknown_compute, unknown_network, unknown_capacity,
                  reported, agent_overall, screen, near)


def _compute(metrics: dict[str, Floats], utilisation: Floats, known_utilisation: Bools,
             p: Params) -> tuple[Floats, Bools, Fleet]:
    """Compute L1 = 10 * min(known factors) (2.0: none known), whether unknown, and the fleet figures."""
    reported_capacity = metrics["capacity"]
    active, queued = metrics["active_sessions"], metrics["queued_requests"]
    has_backlog = (reported_capacity > 0.0) & (~np.isnan(active) | ~np.isnan(queued))
    backlog = (np.where(active > 0.0, active, 0.0) + np.where(queued > 0.0, queued, 0.0)) + BACKLOG_PSEUDOCOUNT
    f = fleet(reported_capacity, backlog, has_backlog)
    factor = np.where(known_utilisation, 1.0 - utilisation / 100.0, 2.0)
    delay = metrics["service_delay"]
    delay_factor = p.latency_ref_us / (p.latency_ref_us + np.where(delay > 0.0, delay, 0.0))
    factor = np.where(~np.isnan(delay) & (delay_factor < factor), delay_factor, factor)
    relative = backlog / reported_capacity / f.backlog_ref[:, None]
    backlog_factor = np.where(relative <= 1.0, 1.0, 1.0 / relative)
    factor = np.where(has_backlog & (backlog_factor < factor), backlog_factor, factor)  # has_backlog: a reference
    unknown = factor > 1.0
    compute = np.where(unknown, p.unknown_score, 10.0 * factor)
    agent = metrics.get("compute_score") if p.use_agent_score else None
    if agent is not None:
        by_agent = ~np.isnan(agent)
        compute = np.where(by_agent, _clamp_score(agent), compute)
        unknown &= ~by_agent
    return compute, unknown, f


def _network(metrics: dict[str, Floats], rtt: Floats, loss: Floats, reachable: Bools,
             p: Params) -> tuple[Floats, Bools]:
    """Network L1 = 10 * f_rtt * f_loss (0 when unreachable), and whether unknown."""
    known_rtt, known_loss = ~np.isnan(rtt), ~np.isnan(loss)
    measured = np.full_like(rtt, 10.0)
    rtt_factor = p.latency_ref_us / (p.latency_ref_us + np.where(rtt > 0.0, rtt, 0.0))
    measured = np.where(known_rtt, measured * rtt_factor, measured)
    loss_factor = p.loss_ref / (p.loss_ref + np.where(loss < 0.0, 0.0, np.where(loss > 1.0, 1.0, loss)))
    measured = np.where(known_loss, measured * loss_factor, measured)
    unmeasured = np.full_like(rtt, p.unknown_score)
    unknown = reachable & ~known_rtt & ~known_loss
    agent = metrics.get("network_score") if p.use_agent_score else None
    if agent is not None:
        by_agent = ~np.isnan(agent)
        unmeasured = np.where(by_agent, _clamp_score(agent), unmeasured)
        unknown &= ~by_agent
    return np.where(reachable, np.where(known_rtt | known_loss, measured, unmeasured), 0.0), unknown


# what a step did, per service (Step.status is built from these and the numbers)
HELD_DEADBAND = 0
HELD_DWELL = 1
MOVED = 2


class Stepped(NamedTuple):
    """:func:`~dyncast_bgp.engine.stability.step` of every service (see :func:`step`)."""

    weights: Floats
    """After the step and normalisation; 0 outside ``chosen``."""
    kind: npt.NDArray[np.int8]
    """HELD_DEADBAND, HELD_DWELL or MOVED."""
    starting: Bools
    gap: Floats
    fraction: Floats
    slew_limited: Bools
    exact: Bools
    """False where a sum overflowed (the scalar path scales first): decide that service one by one."""


def step(previous: Floats, target: Floats, *, chosen: Bools, shedding: Bools, capacity: Floats,
         moved_at: Floats, now: float, p: Params) -> Stepped:
    """One stability step of every service over its ``chosen`` instances (``previous`` aligned, 0 for none;
    ``moved_at`` NaN for never); ``shedding`` the chosen ones under a soft limit (target 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return _step(previous, target, chosen=chosen, shedding=shedding, capacity=capacity, moved_at=moved_at,
                     now=now, p=p)


def _step(previous: Floats, target: Floats, *, chosen: Bools, shedding: Bools, capacity: Floats,
          moved_at: Floats, now: float, p: Params) -> Stepped:
    kept = np.where(chosen, previous, 0.0)
    total = row_sums(kept)
    starting = total <= 0.0
    freed = 1.0 - total
    base = np.where((freed <= 0.0)[:, None], kept, kept + freed[:, None] * target)
    split, exact = normalised(capacity, chosen)
    base = np.where(starting[:, None], split, base)
    gap = np.max(np.where(chosen, np.abs(target - base), 0.0), axis=1)
    shed_held = (shedding & (base > 0.0)).any(axis=1)
    deadband = (gap <= DEADBAND) & ~shed_held
    dwell = ~deadband & ~starting & ~np.isnan(moved_at) & (now - moved_at < p.min_dwell)
    alpha = p.alpha
    fraction = np.where((1.0 - alpha) * gap > DEADBAND, alpha, 1.0)
    limit = p.max_step / gap
    slew_limited = limit < fraction
    fraction = np.where(slew_limited, limit, fraction)
    held = deadband | dwell
    fraction = np.where(held, 0.0, fraction)
    moved = base + fraction[:, None] * (target - base)
    weights = np.where(held[:, None], base, moved)
    weights = np.where(chosen, weights, 0.0)
    total = row_sums(weights)
    weights = np.where((total == 1.0)[:, None], weights, weights / total[:, None])
    kind = np.where(deadband, HELD_DEADBAND, np.where(dwell, HELD_DWELL, MOVED)).astype(np.int8)
    return Stepped(weights, kind, starting, gap, fraction, slew_limited & ~held, exact | ~starting)
