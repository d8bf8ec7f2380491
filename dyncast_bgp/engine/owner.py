"""The router's state, owned by one task: RIB, path metrics, per-service memory and decisions.

Inputs arrive as calls (ExaBGP events, path metrics); ``step(now)`` recomputes
the services whose inputs changed, plus those still converging (a weight held
by the slew limit or dwell, a fallback grace running), and returns the
outcomes whose decision changed. ``desired()`` is the whole dataplane state
for the current decisions. No I/O; time comes in as ``now``.

An instance that disappears from the RIB (withdrawn, its peer gone) stays in
the desired state with weight 0 for its service's ``affinity_timeout``, so the
flows already pinned to it keep their route (soft removal, ETSI GS NFV-REL 006
clause 6.2); new flows go elsewhere at once.

Hardening (docs/hardening.md): the RIB applies the neighbours' trust rules
(``router.trust``); instances that flap are held out by the service's
``flap_dampening`` (:mod:`~dyncast_bgp.engine.flap`), excluded with the
reason ``flap-damped (penalty P)`` until their penalty has decayed.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from dyncast_bgp.config.schema import RouterConfig, ServicePolicy
from dyncast_bgp.dataplane.desired import Affinity, Audience, DesiredState, Forwarding, InstanceTarget, ServiceTarget
from dyncast_bgp.deferred import Deferred
from dyncast_bgp.engine.batch import MIN_BATCH, Request, decide_many
from dyncast_bgp.engine.candidate import Candidate, ident_of
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.eligibility import flap_damped
from dyncast_bgp.engine.flap import FlapTracker
from dyncast_bgp.engine.memo import IdentityMemo
from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.engine.rows import CandidateRows
from dyncast_bgp.engine.trust import TrustPolicy
from dyncast_bgp.engine.views import KeyedValues
from dyncast_bgp.model import Decision, InstanceKey, IPAddress, PathMetrics, ServiceId, StateFlag, by_order, by_sort_key
from dyncast_bgp.ops.steer import RESET as STEER_RESET
from dyncast_bgp.ops.steer import VersionSteer, steer_candidates, without_new_version
from dyncast_bgp.router.forwarding import forwarding_for
from dyncast_bgp.wire.exabgp_json import Event

REVIEW_INTERVAL = 1.0  # seconds between re-evaluations of a service that is still converging
MEMO_LIMIT = 1 << 16  # D-BIDs whose path and forwarding are remembered (RouterEngine.path_of, _forwarding)
_NO_PATH = PathMetrics()
STEP_BLOCK = 1024
"""Dirty services decided in one batch (``decide_many``). A step over more decides block by block, recording
each block's outcomes before preparing the next, so the block's working state (its batch columns) goes
as the step goes and, without a ``deferred`` release, the outcomes it replaces too (with the candidate rows
their explanations read), instead of two whole sets being alive at its end. At 10,000 services x 16 instances
that was the difference between 530 and about 400 MiB resident (the allocator keeps the peak's memory); the
batch's arrays are as efficient from about a thousand services on."""
ROWS_MIN = MIN_BATCH
"""A step's block of at least this many services reads its candidates as rows (see RouterEngine._candidates)."""
FORGET_INTERVAL = 60.0  # seconds between sweeps of flap states that carry no information any more
_V = TypeVar("_V")
_NO_FLAG = StateFlag.NONE  # a flag set is its enum's one member for its value: compared by identity
_RAISED = StateFlag.OVERLOADED.value  # the flag whose clearing counts as a flap (draining is maintenance)
_DRAINING = StateFlag.DRAINING.value


@dataclass(slots=True)
class _Service:
    policy: ServicePolicy
    outcome: Outcome | None = None
    bindings: frozenset[IPAddress] = frozenset()
    listed: tuple[IPAddress, ...] = ()  # the candidates' D-BIDs in order, as last indexed (see _index)
    lingering: dict[InstanceKey, float] = field(default_factory=dict)  # key -> until
    target: ServiceTarget | None = None  # the dataplane target built from ``outcome``, reused until it changes
    layout: _Layout | None = None  # the target's instances in order with their forwarding, as last built


@dataclass(slots=True)
class _Layout:
    """A service target's instances as last built: ``listed`` (the keys in the order the weights listed them),
    ``keys`` (sorted, as the target lists them) and the forwarding of each. The same keys listed the same way
    the next time (the usual new decision: new weights, the same instances) reuse the order and forwardings."""

    listed: list[InstanceKey]
    keys: list[InstanceKey]
    forwardings: list[Forwarding]
    built: ServiceTarget | None = None  # the last target built over ``keys`` (see ServiceTarget.reweighted)


@dataclass(slots=True)
class _Pending:
    """A dirty service between :meth:`RouterEngine._prepare` and :meth:`RouterEngine._record`."""

    service: ServiceId
    entry: _Service
    request: Request
    release: float | None  # when a flap-damped instance is readmitted
    steered: bool
    regrouped: bool = False  # a client-prefix canary's new-version instances changed (the target changes)


class RouterEngine:
    def __init__(self, config: RouterConfig, *, stale_time: float = 0.0,
                 static_paths: Callable[[IPAddress], PathMetrics] | None = None,
                 deferred: Deferred | None = None) -> None:
        """``deferred``: where each replaced outcome is held for a later release (:mod:`dyncast_bgp.deferred`);
        None frees it where it is replaced."""
        self.config = config
        self._deferred = deferred
        self._shortest_half_life = min([config.defaults.flap_dampening.half_life] + [
            policy.flap_dampening.half_life for policy in config.services.values()
            if "flap_dampening" in policy.model_fields_set])  # of every service's flap dampening (flaps.forget)
        self.rib = Rib(stale_time=stale_time, trust=TrustPolicy.from_config(config.trust), track_instances=True)
        self.flaps = FlapTracker()
        self._forget_at = 0.0
        self._static = static_paths
        self._paths: dict[IPAddress, PathMetrics] = {}
        self._services: dict[ServiceId, _Service] = {}
        self._by_binding: dict[IPAddress, set[ServiceId]] = {}
        self._dirty: set[ServiceId] = set()
        self._review_at: dict[ServiceId, float] = {}
        self.decisions_changed = 0
        self.decided = 0  # services the last step decided (changed or not)
        self._steers: dict[ServiceId, VersionSteer] = {}  # canary rollouts (ops/rollout.py, ops/steer.py)
        self.new_version: dict[ServiceId, frozenset[InstanceKey]] = {}  # per steered service: its new instances
        self._forwardings: IdentityMemo[IPAddress, Forwarding] = IdentityMemo(MEMO_LIMIT)  # see _forwarding
        self._path_memo: IdentityMemo[IPAddress, PathMetrics] = IdentityMemo(MEMO_LIMIT)  # see path_of
        self._cursor: int | None = None  # where the last limited step stopped (see _slice)
        self._queue: list[ServiceId] = []  # the round of limited steps under way, in order (see _slice)
        self._queued = 0  # how far into it
        self._next_review = math.inf  # no review in _review_at is earlier (see _review)
        self._next_linger = math.inf  # no lingering instance of any service ends earlier, but those of dirty
        # services (see _lingering_over)

    def set_steer(self, service: ServiceId, steer: VersionSteer | None) -> None:
        """Bound (or hold out) the new version of ``service`` in its next decisions; None: no rollout."""
        if self._steers.get(service) == steer:
            return
        if steer is None:
            self._steers.pop(service, None)
            self.new_version.pop(service, None)
        else:
            self._steers[service] = steer
        if (entry := self._services.get(service)) is not None:
            entry.target = None  # a client-prefix canary's audience may come or go with the same decision
        self._dirty.add(service)

    # ------------------------------------------------------------ inputs

    def on_event(self, event: Event, now: float) -> None:
        self._dirty |= self.rib.apply(event, now)
        if self.rib.transitions:
            self._track_flaps(now)

    def _track_flaps(self, now: float) -> None:
        """Instances that vanished or came back (a comeback after a vanishing is a flap). A vanishing that a
        peer's restart caused (``Transition.session``) is not the instance's: not tracked, so its comeback is
        no flap (a route reflector's restart made every instance "flap" at every ingress)."""
        for service, binding, present, session in self.rib.take_transitions():
            key = InstanceKey(service, binding)
            if not present:
                if not session:
                    self.flaps.vanished(key, now)
            elif self.flaps.known(key):
                params = self._policy(service).flap_dampening
                if params.enabled:
                    self.flaps.appeared(key, params, now)

    def _policy(self, service: ServiceId) -> ServicePolicy:
        entry = self._services.get(service)
        return entry.policy if entry is not None else self.config.policy_for(service)

    def on_path(self, binding: IPAddress, metrics: PathMetrics) -> None:
        if self._paths.get(binding) == metrics:
            return
        self._paths[binding] = metrics
        self._path_memo.clear()
        self._dirty |= self._by_binding.get(binding, set())

    def path_of(self, binding: IPAddress) -> PathMetrics:
        """The measured path to ``binding``, else its static value, else nothing known; remembered by the
        object's identity (:mod:`~dyncast_bgp.engine.memo`) until a measurement changes."""
        return self._path_memo.get(binding, self._path_now)

    def _path_now(self, binding: IPAddress) -> PathMetrics:
        measured = self._paths.get(binding)
        if measured is not None:
            return measured
        return self._static(binding) if self._static is not None else _NO_PATH

    # ------------------------------------------------------------ decisions

    def next_due(self) -> float | None:
        times = list(self._review_at.values())
        expiry = self.rib.next_expiry()
        if expiry is not None:
            times.append(expiry)
        times.extend(until for entry in self._services.values() for until in entry.lingering.values())
        return min(times) if times else None

    @property
    def pending(self) -> int:
        """Services waiting to be decided (the rest of a step given a ``limit``, or inputs since the last step)."""
        return len(self._dirty)

    def step(self, now: float, *, limit: int | None = None, first: Iterable[ServiceId] = ()) -> list[Outcome]:
        """Recompute what needs it; return the outcomes whose decision changed.

        ``limit``: decide at most that many services now and leave the others :attr:`pending` for the next
        calls. The router goes through a full recompute a slice at a time so that its other tasks (ExaBGP
        input, probes, the control socket) run in between. Slices go round the services in service order from
        where the last one stopped, so a service dirtied again (a review, new metrics) waits its turn behind
        those not decided yet instead of going first. ``first``: dirty services decided in this call before
        any other (within the limit), e.g. the one a rollout just moved.
        """
        if limit is not None and limit < 1:
            raise ValueError(f"step limit must be at least 1 service, not {limit}")
        self._dirty |= self.rib.expire(now)
        if self.rib.transitions:
            self._track_flaps(now)
        if now >= self._forget_at:
            self._forget_at = now + FORGET_INTERVAL
            self.flaps.forget(now, lambda key: self._policy(key.service).flap_dampening.half_life,
                              shortest=self._shortest_half_life)
        if now >= self._next_review:  # else none is due: a step in slices looks once, not in every slice
            self._dirty.update(self._due_reviews(now))
        if now >= self._next_linger:
            self._dirty.update(self._lingering_over(now))
        dirty = self._slice(limit, first)
        self.decided = len(dirty)
        changed: list[Outcome] = []
        for start in range(0, len(dirty), STEP_BLOCK):  # see STEP_BLOCK: a block's old outcomes go before the next
            block = dirty[start:start + STEP_BLOCK]
            lists = self._candidates(block, now)
            pending = [item for service, candidates in zip(block, lists, strict=True)
                       if (item := self._prepare(service, candidates, now)) is not None]
            outcomes = decide_many([item.request for item in pending], now)
            for item, outcome in zip(pending, outcomes, strict=True):
                if self._record(item, outcome, now):
                    changed.append(outcome)
            self._dirty.difference_update(block)
        self.decisions_changed += len(changed)
        return changed

    def _slice(self, limit: int | None, first: Iterable[ServiceId]) -> list[ServiceId]:
        """The dirty services to decide now (see :meth:`step`), in the order to decide them.

        A round of limited steps is sorted once, when it starts (from the cursor on, then round from the start),
        and each slice takes the next services of it still dirty: sorting what is left at every slice made a
        full recompute in slices quadratic (10,000 services in slices of 1,024: 67-103 ms of sorting). A service
        dirty but not in the round (new since it started) comes in the next round, in order again."""
        dirty = self._dirty
        if limit is None or len(dirty) <= limit:
            self._cursor, self._queue, self._queued = None, [], 0
            return sorted(dirty, key=by_order)
        chosen = [service for service in first if service in dirty][:limit]
        taken = set(chosen)
        ahead: list[ServiceId] = []
        wanted = limit - len(chosen)
        while len(ahead) < wanted:
            if self._queued >= len(self._queue):  # a new round: what is dirty now, from the cursor on
                rest = dirty.difference(taken, ahead)
                if not rest:
                    break
                # one sort in C (the key read in C too), rotated to start after the cursor
                ordered = sorted(rest, key=by_order)
                start = 0 if self._cursor is None else bisect.bisect_right(ordered, self._cursor, key=by_order)
                self._queue = ordered[start:] + ordered[:start]
                self._queued = 0
            queue, at = self._queue, self._queued
            while at < len(queue) and len(ahead) < wanted:
                service = queue[at]
                at += 1
                if service in dirty and service not in taken:  # else: decided since (first), or gone
                    ahead.append(service)
            self._queued = at
        if ahead:
            self._cursor = ahead[-1].order
        return chosen + ahead

    def _candidates(self, services: list[ServiceId], now: float) -> Sequence[Sequence[Candidate]]:
        """The RIB's candidates of each of ``services``: as rows of one batch (decoded as columns, objects made
        only when read: :mod:`~dyncast_bgp.engine.rows`) for a block of at least :data:`ROWS_MIN` services (the
        size from which the batch decision takes columns too); else lists, as a small step reads them faster."""
        max_age = self.config.metrics_max_age
        if len(services) >= ROWS_MIN:
            return self.rib.rows(services, now, path_of=self.path_of, max_age=max_age)
        return [self.rib.candidates(service, now, path_of=self.path_of, max_age=max_age) for service in services]

    def _prepare(self, service: ServiceId, candidates: Sequence[Candidate], now: float) -> _Pending | None:
        """The decision request of one dirty service (its candidates, flap holds, canary caps); None when the
        service is gone for good (no candidates, never decided)."""
        entry = self._services.get(service)
        if entry is None:
            entry = self._services[service] = _Service(self.config.policy_for(service))
        release: float | None = None
        if entry.policy.flap_dampening.enabled and (type(candidates) is not CandidateRows or candidates.flagged()
                                                    or self.flaps.watches(service)):  # rows: else nothing to see
            candidates, release = self._damp(entry.policy, candidates, now)
        caps = None
        regrouped = False
        if (steer := self._steers.get(service)) is not None:
            previous_weights = entry.outcome.decision.weights if entry.outcome is not None else None
            before = self.new_version.get(service)
            candidates, caps, self.new_version[service] = steer_candidates(list(candidates), steer, previous_weights)
            # a client-prefix canary's split for everyone else leaves the new version out: an instance that
            # changed version with the same weight changes the dataplane target, not the decision
            regrouped = bool(steer.clients) and before != self.new_version[service]
        self._index(service, entry, candidates.bindings if type(candidates) is CandidateRows
                    else tuple([c.key.binding for c in candidates]))
        previous = entry.outcome
        if not candidates and previous is None:
            del self._services[service]
            return None
        request = Request(service, candidates, entry.policy, previous.memory if previous else None, caps)
        return _Pending(service, entry, request, release, steered=steer is not None, regrouped=regrouped)

    def _record(self, pending: _Pending, outcome: Outcome, now: float) -> bool:
        """Keep ``outcome`` for its service (lingering instances, reviews); whether its decision changed."""
        service, entry, release = pending.service, pending.entry, pending.release
        candidates = pending.request.candidates
        previous = entry.outcome
        keys = candidates.keys if type(candidates) is CandidateRows else [c.key for c in candidates]
        present: set[InstanceKey] | None = None  # made when needed: InstanceKey hashes in Python
        same = previous is not None and _same(previous.decision, outcome.decision)
        if previous is not None and _laid_out(previous.decision, keys) is None:  # else: every one still here
            for shown in (previous.decision.weights, previous.decision.excluded):
                if not shown or (type(shown) is KeyedValues and shown.aligned(keys) is not None):
                    continue  # the instances present now, in the same order (compared in C): none gone
                if present is None:
                    present = set(keys)
                for key in shown:
                    if key not in present and key not in entry.lingering:
                        entry.lingering[key] = until = now + entry.policy.affinity_timeout
                        self._next_linger = min(self._next_linger, until)
        if entry.lingering:
            present = set(keys) if present is None else present
            lingering = {key: until for key, until in entry.lingering.items() if until > now and key not in present}
        else:
            lingering = entry.lingering
        if lingering.keys() != entry.lingering.keys() or not same:
            entry.target = None  # rebuilt on the next desired(); unchanged services pass the same object
        entry.lingering = lingering
        entry.outcome = outcome
        if previous is not None and self._deferred is not None:
            self._deferred.hold(previous)  # freed after the recompute, not inside it
        self._schedule_review(service, outcome, now)
        if pending.steered and any(c.hold is not None and c.hold.reason == STEER_RESET for c in candidates):
            self._review(service, now + REVIEW_INTERVAL)  # readmit the new version, below its cap
        if release is not None:  # a flap-damped instance is readmitted then
            self._review(service, min(self._review_at.get(service, release), release))
        if pending.regrouped:
            entry.target = None
        elif same:
            return False
        if not candidates and not entry.lingering:
            del self._services[service]
            self._review_at.pop(service, None)
        return True

    def _damp(self, policy: ServicePolicy, candidates: Sequence[Candidate], now: float
              ) -> tuple[Sequence[Candidate], float | None]:
        """Track the flags of ``candidates`` and hold out the flap-damped ones; the earliest readmission.

        Rows (:class:`~dyncast_bgp.engine.rows.CandidateRows`) are held out in place and only their flagged
        and watched instances read (``FlapTracker.watches``), without building a candidate."""
        params, flaps = policy.flap_dampening, self.flaps
        release: float | None = None
        result: list[Candidate] | None = None
        rows = candidates if type(candidates) is CandidateRows else None
        looked: Iterable[tuple[int, InstanceKey, int]]
        if rows is not None:
            watched = flaps.watches(rows.service)
            flagged = rows.flagged()
            if watched:  # the flagged instances and the watched ones (a flag just cleared, say), found by
                idents = rows.idents  # ident: an int compares in C, where a key's equality runs Python code
                seen = {index for index, _ in flagged}
                found = [(index, 0) for ident in map(ident_of, flaps.watched_of(rows.service))  # not flagged: none
                         if ident in idents and (index := idents.index(ident)) not in seen]
                if found:
                    flagged = sorted(flagged + found)
            keys = rows.keys
            looked = [(index, keys[index], value) for index, value in flagged]
        else:
            watched = bool(candidates) and flaps.watches(candidates[0].key.service)
            looked = ((index, candidate.key, 0 if (flags := candidate.metrics.flags) is _NO_FLAG else flags.value)
                      for index, candidate in enumerate(candidates))  # the enum's value read only when flagged
        for index, key, value in looked:
            raised = bool(value & _RAISED)  # the flags' value: int arithmetic, in C
            draining = bool(value & _DRAINING)
            if not raised and not draining and not watched:
                continue  # the usual case: a steady instance of a service without flap state
            held = flaps.observe(key, raised, draining, params, now)
            if held is None:
                continue
            if rows is not None:
                rows.hold(index, flap_damped(held.peak))
            else:
                if result is None:
                    result = list(candidates)
                result[index] = replace(candidates[index], hold=flap_damped(held.peak))
            at = flaps.release_at(key, params)
            if at is not None:
                release = at if release is None else min(release, at)
        return (result if result is not None else candidates), release

    def _index(self, service: ServiceId, entry: _Service, listed: tuple[IPAddress, ...]) -> None:
        """File ``service`` under each of its D-BIDs (``listed``: its candidates' D-BIDs, in order). The same
        D-BIDs in the same order as last time (the usual step) cost one comparison, identity first."""
        if listed == entry.listed:
            return
        entry.listed = listed
        bindings = frozenset(listed)
        for gone in entry.bindings - bindings:
            services = self._by_binding.get(gone)
            if services is not None:
                services.discard(service)
                if not services:
                    del self._by_binding[gone]
        for new in bindings - entry.bindings:
            self._by_binding.setdefault(new, set()).add(service)
        entry.bindings = bindings

    def _schedule_review(self, service: ServiceId, outcome: Outcome, now: float) -> None:
        if outcome.fallback == "grace" or outcome.converging:
            self._review(service, now + REVIEW_INTERVAL)
        else:
            self._review_at.pop(service, None)

    def _review(self, service: ServiceId, at: float) -> None:
        """Decide ``service`` again at ``at`` (a step at or after it makes it dirty)."""
        self._review_at[service] = at
        self._next_review = min(self._next_review, at)

    def _due_reviews(self, now: float) -> list[ServiceId]:
        """The services whose review is due, taken out of the reviews (dirty now, they are rescheduled when
        decided); the next review time kept for the steps until then."""
        due = [service for service, at in self._review_at.items() if at <= now]
        for service in due:
            del self._review_at[service]
        self._next_review = min(self._review_at.values(), default=math.inf)
        return due

    def _lingering_over(self, now: float) -> list[ServiceId]:
        """The services with a lingering instance whose time is up (their next decision drops it); the next
        such time among the others kept for the steps until then."""
        over: list[ServiceId] = []
        upcoming = math.inf
        for service, entry in self._services.items():
            if entry.lingering:
                ended = False
                for until in entry.lingering.values():
                    if until <= now:
                        ended = True
                    elif until < upcoming:
                        upcoming = until  # an instance lingering on after its decision drops the ended ones
                if ended:
                    over.append(service)
        self._next_linger = upcoming
        return over

    # ------------------------------------------------------------ outputs

    def bindings(self) -> frozenset[IPAddress]:
        """Every D-BID some service currently has a path to (what the probes should measure)."""
        return frozenset(self._by_binding)

    def outcome(self, service: ServiceId) -> Outcome | None:
        entry = self._services.get(service)
        return entry.outcome if entry else None

    def outcomes(self) -> Iterable[Outcome]:
        return (entry.outcome for entry in self._services.values() if entry.outcome is not None)

    def desired(self) -> DesiredState:
        targets = []
        for service, entry in self._services.items():
            if entry.target is None:
                entry.target = self._target(service, entry)
            if entry.target is not None:
                targets.append(entry.target)
        return DesiredState.of(targets)

    def _target(self, service: ServiceId, entry: _Service) -> ServiceTarget | None:
        if entry.outcome is None:
            return None
        decision = entry.outcome.decision
        steer = self._steers.get(service)
        layout = entry.layout
        if layout is not None and layout.built is not None and not entry.lingering and steer is None:
            values = _laid_out(decision, layout.keys)  # the usual new decision: new weights, nothing else new
            if values is not None:
                policy, built = entry.policy, layout.built
                affinity = built.affinity if built.affinity == policy.affinity else Affinity(policy.affinity)
                layout.built = ServiceTarget.reweighted(built, values, affinity, policy.affinity_timeout)
                return layout.built
        weights = dict.fromkeys(entry.lingering, 0.0)
        weights.update(dict.fromkeys(decision.excluded, 0.0))
        weights.update(decision.weights.items())  # pairs: a Mapping would be read key by key
        if not weights:
            return None
        audience = None
        if steer is not None and steer.clients and steer.hold is None:  # a client-prefix canary
            audience = Audience(steer.clients, dict(decision.weights))
            weights.update(without_new_version(decision.weights, self.new_version.get(service, frozenset())))
        listed = list(weights)
        if layout is None or layout.listed != listed:  # compared identity first, in C: the keys are the RIB's
            keys = sorted(listed, key=by_sort_key)
            forwarding = self._forwarding
            layout = entry.layout = _Layout(listed, keys, [forwarding(key.binding) for key in keys])
        keys = layout.keys
        layout.built = ServiceTarget(
            service, tuple(map(InstanceTarget, keys, map(weights.__getitem__, keys), layout.forwardings)),
            Affinity(entry.policy.affinity), entry.policy.affinity_timeout, audience)
        return layout.built

    def _forwarding(self, binding: IPAddress) -> Forwarding:
        """The first forwarding rule's way to ``binding``, remembered by the object's identity (the rules are
        fixed for the engine's life)."""
        return self._forwardings.get(binding, self._forwarding_now)

    def _forwarding_now(self, binding: IPAddress) -> Forwarding:
        return forwarding_for(binding, self.config.forwarding)


def _laid_out(decision: Decision, keys: Sequence[InstanceKey]) -> Sequence[float] | None:
    """The weights of ``decision`` over exactly ``keys``, in order, when ``keys`` are every instance it decided
    (weighted or excluded, the excluded at 0); else None. Found by comparing sequences (identity first, in C),
    no key hashed: ``keys`` are the weights' own, or the layout over every instance decided that the batch
    decision gives them (``KeyedValues`` ``wider``), which lists the weighted and the excluded instances."""
    weights = decision.weights
    if type(weights) is not KeyedValues:
        return None
    values = weights.spread(keys, 0.0)
    return values if values is not None and len(values) == len(weights) + len(decision.excluded) else None


def _same(a: Decision, b: Decision) -> bool:
    """The same weights and exclusions (reasons compared, order not)."""
    return _equal(a.weights, b.weights) and _equal(a.excluded, b.excluded)


def _equal(a: Mapping[InstanceKey, _V], b: Mapping[InstanceKey, _V]) -> bool:
    if type(a) is KeyedValues:
        return a.same_as(b)
    return len(a) == len(b) and dict(a) == dict(b)


def decision_line(decision: Decision) -> dict[str, object]:
    """The replay / audit form: ``{"service", "weights": {D-BID: w}, "excluded": {D-BID: reason}}``."""
    return {"service": str(decision.service),
            "weights": {str(key.binding): round(weight, 6) for key, weight in sorted(decision.weights.items())},
            "excluded": {str(key.binding): reason for key, reason in sorted(decision.excluded.items())}}
