"""One service's decision: candidates + policy + memory + now -> weights, reasons, next memory.

Pure: no I/O, no clock (``now`` is passed in), no state but the
:class:`~dyncast_bgp.engine.memory.ServiceMemory` handed in and returned.
Pipeline (docs/control-law.md):

1. assess: score every candidate (L0 -> L1 -> L2) and decide its eligibility;
2. with an eligible instance: the policy's raw target, the caps (canary
   rollout hook), then one stability step (hard exclusions at once; deadband,
   dwell, EWMA, slew limit). An instance under a soft limit (utilisation
   ceiling, overloaded flag) that still holds a weight takes part in the step
   with target 0: it sheds its weight by the slew limit and leaves the
   weights once that reaches 0;
3. with none: the fallback (grace, then least-cost / keep / blackhole).

Only the numbers are computed eagerly; the reason texts and the per-instance
explanation are built when first read (:mod:`~dyncast_bgp.engine.views`,
:mod:`~dyncast_bgp.engine.explain`), from data the outcome keeps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Final, NamedTuple

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.assess import Assessment, assess
from dyncast_bgp.engine.candidate import Candidate, ident_of
from dyncast_bgp.engine.eligibility import shedding_note
from dyncast_bgp.engine.explain import Basis, InstanceExplain, explain
from dyncast_bgp.engine.fallback import GRACE, plan
from dyncast_bgp.engine.memory import EMPTY, ServiceMemory
from dyncast_bgp.engine.params import Params, params_for
from dyncast_bgp.engine.policies import target
from dyncast_bgp.engine.stability import Step, step
from dyncast_bgp.engine.views import KeyedValues, LazyMapping
from dyncast_bgp.engine.weights import apply_caps, normalise
from dyncast_bgp.model import Decision, InstanceKey, ServiceId


class Outcome:
    """A decision, the memory to pass to the next call, and its explanation.

    ``fallback`` is None while some instance is eligible; otherwise the
    fallback in force: ``grace``, ``least-cost``, ``keep`` or ``blackhole``
    (``decision.weights`` is empty when nothing can take flows). ``status``
    says what the stability step or the fallback did. ``converging``: a later
    call with the same inputs would change the weights (a dwell or the slew
    limit is holding them short of the target, or a fallback grace is
    running), so the caller should call again.

    ``explain`` may be given as a function that builds it; it is then built
    on first read, once.
    """

    __slots__ = ("_explain", "converging", "decision", "fallback", "memory", "status")

    def __init__(self, decision: Decision, memory: ServiceMemory,
                 explain: tuple[InstanceExplain, ...] | Callable[[], tuple[InstanceExplain, ...]],
                 fallback: str | None = None, status: str = "", *, converging: bool | None = None) -> None:
        self.decision: Final = decision
        self.memory: Final = memory
        self.fallback: Final = fallback
        self.status: Final = status
        self._explain = explain
        if converging is None:
            converging = fallback == GRACE or any(
                item.target is not None and not math.isclose(item.target, item.weight, abs_tol=1e-9)
                for item in self.explain)
        self.converging: Final = converging

    @property
    def explain(self) -> tuple[InstanceExplain, ...]:
        """One :class:`InstanceExplain` per candidate, in canonical order."""
        if not isinstance(self._explain, tuple):
            self._explain = self._explain()
        return self._explain

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Outcome):
            return NotImplemented
        return (self.decision, self.memory, self.fallback, self.status, self.converging, self.explain) == (
            other.decision, other.memory, other.fallback, other.status, other.converging, other.explain)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Outcome({self.decision.service}, weights={dict(self.decision.weights.items())!r}, "
                f"fallback={self.fallback!r}, status={self.status!r})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view, as `dyncast ctl explain SERVICE` prints it."""
        decision = self.decision
        return {
            "service": str(decision.service),
            "fallback": self.fallback,
            "status": self.status,
            "converging": self.converging,
            "weights": {str(key.binding): round(weight, 6) for key, weight in decision.weights.items()},
            "excluded": {str(key.binding): reason for key, reason in decision.excluded.items()},
            "instances": [item.to_dict() for item in self.explain],
        }


class _Result(NamedTuple):
    """The weights of one decision over ``chosen`` (indices into the assessment) and how they came about."""

    chosen: Sequence[int]
    weights: Sequence[float]
    target: Sequence[float] | None
    step: Step | None
    note: Callable[[int], str]
    status: str
    moved: bool
    converging: bool
    shedding: Collection[int] = ()
    """The indices in ``chosen`` under a soft limit, shedding their weight (target 0)."""


def decide(service: ServiceId, candidates: Sequence[Candidate], policy: ServicePolicy,
           memory: ServiceMemory | None, now: float, *,
           caps: Mapping[InstanceKey, float] | None = None) -> Outcome:
    """Decide how ``service``'s new flows are spread over ``candidates`` at time ``now``.

    ``memory`` is the previous call's ``Outcome.memory`` (None the first time).
    ``caps`` bounds the target weight of some instances (0-1; the canary
    rollout's hook): the excess goes to the others; a weight above a lowered
    cap comes down at the slew rate (drain an instance to stop it at once).
    Raises ValueError when a candidate belongs to another service or an
    instance is listed twice.
    """
    p = params_for(policy)
    last = memory if memory is not None else EMPTY
    a = assess(service, candidates, p, last.limited)
    since: float | None = None
    fallback: str | None = None
    incumbent = last.incumbent
    if a.eligible:
        result, chosen_incumbent = _eligible(a, p, last, now, caps)
        incumbent = chosen_incumbent if chosen_incumbent is not None else incumbent
    else:
        since = last.ineligible_since if last.ineligible_since is not None else now
        result, fallback = _fallback(a, p, last, now, since)
    idents, keys, exclusions = a.idents, a.candidates, a.exclusions
    chosen, weights = result.chosen, result.weights
    reason = _reasons(a, result)
    excluded = {keys[i].key: exclusion.reason for i in a.excluded
                if (exclusion := exclusions[i]) is not None and i not in chosen}
    decision = Decision(service, KeyedValues([keys[i].key for i in chosen], weights),
                        reasons=LazyMapping(lambda: {keys[i].key: reason(i) for i in chosen}), excluded=excluded)
    limited = frozenset([idents[i] for i in a.excluded if (exclusion := exclusions[i]) is not None and exclusion.limit])
    next_memory = ServiceMemory(KeyedValues(_idents(a, chosen), weights),
                                now if result.moved else last.moved_at, incumbent, limited, since)
    basis = Basis(a, p, chosen, weights, result.target, result.step, reason, result.shedding)
    return Outcome(decision, next_memory, lambda: explain(basis), fallback, result.status,
                   converging=result.converging)


def _eligible(a: Assessment, p: Params, last: ServiceMemory, now: float,
              caps: Mapping[InstanceKey, float] | None) -> tuple[_Result, int | None]:
    chosen: Sequence[int] = a.eligible
    aim = target(a, chosen, p, last.incumbent, last.weights)
    goal, note = aim.weights, aim.note
    if caps:
        goal, note = _capped(a, chosen, goal, note, caps)
    shedding: list[int] = []
    if a.excluded and last.weights:
        chosen, goal, note, shedding = _with_shedding(a, p, last, chosen=chosen, goal=goal, note=note)
    moved = step(last.weights, _idents(a, chosen), goal, start=lambda: _capacity_split(a, chosen),
                 moved_at=last.moved_at, now=now, p=p, shedding=shedding)
    if shedding and any([moved.weights[position] == 0.0 for position in shedding]):
        chosen, goal, moved, shedding = _shed(chosen, goal, moved, shedding)
    result = _Result(chosen, moved.weights, goal, moved, note, moved.status, moved.moved, not moved.settled,
                     frozenset([chosen[position] for position in shedding]))
    return result, aim.incumbent


def _with_shedding(a: Assessment, p: Params, last: ServiceMemory, *, chosen: Sequence[int], goal: list[float],
                   note: Callable[[int], str]) -> tuple[Sequence[int], list[float], Callable[[int], str], list[int]]:
    """``chosen``/``goal``/``note`` plus the instances under a soft limit that still hold a weight (target 0).

    Returns the positions of those in the merged, canonically ordered ``chosen`` too (none: unchanged).
    """
    exclusions, idents, previous = a.exclusions, a.idents, last.weights
    soft = [i for i in a.excluded
            if (exclusion := exclusions[i]) is not None and exclusion.soft and previous.get(idents[i], 0.0) > 0.0]
    if not soft:
        return chosen, goal, note, []
    merged = sorted([*chosen, *soft])
    share = dict(zip(chosen, goal, strict=True))
    held = frozenset(soft)
    load = a.load

    def shedding_or(i: int) -> str:
        exclusion = exclusions[i]
        if i in held and exclusion is not None:
            return shedding_note(exclusion, load[i], p)
        return note(i)

    return (merged, [share.get(i, 0.0) for i in merged], shedding_or,
            [position for position, i in enumerate(merged) if i in held])


def _shed(chosen: Sequence[int], goal: list[float], moved: Step, shedding: list[int]
          ) -> tuple[list[int], list[float], Step, list[int]]:
    """Drop the shedding instances whose weight reached 0: from now on they are simply excluded.

    Returns ``chosen``, ``goal``, the step and the shedding positions without them.
    """
    gone = frozenset(position for position in shedding if moved.weights[position] == 0.0)
    keep = [position for position in range(len(chosen)) if position not in gone]
    renumber = {old: new for new, old in enumerate(keep)}
    return ([chosen[k] for k in keep], [goal[k] for k in keep],
            moved._replace(weights=[moved.weights[k] for k in keep], base=[moved.base[k] for k in keep]),
            [renumber[position] for position in shedding if position not in gone])


def _idents(a: Assessment, indices: Sequence[int]) -> Sequence[int]:
    """The idents of ``indices`` (all of them, in order, when every instance is in)."""
    return a.idents if len(indices) == len(a.idents) else [a.idents[i] for i in indices]


def _capacity_split(a: Assessment, indices: Sequence[int]) -> list[float]:
    """Weights in proportion to capacity: where a service's weights start (docs/control-law.md)."""
    capacity = a.capacity
    return normalise([capacity[i] for i in indices])


def _capped(a: Assessment, chosen: Sequence[int], goal: list[float], note: Callable[[int], str],
            caps: Mapping[InstanceKey, float]) -> tuple[list[float], Callable[[int], str]]:
    by_ident = {ident_of(key): cap for key, cap in caps.items()}
    capped, held = apply_caps(dict(zip([a.idents[i] for i in chosen], goal, strict=True)), by_ident)

    def capped_note(i: int) -> str:
        ident = a.idents[i]
        return f"{note(i)}; capped at {by_ident[ident]:.3g}" if ident in held else note(i)

    return [capped[a.idents[i]] for i in chosen], capped_note


def _fallback(a: Assessment, p: Params, last: ServiceMemory, now: float, since: float) -> tuple[_Result, str]:
    chosen = plan(a, last, p, since=since, now=now)
    exclusions = a.exclusions

    def note(i: int) -> str:
        exclusion = exclusions[i]
        return f"{chosen.note} (ineligible: {exclusion.reason if exclusion is not None else 'eligible'})"

    if chosen.target is not None:
        moved = step(last.weights, _idents(a, chosen.indices), chosen.target,
                     start=lambda: _capacity_split(a, chosen.indices), moved_at=last.moved_at, now=now, p=p)
        return _Result(chosen.indices, moved.weights, chosen.target, moved, note, f"{chosen.note}; {moved.status}",
                       moved.moved, not moved.settled), chosen.mode
    weights = chosen.weights or []
    return _Result(chosen.indices, weights, None, None, note, chosen.note, False, chosen.mode == GRACE), chosen.mode


def _reasons(a: Assessment, result: _Result) -> Callable[[int], str]:
    """``reason(i)``: why instance ``i`` has its weight (policy note, target, weight, step) or none."""
    exclusions = a.exclusions
    positions: dict[int, int] = {}

    def reason(i: int) -> str:
        if not positions and result.chosen:
            positions.update(zip(result.chosen, range(len(result.chosen)), strict=True))
        place = positions.get(i)
        if place is None:
            exclusion = exclusions[i]
            return exclusion.reason if exclusion is not None else ""
        weight = result.weights[place]
        if result.target is None:
            return f"{result.note(i)}; weight {weight:.3f}"
        return f"{result.note(i)}; target {result.target[place]:.3f}, weight {weight:.3f} ({result.status})"

    return reason
