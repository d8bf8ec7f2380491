"""Drain with lead time, completion and per-service constraints (ETSI GS NFV-REL 006 6.2, 6.3.3.3, annex C). Pure.

One :class:`DrainBook` per agent holds a :class:`Drain` record for every instance
an operator asked to drain; instances without a record are *serving*. Phases:

- ``pending``: the drain was accepted and announced to nobody yet: the instance
  keeps taking new flows until ``lead_time`` has passed (REL006 C.1: notify,
  then a lead timer before the resource is impacted, so whoever must prepare
  can). When the lead time ends the constraints are checked again; a drain
  that would now break ``min_available`` (another instance failed meanwhile)
  stays pending, ``blocked`` with the reason, until it no longer would;
- ``draining``: announced with the draining flag: no new flows, existing flows
  run on;
- ``drained``: its live sessions (the ``active_sessions`` metric, read at least
  ``settle`` seconds after draining began) fell to ``threshold`` or below, or
  ``deadline`` seconds passed since draining began, or the drain was ``hard``
  (then at once). The agent adds the drained flag;
  routers evict the flows still pinned to it (REL006 A.4.2: the rest are moved).

Constraints per service (``drain`` in the service's agent config), checked when
a drain is asked for and again when its lead time ends:

- ``max_drained``: instances in a drain phase (pending, draining or drained) at
  once; a drain that would exceed it is refused;
- ``min_available``: instances *available* (announced, healthy, serving and
  not in a drain phase) that must remain; a drain that would leave fewer is
  refused (or, at the end of its lead time, held).

The book knows only the instances of one agent (one site): the constraints
count those. A service-wide constraint needs the count from every site: the
routers see it (every instance's state flags arrive over BGP), so a service-wide
``max_drained`` belongs in a coordinator that reads the routers' RIB (or a
lease in a shared store) before it asks the agents to drain.

Time comes in as ``now``; the facts (which instances exist, are up and how many
sessions they have) come in as a :class:`Fact` snapshot on every call, so the
book never holds a stale copy of them.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class Phase(enum.StrEnum):
    SERVING = "serving"
    PENDING = "pending"
    DRAINING = "draining"
    DRAINED = "drained"


OUT = frozenset({Phase.PENDING, Phase.DRAINING, Phase.DRAINED})  # phases that count against max_drained


@dataclass(frozen=True, slots=True)
class Limits:
    """A service's drain settings (agent config ``services[].drain``)."""

    min_available: int = 0
    max_drained: int | None = None
    deadline: float = 600.0  # seconds from the start of draining to drained, whatever the sessions
    lead_time: float = 0.0
    threshold: float = 0.0  # drained once active_sessions <= threshold
    settle: float = 3.0  # a session count read less than this long after draining began does not end it


@dataclass(frozen=True, slots=True)
class Fact:
    """What the agent knows of one instance now."""

    service: str
    up: bool  # announced and healthy (admin withdrawn, unhealthy or not ready: False)
    sessions: float | None = None  # the active_sessions metric, None when unknown
    sampled_at: float | None = None  # when ``sessions`` was read (None: a value that does not age, e.g. static)


@dataclass(frozen=True, slots=True)
class Drain:
    """One instance's drain record."""

    phase: Phase
    hard: bool
    requested_at: float
    effective_at: float  # when the lead time ends
    deadline: float  # seconds from draining to drained at the latest
    started_at: float | None = None  # when draining began
    settle_at: float | None = None  # from draining on: a session count read before this does not end it
    finished_at: float | None = None
    why: str = ""  # why drained: "sessions", "deadline", "hard"; why blocked while pending
    blocked: str | None = None

    @property
    def deadline_at(self) -> float | None:
        return None if self.started_at is None else self.started_at + self.deadline

    def view(self, now: float) -> dict[str, object]:
        """As ``dyncast ctl instances`` shows it (times relative to ``now``)."""
        def rel(at: float | None) -> float | None:
            return None if at is None else round(at - now, 3)

        return {"phase": str(self.phase), "hard": self.hard, "requested": rel(self.requested_at),
                "effective": rel(self.effective_at), "deadline": rel(self.deadline_at),
                "settles": rel(self.settle_at), "finished": rel(self.finished_at), "why": self.why or None,
                "blocked": self.blocked}


@dataclass(frozen=True, slots=True)
class Transition(Generic[K]):
    """A phase change, with the stable event name it is logged under."""

    key: K
    before: Phase
    after: Phase
    event: str
    why: str
    available: int  # instances of the service available after the change


@dataclass(frozen=True, slots=True)
class Refused:
    reason: str


@dataclass(frozen=True, slots=True)
class Accepted(Generic[K]):
    transitions: tuple[Transition[K], ...]
    changed: bool


EVENTS = {Phase.PENDING: "drain_scheduled", Phase.DRAINING: "drain_started", Phase.DRAINED: "instance_drained",
          Phase.SERVING: "instance_undrained"}


class DrainBook(Generic[K]):
    """The drain records of one agent's instances, keyed by instance id."""

    def __init__(self, limits: Mapping[str, Limits] | None = None) -> None:
        self.limits: dict[str, Limits] = dict(limits or {})
        self._drains: dict[K, Drain] = {}
        self._ticked = -math.inf  # the last tick's time: timers at or before it are done (next_due)

    # ------------------------------------------------------------ reading

    def phase(self, key: K) -> Phase:
        drain = self._drains.get(key)
        return drain.phase if drain is not None else Phase.SERVING

    def get(self, key: K) -> Drain | None:
        return self._drains.get(key)

    def records(self) -> Mapping[K, Drain]:
        return dict(self._drains)

    def limits_for(self, service: str) -> Limits:
        return self.limits.get(service, Limits())

    def available(self, facts: Mapping[K, Fact], service: str, *, without: K | None = None) -> int:
        """Instances of ``service`` up and serving (not in a drain phase), not counting ``without``."""
        return sum(1 for key, fact in facts.items()
                   if fact.service == service and fact.up and key != without and key not in self._drains)

    def out(self, facts: Mapping[K, Fact], service: str) -> list[K]:
        """Instances of ``service`` in a drain phase (what max_drained counts)."""
        return [key for key in self._drains if key in facts and facts[key].service == service]

    def next_due(self) -> float | None:
        """The next time :meth:`tick` has something to do (a lead time, a settle time or a deadline ends)."""
        times = [d.effective_at for d in self._drains.values() if d.phase is Phase.PENDING and d.blocked is None]
        times += [at for d in self._drains.values() if d.phase is Phase.DRAINING and (at := d.deadline_at) is not None]
        times += [at for d in self._drains.values()
                  if d.phase is Phase.DRAINING and (at := d.settle_at) is not None and at > self._ticked]
        return min(times, default=None)

    # ------------------------------------------------------------ requests

    def request(self, key: K, facts: Mapping[K, Fact], now: float, *, hard: bool = False,
                deadline: float | None = None, lead_time: float | None = None) -> Accepted[K] | Refused:
        """Ask to drain ``key``: accepted (with the transitions it caused, perhaps none) or refused with the reason."""
        fact = facts.get(key)
        if fact is None:
            return Refused(f"{key}: unknown instance")
        limits = self.limits_for(fact.service)
        if deadline is not None and not (math.isfinite(deadline) and deadline > 0):
            return Refused(f"deadline must be a positive number of seconds, got {deadline!r}")
        if lead_time is not None and not (math.isfinite(lead_time) and lead_time >= 0):
            return Refused(f"lead time must be a number of seconds >= 0, got {lead_time!r}")
        current = self._drains.get(key)
        if current is not None:
            return self._again(key, current, facts, now, hard=hard)
        out = self.out(facts, fact.service)
        if limits.max_drained is not None and len(out) >= limits.max_drained:
            names = ", ".join(f"{other} ({self._drains[other].phase})" for other in out)
            return Refused(f"max_drained {limits.max_drained} reached for service {fact.service}: {names}; "
                           f"undrain one first")
        left = self.available(facts, fact.service, without=key)
        if left < limits.min_available:
            return Refused(f"draining {key} would leave {left} available instance{'s' if left != 1 else ''} of "
                           f"service {fact.service}, min_available is {limits.min_available}")
        wait = limits.lead_time if lead_time is None else lead_time
        self._drains[key] = Drain(Phase.PENDING, hard, requested_at=now, effective_at=now + wait,
                                  deadline=limits.deadline if deadline is None else deadline)
        first = Transition(key, Phase.SERVING, Phase.PENDING, EVENTS[Phase.PENDING],
                           f"lead time {wait:g}s", self.available(facts, fact.service))
        return Accepted((first, *self._advance(key, facts, now)), changed=True)

    def _again(self, key: K, current: Drain, facts: Mapping[K, Fact], now: float, *, hard: bool) -> Accepted[K]:
        """A drain of an instance already in a drain phase: nothing, or a soft drain made hard."""
        if not hard or current.hard:
            return Accepted((), changed=False)
        self._drains[key] = replace(current, hard=True)
        return Accepted(self._advance(key, facts, now), changed=True)

    def undrain(self, key: K, facts: Mapping[K, Fact]) -> Transition[K] | None:
        """End ``key``'s drain (whatever its phase); None when it had none."""
        current = self._drains.pop(key, None)
        if current is None:
            return None
        fact = facts.get(key)
        service = fact.service if fact is not None else ""
        return Transition(key, current.phase, Phase.SERVING, EVENTS[Phase.SERVING], "undrain",
                          self.available(facts, service))

    def forget(self, key: K) -> None:
        """Drop ``key``'s record without a transition (the instance was withdrawn or removed)."""
        self._drains.pop(key, None)

    # ------------------------------------------------------------ time and facts

    def tick(self, facts: Mapping[K, Fact], now: float) -> list[Transition[K]]:
        """Move every drain as far as ``facts`` and ``now`` allow; records of vanished instances are dropped."""
        for key in [key for key in self._drains if key not in facts]:
            del self._drains[key]
        transitions: list[Transition[K]] = []
        for key in sorted(self._drains, key=str):
            transitions.extend(self._advance(key, facts, now))
        self._ticked = max(self._ticked, now)
        return transitions

    def _advance(self, key: K, facts: Mapping[K, Fact], now: float) -> tuple[Transition[K], ...]:
        drain = self._drains[key]
        fact = facts[key]
        steps: list[Transition[K]] = []
        if drain.phase is Phase.PENDING:
            if now < drain.effective_at:
                return ()
            limits = self.limits_for(fact.service)
            left = self.available(facts, fact.service, without=key)
            if left < limits.min_available:
                reason = (f"would leave {left} available of {fact.service}, min_available is "
                          f"{limits.min_available}")
                if drain.blocked != reason:
                    self._drains[key] = replace(drain, blocked=reason)
                    steps.append(Transition(key, Phase.PENDING, Phase.PENDING, "drain_blocked", reason, left))
                return tuple(steps)
            drain = self._drains[key] = replace(drain, phase=Phase.DRAINING, started_at=now, blocked=None,
                                                settle_at=now + limits.settle)
            steps.append(Transition(key, Phase.PENDING, Phase.DRAINING, EVENTS[Phase.DRAINING],
                                    "hard drain" if drain.hard else "lead time over", left))
        if drain.phase is Phase.DRAINING:
            why = self._done(drain, fact, now)
            if why is not None:
                self._drains[key] = replace(drain, phase=Phase.DRAINED, finished_at=now, why=why)
                steps.append(Transition(key, Phase.DRAINING, Phase.DRAINED, EVENTS[Phase.DRAINED], why,
                                        self.available(facts, fact.service, without=key)))
        return tuple(steps)

    def _settled(self, drain: Drain, fact: Fact, now: float) -> bool:
        """Whether ``fact``'s session count was read ``settle`` seconds or more after draining began. Earlier,
        the draining flag may not have reached every router yet (the agent's re-announce throttle, BGP, the
        router's apply), and a session a router pinned just before may not show in the count yet: ended on such
        a count, the drain would have the routers evict a session that has just begun."""
        read = now if fact.sampled_at is None else fact.sampled_at
        return drain.settle_at is None or read >= drain.settle_at

    def _done(self, drain: Drain, fact: Fact, now: float) -> str | None:
        if drain.hard:
            return "hard"
        limits = self.limits_for(fact.service)
        if fact.sessions is not None and fact.sessions <= limits.threshold and self._settled(drain, fact, now):
            return "sessions"
        deadline_at = drain.deadline_at
        if deadline_at is not None and now >= deadline_at:
            return "deadline"
        return None
