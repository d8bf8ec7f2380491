"""The router's canary rollouts: one per service, their KPI samples, and the state file.

:class:`RolloutBook` holds the :class:`~dyncast_bgp.ops.rollout.Rollout` of every service
under a rollout (finished ones stay until the next start or ``clear``, so a rolled-back
version stays out of new flows). The router calls :meth:`RolloutBook.observe` after every
engine step with each service's latest outcome, turns :meth:`RolloutBook.steer` into the
engine's :class:`~dyncast_bgp.ops.steer.VersionSteer`, and saves the book after every change.

The state file (``router.rollout_state``) is JSON, written to a temporary file in the same
directory, flushed and renamed over the old one (a reader sees the old or the new file,
never half of one)::

    {"format": 1, "written": "2026-11-21T03:10:00Z",
     "rollouts": [{"plan": {...}, "status": "running", "stage": 1, "held": 42.5, ...}]}

A reader takes ``format`` <= its own and ignores fields it does not know; a rollout it cannot
read is logged and skipped, never fatal (the router steers traffic first).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.fileio import write_atomically
from dyncast_bgp.model import InstanceKey, ServiceId
from dyncast_bgp.ops import rollout as machine
from dyncast_bgp.ops.rollout import FORMAT, Plan, Rollout, Sample, Status
from dyncast_bgp.ops.steer import VersionSteer

SERVICE_DELAY = "service_delay"  # microseconds, wire metric 0x07


class StateFileError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Change:
    """A rollout that moved: its state before (None when new) and after, and the events it logged."""

    service: ServiceId
    before: Rollout | None
    after: Rollout

    @property
    def events(self) -> list[tuple[str, str]]:
        known = len(self.before.history) if self.before is not None else 0
        fresh = list(self.after.history[known:]) if len(self.after.history) > known else []
        if not fresh and self.before is not None and self.after.history != self.before.history:
            fresh = [self.after.history[-1]]  # the history was cut at HISTORY: the last one is new
        return fresh

    @property
    def evict(self) -> bool:
        """A hard rollback just happened: evict the flows on the new version."""
        return (self.after.status is Status.ROLLED_BACK and self.after.hard
                and (self.before is None or self.before.status is not Status.ROLLED_BACK))


def sample_of(outcome: Outcome | None, new: Iterable[InstanceKey]) -> Sample:
    """The worst KPIs over the new-version instances in ``outcome`` (no outcome or none of them: an empty sample)."""
    if outcome is None:
        return Sample()
    keys = set(new)
    items = [item for item in outcome.explain if item.key in keys]
    if not items:
        return Sample()
    rtts = [item.path.rtt_mean_us / 1000.0 for item in items if item.path.rtt_mean_us is not None]
    losses = [1.0 if not item.path.reachable else item.path.loss_mean for item in items
              if not item.path.reachable or item.path.loss_mean is not None]
    delays = [value / 1000.0 for item in items if (value := item.metrics.get(SERVICE_DELAY)) is not None]
    metrics: dict[str, float] = {}
    for item in items:
        for name, value in item.metrics.items():
            metrics[name] = max(metrics.get(name, value), value)
    share = sum(weight for key, weight in outcome.decision.weights.items() if key in keys)
    return Sample(instances=len(items), rtt_ms=max(rtts, default=None),
                  loss=max((x for x in losses if x is not None), default=None),
                  service_delay_ms=max(delays, default=None), metrics=metrics, share=share)


class RolloutBook:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.rollouts: dict[ServiceId, Rollout] = {}
        self.samples: dict[ServiceId, Sample] = {}

    # ------------------------------------------------------------ steering

    def steer(self, service: ServiceId) -> VersionSteer | None:
        current = self.rollouts.get(service)
        if current is None or current.share is None:
            return None
        hold = f"rollout rolled back ({current.plan.name or 'version ' + str(current.plan.version)})" \
            if current.status is Status.ROLLED_BACK else None
        return VersionSteer(current.plan.version, current.share, hold,
                            current.plan.clients)

    def active(self) -> list[ServiceId]:
        """Services whose rollout is running or paused (the ones to sample)."""
        return sorted(service for service, r in self.rollouts.items() if not r.finished)

    def next_due(self) -> float | None:
        return min((at for r in self.rollouts.values() if (at := machine.next_due(r)) is not None), default=None)

    # ------------------------------------------------------------ changes

    def observe(self, service: ServiceId, sample: Sample, now: float) -> Change | None:
        before = self.rollouts.get(service)
        if before is None or before.finished:
            return None
        self.samples[service] = sample
        after = machine.observe(before, sample, now)
        self.rollouts[service] = after
        if (after.status, after.stage) != (before.status, before.stage):
            return Change(service, before, after)
        return None

    def start(self, plan: Plan, now: float) -> Change | str:
        current = self.rollouts.get(plan.service)
        if current is not None and not current.finished:
            return (f"a rollout of {plan.service} is {current.status} (stage {current.stage + 1}): abort or "
                    f"commit it first")
        after = machine.start(plan, now)
        self.rollouts[plan.service] = after
        self.samples.pop(plan.service, None)
        return Change(plan.service, None, after)

    def act(self, service: ServiceId, action: str, now: float, *, hard: bool = False) -> Change | str:
        """``pause``, ``resume``, ``abort`` (``hard``), ``commit`` or ``clear`` the rollout of ``service``."""
        before = self.rollouts.get(service)
        if before is None:
            known = ", ".join(str(s) for s in sorted(self.rollouts)) or "none"
            return f"no rollout of {service} (rollouts: {known})"
        if action == "clear":
            if not before.finished:
                return f"rollout of {service} is {before.status}: abort or commit it before clearing it"
            del self.rollouts[service]
            self.samples.pop(service, None)
            return Change(service, before, before)
        if action == "abort":
            result = machine.abort(before, now, hard=hard)
        elif action in ("pause", "resume", "commit"):
            result = {"pause": machine.pause, "resume": machine.resume, "commit": machine.commit}[action](before, now)
        else:
            return f"unknown rollout action {action!r}"
        if isinstance(result, str):
            return result
        self.rollouts[service] = result
        return Change(service, before, result)

    def view(self, service: ServiceId | None = None) -> list[dict[str, Any]]:
        return [machine.view(r, self.samples.get(s)) for s, r in sorted(self.rollouts.items())
                if service is None or s == service]

    # ------------------------------------------------------------ the state file

    def document(self) -> dict[str, Any]:
        return {"format": FORMAT, "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "rollouts": [machine.to_dict(r) for _, r in sorted(self.rollouts.items())]}

    def save(self) -> None:
        """Write the state file atomically (no path: nothing to do). Raises OSError."""
        if self.path is None:
            return
        write_atomically(self.path, json.dumps(self.document(), indent=1, sort_keys=True) + "\n")

    def load(self, now: float) -> list[str]:
        """Read the state file (a missing file is an empty book); the problems found, each skipped."""
        if self.path is None or not self.path.exists():
            return []
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            return [f"{self.path}: unreadable: {exc}"]
        rollouts, problems = read_document(data, now)
        self.rollouts.update(rollouts)
        return [f"{self.path}: {problem}" for problem in problems]


def read_document(data: Any, now: float) -> tuple[dict[ServiceId, Rollout], list[str]]:
    """The rollouts of a state document, and what could not be read."""
    if not isinstance(data, Mapping):
        return {}, ["not a JSON object"]
    version = data.get("format")
    if not isinstance(version, int) or version > FORMAT or version < 1:
        return {}, [f"format {version!r} is not one this version reads (1-{FORMAT})"]
    found: dict[ServiceId, Rollout] = {}
    problems: list[str] = []
    entries = data.get("rollouts")
    for index, entry in enumerate(entries if isinstance(entries, list) else []):
        try:
            restored = machine.from_dict(entry, now)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problems.append(f"rollouts[{index}]: skipped: {type(exc).__name__}: {exc}")
            continue
        found[restored.plan.service] = restored
    return found, problems


