"""Raw target weights per policy, from the eligible instances' scores and free capacity.

The target is where a policy would put new flows if nothing had to be smooth;
:mod:`~dyncast_bgp.engine.stability` then moves the actual weights toward it.
Every policy takes the :class:`~dyncast_bgp.engine.assess.Assessment` and the
indices of the instances to share among (eligible ones, in canonical order)
and returns a :class:`Target`: one weight per index (summing to 1; an index a
policy does not use gets 0) and, on demand, a note per instance saying why.

- ``weighted``: ``target_i ∝ merit_i = free_i * max(L2_i, 0.1)`` with
  ``free_i = capacity_i * max(1 - load_i/100, 0.01)``. Grows with free
  capacity, shrinks with load and path cost (through L2); capacities enter
  linearly, so only their ratios matter; each merit depends only on its own
  instance (and the fleet's relative backlog), so more load or a worse path
  never raises an instance's target.
- ``best``: all to the highest L2 (lowest ident on ties); an eligible
  incumbent keeps it until a challenger's L2 exceeds the incumbent's
  ``* (1 + hysteresis)``.
- ``local-first``: local instances (D-BID in ``local``) split by merit, until
  their capacity-weighted mean load crosses ``spill_at``; then the larger of
  two spills goes to the remote ones, split by merit: the curve
  ``(load - spill_at)/(ceiling - spill_at)`` (0-1; the band is at least 5
  points) and the complement of the last decision's local share scaled by
  ``spill_at / load`` (:func:`local_share`: the share that brings the locals
  back to ``spill_at``). The curve alone was unstable when the local site is
  small against the ingress's demand (one slew step moved its load across the
  whole band, so it cycled between overloaded and idle); the ratio alone was
  slow in a surge.
- ``consolidate``: instances in a fixed order (largest capacity first, then
  ident); the service's current load ``Σ capacity * load/100`` is planned onto
  them in that order, each up to ``target_utilization``; load beyond every
  target is spread in proportion to capacity. Targets are proportional to the
  planned load: new flows arrive where the load should be, and a packed
  instance keeps its share rather than flapping between full and empty.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

from dyncast_bgp.engine.assess import Assessment
from dyncast_bgp.engine.candidate import Ident
from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.scoring import SCORE_FLOOR
from dyncast_bgp.engine.weights import normalise
from dyncast_bgp.model import IPAddress, IPNetwork

SPILL_BAND_MIN = 5.0
"""Smallest band (percentage points) over which local-first spills from 0 to everything."""


class Target(NamedTuple):
    """A policy's raw target: one weight per index shared among (sum 1), and why.

    ``note(i)`` says why instance ``i`` gets its target (formatted only when
    an explanation is asked for); ``incumbent`` is the instance ``best`` chose.
    """

    weights: list[float]
    note: Callable[[int], str]
    incumbent: Ident | None = None


Policy = Callable[[Assessment, Sequence[int], Params, "Ident | None", Mapping[Ident, float]], Target]
"""``(assessment, indices, params, incumbent, previous)``: ``previous`` is the last decision's weights by ident."""


def merit(a: Assessment, index: int) -> float:
    """Free capacity * L2 (floored): the weighted policy's unnormalised weight."""
    overall = a.overall[index]
    return a.free[index] * (overall if overall > SCORE_FLOOR else SCORE_FLOOR)


def by_merit(a: Assessment, indices: Sequence[int]) -> list[float]:
    """Weights over ``indices`` in proportion to merit."""
    merit = a.merit  # free[i] * max(overall[i], SCORE_FLOOR), computed by the assessment
    return normalise(merit if len(indices) == len(merit) else [merit[i] for i in indices])


def merit_note(a: Assessment, index: int) -> str:
    return f"free capacity {a.free[index]:.4g} x score {a.overall[index]:.2f}"


def weighted(a: Assessment, indices: Sequence[int], p: Params, incumbent: Ident | None,
             previous: Mapping[Ident, float]) -> Target:
    """Weights in proportion to merit (free capacity * score)."""
    return Target(by_merit(a, indices), lambda i: f"weighted: {merit_note(a, i)}")


def best(a: Assessment, indices: Sequence[int], p: Params, incumbent: Ident | None,
         previous: Mapping[Ident, float]) -> Target:
    """Everything to the best L2, with hysteresis in favour of an eligible incumbent."""
    overall = a.overall
    chosen = leader = max(indices, key=overall.__getitem__)  # the first maximum: lowest ident on ties
    held = next((i for i in indices if a.idents[i] == incumbent), None) if incumbent is not None else None
    bar = 0.0
    if held is not None:
        bar = overall[held] * (1.0 + p.hysteresis)
        if overall[leader] <= bar:
            chosen = held

    def note(i: int) -> str:
        if i != chosen:
            return f"best: standby, score {overall[i]:.2f}"
        return f"best: score {overall[i]:.2f}" + (
            f" (held: a challenger needs more than {bar:.2f})" if i == held else "")

    return Target([1.0 if i == chosen else 0.0 for i in indices], note, a.idents[chosen])


def is_local(binding: IPAddress, local: tuple[IPNetwork, ...]) -> bool:
    return any(binding in network for network in local)


def local_share(held: float, local_load: float, p: Params) -> float:
    """The share of new flows to keep local: the one that would bring the locals' load to ``spill_at``.

    The locals' load came from the share they ``held`` (the last decision's), so scaling that share by
    ``spill_at / load`` aims the load at ``spill_at`` (multiplicative, so every ingress that does the same
    scales the site's load by the same factor; with background load ``B`` the step's gain at the fixed
    point is ``B / spill_at`` < 1: it converges without overshooting). Never above 1; more local load
    never raises it. local-first spills the larger of ``1 - local_share`` and :func:`spill_share`: the
    ratio brings the share back gradually once the locals cool down (the fixed curve alone snapped back
    to all-local and cycled), the curve reacts at once to a surge, where the measured load under-states
    the demand (it cannot exceed 100 %).
    """
    if local_load <= 0.0:
        return 1.0
    return min(1.0, held * p.spill_at / local_load)


def spill_share(local_load: float, p: Params) -> float:
    """The share of new flows local-first sends to remote instances at this local load, with no local share
    held yet (the first decision): proportional to how far into the band between ``spill_at`` and the
    ceiling the locals are."""
    band = max(p.ceiling - p.spill_at, SPILL_BAND_MIN)
    return min(max((local_load - p.spill_at) / band, 0.0), 1.0)


def local_first(a: Assessment, indices: Sequence[int], p: Params, incumbent: Ident | None,
                previous: Mapping[Ident, float]) -> Target:
    """Local instances first; spill to remote ones in proportion to how far locals are past ``spill_at``."""
    where = {i: is_local(a.key(i).binding, p.local) for i in indices}
    local = [i for i in indices if where[i]]
    remote = [i for i in indices if not where[i]]
    if not local or not remote:
        only = "local" if local else "remote"
        return Target(by_merit(a, indices),
                      lambda i: f"local-first: only {only} instances eligible; {merit_note(a, i)}")
    capacity = sum(a.capacity[i] for i in local)
    load = sum(a.capacity[i] * a.load[i] for i in local) / capacity if capacity > 0.0 else 0.0
    held = sum(previous.get(a.idents[i], 0.0) for i in local)
    if held > 0.0:  # the larger spill of the two rules (local_share's docstring)
        spill = max(1.0 - local_share(held, load, p), spill_share(load, p))
        how = f"local share {held:.2f} -> {1.0 - spill:.2f}"
    else:
        spill = spill_share(load, p)
        how = "no local share yet"
    shares = dict(zip(local, [(1.0 - spill) * w for w in by_merit(a, local)], strict=True))
    shares.update(zip(remote, [spill * w for w in by_merit(a, remote)], strict=True))
    status = f"locals at {load:.1f}% (spill at {p.spill_at:g}%), {how}, {spill:.0%} spilled"
    return Target([shares[i] for i in indices],
                  lambda i: f"local-first: {'local' if where[i] else 'remote'}; {status}; {merit_note(a, i)}")


def consolidate(a: Assessment, indices: Sequence[int], p: Params, incumbent: Ident | None,
                previous: Mapping[Ident, float]) -> Target:
    """Plan the current load onto as few instances as possible, each up to ``target_utilization``."""
    capacity, load = a.capacity, a.load
    order = sorted(indices, key=lambda i: (-capacity[i], a.idents[i]))
    demand = sum(capacity[i] * load[i] / 100.0 for i in order)
    planned = dict.fromkeys(order, 0.0)
    remaining = demand
    for i in order:
        take = min(capacity[i] * p.target_utilization / 100.0, remaining)
        planned[i] = take
        remaining -= take
    total = sum(capacity[i] for i in order)
    if remaining > 0.0 and total > 0.0:
        for i in order:
            planned[i] += remaining * capacity[i] / total
    if demand <= 0.0:
        planned[order[0]] = 1.0
    rank = {i: position + 1 for position, i in enumerate(order)}

    def note(i: int) -> str:
        if planned[i] <= 0.0:
            return f"consolidate: #{rank[i]} of {len(order)}, standby (earlier ones hold the load)"
        share = planned[i] / capacity[i] * 100.0 if capacity[i] > 0.0 else 0.0
        return (f"consolidate: #{rank[i]} of {len(order)}, planned {share:.1f}% of capacity "
                f"(target {p.target_utilization:g}%)")

    return Target(normalise([planned[i] for i in indices]), note)


POLICIES: Mapping[str, Policy] = {
    "weighted": weighted,
    "best": best,
    "local-first": local_first,
    "consolidate": consolidate,
}


def target(a: Assessment, indices: Sequence[int], p: Params, incumbent: Ident | None = None,
           previous: Mapping[Ident, float] | None = None) -> Target:
    """The raw target of ``p.policy`` over ``indices`` (not empty, in canonical order)."""
    if not indices:
        raise ValueError("a target needs at least one eligible instance")
    return POLICIES[p.policy](a, indices, p, incumbent, previous or {})
