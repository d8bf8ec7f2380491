"""Deciding many services at once: what the router runs in every step (:meth:`RouterEngine.step`).

:func:`decide_many` returns, for every request, the :class:`Outcome` that
:func:`~dyncast_bgp.engine.decide.decide` returns for it: the same weights
(bit for bit, in the same order), exclusions, memory, status and
convergence. ``decide`` stays the reference; this module is a faster way to
the same numbers for the common case:

- services under the ``weighted`` policy (the default) with no caps, grouped
  by policy and instance count, at least ``min_batch`` of them alike: their
  scores, exclusions, targets and stability step are computed as columns over
  the whole group (:mod:`~dyncast_bgp.engine.columns`,
  :mod:`~dyncast_bgp.engine.vector`), the exclusions by the very rules
  ``assess`` applies (:func:`~dyncast_bgp.engine.assess.exclusion_of`,
  called for the few instances a cheap column screen cannot clear);
- everything else goes to ``decide`` one service at a time: the other
  policies, canary caps, a service with no eligible instance (the fallback),
  unusual input (:mod:`~dyncast_bgp.engine.columns`), a sum that overflows,
  and groups too small for the columns to pay (one service changing is
  decided faster by ``decide``).

The reason texts and the per-instance explanation are lazy in ``decide``
(built on first read); here, on first read, they come from ``decide`` for
that one service with the same inputs: a pure function, so the same texts as
if it had decided the service in the first place. Reading them costs one
per-service decision more than it did (``dyncast ctl explain``, the metrics
endpoint, the audit log); deciding, which delays every dataplane update,
costs a fraction.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine import vector
from dyncast_bgp.engine.assess import Standing, exclusion_of
from dyncast_bgp.engine.candidate import Candidate, Ident
from dyncast_bgp.engine.columns import Block, read
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.engine.eligibility import Exclusion
from dyncast_bgp.engine.explain import InstanceExplain
from dyncast_bgp.engine.memory import EMPTY, ServiceMemory
from dyncast_bgp.engine.params import Params, params_for
from dyncast_bgp.engine.rows import Flat, block_of
from dyncast_bgp.engine.stability import ARRIVED, AT_TARGET, IN_DEADBAND, MOVING, SLEW_LIMITED, STARTED
from dyncast_bgp.engine.views import KeyedValues
from dyncast_bgp.model import Decision, InstanceKey, ServiceId

MIN_BATCH = 16
"""Fewer services alike than this are decided one by one: the columns' fixed cost would not pay."""
WEIGHTED = "weighted"


class Request(NamedTuple):
    """One service to decide: the arguments of :func:`~dyncast_bgp.engine.decide.decide` but ``now``."""

    service: ServiceId
    candidates: Sequence[Candidate]
    policy: ServicePolicy
    memory: ServiceMemory | None = None
    caps: Mapping[InstanceKey, float] | None = None


def decide_many(requests: Sequence[Request], now: float, *, min_batch: int = MIN_BATCH) -> list[Outcome]:
    """``decide(*request, now)`` of every request, in order (see the module docstring).

    Raises what :func:`~dyncast_bgp.engine.decide.decide` raises for the first request it raises for.
    """
    outcomes: list[Outcome | None] = [None] * len(requests)
    groups: dict[tuple[int, int], list[int]] = {}
    params: dict[int, Params] = {}
    for index, request in enumerate(requests):
        if request.caps or not request.candidates:
            continue
        p = params_for(request.policy)
        if p.policy == WEIGHTED:
            groups.setdefault((id(p), len(request.candidates)), []).append(index)
            params[id(p)] = p
    for (key, _), members in groups.items():
        if len(members) >= min_batch:
            decided = _decide_block([requests[index] for index in members], params[key], now)
            for index, outcome in zip(members, decided, strict=True):
                outcomes[index] = outcome
    return [outcome if outcome is not None else _one(request, now)
            for request, outcome in zip(requests, outcomes, strict=True)]


def _one(request: Request, now: float) -> Outcome:
    return decide(request.service, request.candidates, request.policy, request.memory, now, caps=request.caps)


class _Later(Mapping[InstanceKey, str]):
    """One request's reason texts (this mapping) and, called, its explanation: ``decide``'s, made on first read.

    One object per service where a :class:`~dyncast_bgp.engine.views.LazyMapping` and two callables would be
    four (a full recompute makes 10,000 of them).
    """

    __slots__ = ("_now", "_outcome", "_request")

    def __init__(self, request: Request, now: float) -> None:
        self._request: Request | None = request
        self._now = now
        self._outcome: Outcome | None = None

    def _decided(self) -> Outcome:
        if self._outcome is None:
            assert self._request is not None
            self._outcome, self._request = _one(self._request, self._now), None
        return self._outcome

    def __call__(self) -> tuple[InstanceExplain, ...]:
        return self._decided().explain

    def __getitem__(self, key: InstanceKey) -> str:
        return self._decided().decision.reasons[key]

    def __iter__(self) -> Iterator[InstanceKey]:
        return iter(self._decided().decision.reasons)

    def __len__(self) -> int:
        return len(self._decided().decision.reasons)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self)!r})"


def _decide_block(requests: list[Request], p: Params, now: float) -> list[Outcome | None]:
    """The outcomes of services alike (``weighted``, the same ``p``, the same instance count); None for a
    service the columns cannot decide exactly."""
    memories = [request.memory if request.memory is not None else EMPTY for request in requests]
    services, lists = [request.service for request in requests], [request.candidates for request in requests]
    block = block_of(services, lists, agent_scores=p.use_agent_score)  # a step's rows: their columns as they are
    if block is None:
        block = read(services, lists, agent_scores=p.use_agent_score)
    try:
        scores = vector.scores(block.metrics, block.rtt, block.loss, block.reachable, p)
    except ArithmeticError:  # math.fsum overflowed: decide raises it for the right service
        return [None] * len(requests)
    exclusions = _exclusions(block, scores, memories, p)
    excluded = np.zeros(block.plain.shape, np.bool_)
    soft = np.zeros(block.plain.shape, np.bool_)
    for row, found in exclusions.items():
        for column, exclusion in found:
            excluded[row, column] = True
            soft[row, column] = exclusion.soft
    eligible = ~excluded
    count, idents = block.count, block.idents
    previous = np.fromiter(chain.from_iterable([_aligned(memory.weights, idents[row * count:(row + 1) * count])
                                                for row, memory in enumerate(memories)]),
                           np.float64, len(idents)).reshape(excluded.shape)
    shedding = soft & (previous > 0.0)
    chosen = eligible | shedding
    target, exact = vector.normalised(scores.merit, eligible)
    moved_at = np.array([np.nan if memory.moved_at is None else memory.moved_at for memory in memories],
                        dtype=np.float64)
    stepped = vector.step(previous, target, chosen=chosen, shedding=shedding, capacity=scores.capacity,
                          moved_at=moved_at, now=now, p=p)
    chosen &= ~(shedding & (stepped.weights == 0.0))  # a shedding instance at 0 is simply excluded from now on
    decidable = (block.usable & eligible.any(axis=1) & exact & stepped.exact).tolist()
    return _outcomes(requests, _Columns(block, memories, exclusions, chosen, stepped, decidable), now, p)


def _exclusions(block: Block, scores: vector.Scores, memories: list[ServiceMemory],
                p: Params) -> dict[int, list[tuple[int, Exclusion]]]:
    """The exclusion of every instance that has one, by service row: ``{row: [(column, exclusion)]}``.

    Only the instances the screens cannot clear are checked, by the rules ``assess`` applies.
    """
    screen = scores.screen | ~block.plain | ~block.reachable
    count, idents = block.count, block.idents
    near = np.flatnonzero(scores.near_ceiling & ~screen).tolist()
    limited = [position for position in near if idents[position] in memories[position // count].limited]
    positions = np.flatnonzero(screen).tolist()
    if limited:
        positions = sorted(positions + limited)
    found: dict[int, list[tuple[int, Exclusion]]] = {}
    if not positions:
        return found
    utilisation = scores.utilisation.ravel()[positions].tolist()
    capacity = scores.capacity.ravel()[positions].tolist()
    reported = scores.reported.ravel()[positions].tolist()
    unknown = (scores.unknown_compute.ravel()[positions] * 4 + scores.unknown_network.ravel()[positions] * 2
               + scores.unknown_capacity.ravel()[positions]).tolist()
    agent_overall = scores.agent_overall.ravel()[positions].tolist()
    candidates = block.candidates
    standing = candidates.standing if type(candidates) is Flat else lambda position: Standing.of(candidates[position])
    for position, used, capacity_used, was_reported, lacked, by_agent in zip(
            positions, utilisation, capacity, reported, unknown, agent_overall, strict=True):
        row, column = divmod(position, count)
        exclusion = exclusion_of(
            standing(position), p, utilisation=None if math.isnan(used) else used, unknown=_UNKNOWN[lacked],
            agent_overall=by_agent, reported=capacity_used if was_reported else None,
            limited=idents[position] in memories[row].limited)
        if exclusion is not None:
            found.setdefault(row, []).append((column, exclusion))
    return found


_UNKNOWN = [tuple(name for bit, name in ((4, "compute"), (2, "network"), (1, "capacity")) if code & bit)
            for code in range(8)]
"""The inputs an instance lacked (``Assessment.unknown``), by ``4 * compute + 2 * network + capacity``."""
_NONE_EXCLUDED: Mapping[InstanceKey, str] = MappingProxyType({})


def _aligned(previous: Mapping[Ident, float], idents: list[Ident]) -> Sequence[float]:
    """The previous weight of each of ``idents`` (0 for none), as ``base_weights`` reads them."""
    if type(previous) is KeyedValues:
        return previous.lookup(idents, 0.0)
    if not previous:
        return [0.0] * len(idents)
    get = previous.get
    return [get(ident, 0.0) for ident in idents]


class _Columns(NamedTuple):
    """What :func:`_outcomes` reads of a block's decision."""

    block: Block
    memories: list[ServiceMemory]
    exclusions: dict[int, list[tuple[int, Exclusion]]]
    chosen: vector.Bools
    stepped: vector.Stepped
    decidable: list[bool]


def _outcomes(requests: list[Request], c: _Columns, now: float, p: Params) -> list[Outcome | None]:
    """One :class:`Outcome` per decidable service, as ``decide`` builds it (None for the others)."""
    block, stepped, exclusions = c.block, c.stepped, c.exclusions
    count = block.count
    keys, idents = block.keys, block.idents
    weights = stepped.weights.tolist()
    whole: list[bool] = np.asarray(c.chosen.all(axis=1)).tolist()
    kinds, starting = stepped.kind.tolist(), stepped.starting.tolist()
    gaps, fractions, slew = stepped.gap.tolist(), stepped.fraction.tolist(), stepped.slew_limited.tolist()
    sound: list[bool] = vector.sound_weights(stepped.weights, c.chosen).tolist()  # each row's weights checked
    empty: frozenset[Ident] = frozenset()
    results: list[Outcome | None] = []
    for row, (request, memory, decidable) in enumerate(zip(requests, c.memories, c.decidable, strict=True)):
        if not decidable:
            results.append(None)
            continue
        start = row * count
        row_keys, row_idents, row_weights = keys[start:start + count], idents[start:start + count], weights[row]
        excluded: Mapping[InstanceKey, str] = _NONE_EXCLUDED
        limited = empty
        if whole[row]:
            memory_weights = KeyedValues(row_idents, row_weights)
            decision_weights = KeyedValues(row_keys, row_weights)
        else:
            inside: list[bool] = c.chosen[row].tolist()
            picked = [column for column in range(count) if inside[column]]
            in_weights = [row_weights[column] for column in picked]
            memory_weights = KeyedValues([row_idents[column] for column in picked], in_weights,
                                         wider=(row_idents, row_weights, 0.0))
            decision_weights = KeyedValues([row_keys[column] for column in picked], in_weights,
                                           wider=(row_keys, row_weights, 0.0))  # the others excluded: at 0
        found = exclusions.get(row)
        if found is not None:
            if not whole[row]:
                excluded = {row_keys[column]: exclusion.reason for column, exclusion in found if not inside[column]}
            limited = frozenset([row_idents[column] for column, exclusion in found if exclusion.limit]) or empty
        kind = kinds[row]
        if kind == vector.MOVED:
            moved, settled = True, fractions[row] >= 1.0
            status = SLEW_LIMITED if slew[row] else MOVING if fractions[row] < 1.0 else ARRIVED
            if starting[row]:
                status = f"{STARTED}; {status}"
        else:
            status, moved, settled = _held(kind, starting=starting[row], gap=gaps[row], moved_at=memory.moved_at,
                                           now=now, p=p)
        later = _Later(request, now)
        results.append(Outcome(
            Decision.checked(request.service, decision_weights, sound[row], reasons=later, excluded=excluded),
            ServiceMemory(memory_weights, now if moved else memory.moved_at, memory.incumbent, limited, None),
            later, None, status, converging=not settled))
    return results


def _held(kind: int, *, starting: bool, gap: float, moved_at: float | None, now: float,
          p: Params) -> tuple[str, bool, bool]:
    """``Step.status``, ``Step.moved`` and ``Step.settled`` of a service whose weights the step held, as
    :func:`~dyncast_bgp.engine.stability.step` words and sets them."""
    if kind == vector.HELD_DEADBAND:
        return (STARTED if starting else AT_TARGET if gap == 0.0 else IN_DEADBAND), starting, True
    assert moved_at is not None
    return f"held: dwell ({p.min_dwell - (now - moved_at):.1f} s left)", False, False
