"""Moving the weights toward the target smoothly: EWMA, dwell, slew limit, deadband.

One step, from the previous weights ``w`` and a target ``t`` (both summing to
1; ``t`` over the instances that may take flows now, plus any instance under
a soft limit that still holds a weight, with target 0):

1. **Hard exclusions first, at once.** Instances no longer in the target
   (down, unreachable, draining, over a latency or loss budget, held out, gone)
   drop to 0 immediately: a down instance must not keep getting new flows
   while a slew limit walks its weight down. The share ``F`` they held is
   handed out in proportion to the target: ``base_i = w_i + F * t_i``. This
   is the one documented exception to the slew limit: in a step where other
   instances were excluded a weight may move by ``F * t_i`` more than
   ``max_step``. A new instance starts at 0 and ramps in.

   An instance under a **soft limit** (utilisation ceiling, overloaded flag;
   :mod:`~dyncast_bgp.engine.eligibility`) is not an exclusion here: the
   caller keeps it in the step with target 0 (``shedding``), so its weight
   comes down like any other change (steps 2-4) and never grows; once it is
   0 the caller drops it.

   With no previous weight for any instance (a service's first decision, or
   the first after a blackhole) ``base`` is the **capacity split**
   (``c_i / Σc``), and the step goes on from there like any other (no dwell):
   the whole service ramps in. Jumping straight to the target would let every
   ingress that starts at once (a new service, a restart of all routers) put
   all its flows where the same, possibly stale, report points; the capacity
   split is where weighted settles when utilisations are balanced, and a herd
   that starts there does no harm.
2. **Deadband.** When ``g = max_i |t_i - base_i| <= 0.005`` nothing moves:
   the dataplane splits flows in 1 % steps, and chasing noise below that
   only churns it. Not while a shedding instance holds any weight: a soft
   limit that persists takes the weight to 0, not to within 0.005 of it.
3. **Dwell.** Less than ``min_dwell`` seconds after the weights last moved,
   nothing moves (hard exclusions still apply; shedding waits like any
   move). With a dwell longer than the time metrics take to reflect a move
   (agent interval + BGP), every step sees the effect of the previous one:
   no decision is taken on stale feedback.
4. **EWMA and slew limit.** ``w' = base + λ (t - base)`` with
   ``λ = min(alpha, max_step / g)`` (alpha = ``smoothing``; ``λ = min(1, max_step / g)``
   when the EWMA step would end within the deadband, so the weights arrive
   instead of approaching forever). ``w'`` lies on the segment from ``base``
   to ``t``, so it is a valid split (non-negative, sums to 1) and
   ``|w'_i - base_i| = λ |t_i - base_i| <= max_step`` for every instance: the
   projection scales the whole move rather than clipping components (clipping
   would break the sum, renormalising would break the bound).

The EWMA runs on the weights (the output), not on the metrics: the metrics
are used fresh for eligibility and exclusions (safety needs no lag), and the
weights are what moves traffic, so damping them is what keeps many ingress
routers reacting to the same metrics from herding (docs/control-law.md).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from operator import sub
from typing import NamedTuple

from dyncast_bgp.engine.candidate import Ident
from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.views import KeyedValues

DEADBAND = 0.005
STARTED = "started from the capacity split"
AT_TARGET = "at target"
IN_DEADBAND = "held: within deadband"
ARRIVED = "arrived at target"
MOVING = "moving"
SLEW_LIMITED = "moving (slew-limited)"


class Step(NamedTuple):
    """The weights after one step (aligned with the target) and what happened.

    ``base``: the previous weights with the exclusions applied (step 1);
    ``fraction``: the ``λ`` of the move (0 when held). ``moved``: the weights
    moved toward the target (the dwell restarts). ``settled``: nothing is left
    to do while the inputs stay as they are (at the target or within the
    deadband); otherwise a later step will move the weights further.
    """

    weights: list[float]
    base: list[float]
    fraction: float
    moved: bool
    settled: bool
    status: str

    def smoothed(self, position: int, target: Sequence[float], alpha: float) -> float:
        """The plain EWMA proposal ``base + alpha (t - base)`` of one instance, before the slew limit."""
        base = self.base[position]
        return base + alpha * (target[position] - base)


def base_weights(previous: Mapping[Ident, float], idents: Sequence[Ident],
                 target: Sequence[float]) -> list[float] | None:
    """Step 1: the previous weights of ``idents`` plus the freed share by the target; None if none was kept."""
    same = previous.aligned(idents) if type(previous) is KeyedValues else None
    if same is not None:  # the usual case: the same instances as last time
        kept: Sequence[float] = same
    else:
        get = previous.get
        kept = [get(ident, 0.0) for ident in idents]
    total = sum(kept)
    if total <= 0.0:
        return None
    freed = 1.0 - total
    if freed <= 0.0:
        return list(kept)
    return [weight + freed * share for weight, share in zip(kept, target, strict=True)]


def _normalised(weights: list[float]) -> list[float]:
    total: float = sum(weights)
    return weights if total == 1.0 else list(map(total.__rtruediv__, weights))  # weight / total


def step(previous: Mapping[Ident, float], idents: Sequence[Ident], target: Sequence[float], *,
         start: Callable[[], Sequence[float]], moved_at: float | None, now: float, p: Params,
         shedding: Sequence[int] = ()) -> Step:
    """One stability step from ``previous`` toward ``target`` over ``idents`` (see the module docstring).

    ``start()``: where the weights start when none of ``idents`` had one (the capacity split; called
    only then). ``shedding``: the positions of instances under a soft limit (target 0) that the deadband
    must not hold short of 0.
    """
    base = base_weights(previous, idents, target)
    starting = base is None
    if base is None:
        base = list(start())
    if len(target) != len(base):
        raise ValueError(f"{len(target)} target weights for {len(base)} instances")
    gap = max(map(abs, map(sub, target, base)))  # max |t_i - base_i|
    if gap <= DEADBAND and not any([base[position] > 0.0 for position in shedding]):
        return Step(_normalised(base), base, 0.0, starting, True,
                    STARTED if starting else AT_TARGET if gap == 0.0 else IN_DEADBAND)
    if not starting and moved_at is not None and now - moved_at < p.min_dwell:
        return Step(_normalised(base), base, 0.0, False, False,
                    f"held: dwell ({p.min_dwell - (now - moved_at):.1f} s left)")
    alpha = p.alpha
    fraction = alpha if (1.0 - alpha) * gap > DEADBAND else 1.0
    limit = p.max_step / gap
    if limit < fraction:
        fraction, status = limit, SLEW_LIMITED
    else:
        status = MOVING if fraction < 1.0 else ARRIVED
    weights = [weight + fraction * (share - weight) for share, weight in zip(target, base, strict=True)]
    if starting:
        status = f"{STARTED}; {status}"
    return Step(_normalised(weights), base, fraction, True, fraction >= 1.0, status)
