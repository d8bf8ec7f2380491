"""Router-side flap dampening per instance, in the style of RFC 2439. Pure: time is passed in.

A *flap* is an instance coming back: its route announced again after the
instance had vanished from the RIB (withdrawn, or its peer lost without its
paths kept stale), or its overloaded flag cleared after being set. A vanishing
in a peer's restart whose paths were kept stale is not tracked (the RIB's
``Transition.session``). Maintenance is not instability: the
draining flag (an operator's drain, undrain, or a restart while drained) never
counts, and neither does a comeback after vanishing while draining. Each flap adds
``penalty``; the penalty decays exponentially with ``half_life``. When it
exceeds ``suppress`` the instance is held out of the decision
(``flap-damped``) until it has decayed below ``reuse``. The penalty is capped
at ``reuse * 2^(max_suppress / half_life)``, so a hold ends at most
``max_suppress`` seconds after the last flap (RFC 2439 section 4.2's
ceiling). An instance that keeps flapping stays held out; one that does not
flap is never touched.

:class:`FlapState` and its functions are the arithmetic; :class:`FlapTracker`
keeps one state per instance for the engine owner, only for instances that
vanished or raised a flag (a steady instance costs nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from dyncast_bgp.config.schema import FlapDampening
from dyncast_bgp.model import InstanceKey, ServiceId

FORGET_AFTER_HALF_LIVES = 20
"""An entry untouched for this many half-lives (penalty below a millionth of a flap) is dropped."""


@dataclass(frozen=True, slots=True)
class FlapState:
    """The penalty as of time ``at``; ``peak`` is the penalty right after the last flap (shown in reasons)."""

    penalty: float = 0.0
    at: float = 0.0
    suppressed: bool = False
    peak: float = 0.0


def ceiling(params: FlapDampening) -> float:
    return params.reuse * math.pow(2.0, params.max_suppress / params.half_life)


def decayed(state: FlapState, params: FlapDampening, now: float) -> float:
    """The penalty at ``now`` (never grows without a flap; time running backwards decays nothing)."""
    elapsed = now - state.at
    if elapsed <= 0.0 or state.penalty == 0.0:
        return state.penalty
    return state.penalty * math.pow(2.0, -elapsed / params.half_life)


def flap(state: FlapState, params: FlapDampening, now: float) -> FlapState:
    """One flap at ``now``."""
    held = settle(state, params, now).suppressed
    penalty = min(decayed(state, params, now) + params.penalty, ceiling(params))
    return FlapState(penalty, max(now, state.at), held or penalty > params.suppress, penalty)


def settle(state: FlapState, params: FlapDampening, now: float) -> FlapState:
    """The state at ``now`` without a flap: a hold ends once the penalty has decayed to ``reuse``."""
    release = release_at(state, params)
    if release is not None and now >= release:  # the same arithmetic as the time the owner is told
        return replace(state, suppressed=False)
    return state


def release_at(state: FlapState, params: FlapDampening) -> float | None:
    """When a held-out instance's penalty reaches ``reuse`` (None when it is not held out)."""
    if not state.suppressed:
        return None
    if state.penalty <= params.reuse:
        return state.at
    return state.at + params.half_life * math.log2(state.penalty / params.reuse)


@dataclass(slots=True)
class _Entry:
    state: FlapState = field(default_factory=FlapState)
    gone: bool = False
    flagged: bool = False
    maintenance: bool = False  # last seen with the draining flag: a vanishing now is a planned restart
    touched: float = 0.0  # the last event (flap, vanishing, flag raised)


class FlapTracker:
    """Flap states of the instances that vanished or raised a flag (the others are stable by definition).

    An instance is *watched* while its entry is flagged, draining or held out: only then can seeing it
    without any flag change its state (a cleared flag is a flap, an end of maintenance is noted, a hold may
    end). The router observes the flagged instances of a service and its watched ones; an entry that is none
    of these (an instance that flapped or vanished and is steady again) is left alone until it next changes,
    though its penalty is kept for the next flap."""

    def __init__(self) -> None:
        self._entries: dict[InstanceKey, _Entry] = {}
        self._watched: dict[ServiceId, set[InstanceKey]] = {}  # the watched keys by service: most have none
        self.flaps = 0

    def __len__(self) -> int:
        return len(self._entries)

    def watches(self, service: ServiceId) -> bool:
        """Whether some instance of ``service`` is watched (cheap: no per-instance lookup)."""
        return service in self._watched

    def watched_of(self, service: ServiceId) -> frozenset[InstanceKey]:
        """The watched instances of ``service`` (usually none or a few)."""
        return frozenset(self._watched.get(service, ()))

    def _entry(self, key: InstanceKey) -> _Entry:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        return entry

    def _refile(self, key: InstanceKey, entry: _Entry, was: bool) -> None:
        """File ``key`` under its service's watched keys, or take it out, when its entry changed from ``was``
        (watched before) to watched or not."""
        now = _watched(entry)
        if now == was:
            return
        keys = self._watched.get(key.service)
        if now:
            if keys is None:
                self._watched[key.service] = {key}
            else:
                keys.add(key)
        elif keys is not None:
            keys.discard(key)
            if not keys:
                del self._watched[key.service]

    def known(self, key: InstanceKey) -> bool:
        """Whether the instance has a flap state (vanished, raised a flag or flapped, not yet forgotten)."""
        return key in self._entries

    def vanished(self, key: InstanceKey, now: float) -> None:
        """The instance has no path left."""
        entry = self._entry(key)
        entry.gone = True
        entry.touched = now

    def appeared(self, key: InstanceKey, params: FlapDampening, now: float) -> None:
        """The instance has a path again: a flap if it had vanished (not on its first appearance)."""
        entry = self._entries.get(key)
        if entry is None or not entry.gone:
            return
        entry.gone = False
        if entry.maintenance:
            entry.touched = now
            return
        was = _watched(entry)
        self._flap(entry, params, now)
        self._refile(key, entry, was)

    def draining(self, key: InstanceKey, draining: bool, now: float) -> None:
        """The instance's draining flag as seen now (maintenance: its coming and going is not a flap)."""
        entry = self._entries.get(key)
        if entry is None:
            if not draining:
                return
            entry = self._entry(key)
        was = _watched(entry)
        _see_draining(entry, draining, now)
        self._refile(key, entry, was)

    def flags(self, key: InstanceKey, raised: bool, params: FlapDampening, now: float) -> None:
        """The instance's overloaded flag as seen now: clearing a raised one is a flap."""
        entry = self._entries.get(key)
        if entry is None:
            if not raised:
                return
            entry = self._entry(key)
        was = _watched(entry)
        self._see_flag(entry, raised, params, now)
        self._refile(key, entry, was)

    def observe(self, key: InstanceKey, raised: bool, draining: bool, params: FlapDampening,
                now: float) -> FlapState | None:
        """:meth:`draining`, :meth:`flags` and :meth:`held` of one instance seen now, with one lookup of its
        entry (the key hashes in Python): the state it is held out in, or None."""
        entry = self._entries.get(key)
        if entry is None:
            if not raised and not draining:
                return None  # a steady instance: no state, nothing to do
            entry = self._entry(key)
        was = _watched(entry)
        _see_draining(entry, draining, now)
        self._see_flag(entry, raised, params, now)
        held = _held(entry, params, now)
        self._refile(key, entry, was)
        return held

    def _see_flag(self, entry: _Entry, raised: bool, params: FlapDampening, now: float) -> None:
        if entry.flagged and not raised:
            self._flap(entry, params, now)
        elif raised and not entry.flagged:
            entry.touched = now
        entry.flagged = raised

    def _flap(self, entry: _Entry, params: FlapDampening, now: float) -> None:
        self.flaps += 1
        entry.state = flap(entry.state, params, now)
        entry.touched = now

    def held(self, key: InstanceKey, params: FlapDampening, now: float) -> FlapState | None:
        """The state of an instance held out at ``now`` (None when it may be used)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        was = _watched(entry)
        held = _held(entry, params, now)
        self._refile(key, entry, was)
        return held

    def penalty(self, key: InstanceKey, params: FlapDampening, now: float) -> float:
        entry = self._entries.get(key)
        return decayed(entry.state, params, now) if entry is not None else 0.0

    def release_at(self, key: InstanceKey, params: FlapDampening) -> float | None:
        entry = self._entries.get(key)
        return release_at(entry.state, params) if entry is not None else None

    def forget(self, now: float, half_life: Callable[[InstanceKey], float], *, shortest: float = 0.0) -> int:
        """Drop the entries untouched for :data:`FORGET_AFTER_HALF_LIVES` half-lives; return how many.

        Such an instance's penalty is negligible; if it vanished that long ago and comes back, its return
        is not counted as a flap (an instance back after several minutes is not flapping). ``shortest``: no
        ``half_life`` is below it, so an entry touched since that many half-lives of it is kept without asking
        (most are: a sweep of 22,000 entries took 27 ms asking each, in bench_engine.py)."""
        recent = now - FORGET_AFTER_HALF_LIVES * shortest
        drop = [key for key, entry in self._entries.items()
                if entry.touched < recent and not _watched(entry)
                and now - entry.touched > FORGET_AFTER_HALF_LIVES * half_life(key)]
        for key in drop:
            del self._entries[key]  # not watched: filed nowhere else
        return len(drop)

    def check_invariants(self) -> None:
        """Raise AssertionError if the watched keys are not exactly the watched entries' (for tests)."""
        expected: dict[ServiceId, set[InstanceKey]] = {}
        for key, entry in self._entries.items():
            if _watched(entry):
                expected.setdefault(key.service, set()).add(key)
        assert expected == self._watched, "watched keys out of sync with the entries"


def _watched(entry: _Entry) -> bool:
    """Whether seeing the instance without any flag can change ``entry`` (see :class:`FlapTracker`)."""
    return entry.flagged or entry.maintenance or entry.state.suppressed


def _see_draining(entry: _Entry, draining: bool, now: float) -> None:
    if draining != entry.maintenance:
        entry.maintenance = draining
        entry.touched = now


def _held(entry: _Entry, params: FlapDampening, now: float) -> FlapState | None:
    """The state ``entry`` is held out in at ``now`` (settled first), or None."""
    if not entry.state.suppressed:
        return None
    entry.state = settle(entry.state, params, now)
    return entry.state if entry.state.suppressed else None
