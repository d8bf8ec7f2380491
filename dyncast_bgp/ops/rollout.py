"""Canary rollout of a new service version at the router (ETSI GS NFV-REL 006 6.3.1.1, 6.4). Pure.

A :class:`Plan` names a service, the ``version`` tag its new instances announce (wire metric
0x31) and stages: the share of the service's *new* flows the new-version instances may take
at most, and how long each stage is held while KPIs toward the new instances are watched.
Old and new versions serve side by side; only new flows are steered (flows already pinned
stay where they are, REL006 6.3.1.1(4)).

States: ``running`` (at a stage, its hold counting), ``paused`` (the stage's share stays, the
hold does not count, KPIs are still watched), ``rolled-back`` (a KPI breach or ``abort``:
the new-version instances get no new flows; with ``hard`` the router also evicts the flows
already on them), ``committed`` (no steering any more: the new version is ordinary).

A stage ends when its hold has passed and at least one KPI sample of a new-version instance
was seen during it; the next stage follows. After the last stage the rollout waits for
``commit`` (or commits itself with ``auto_commit``). ``commit`` is accepted only at the last
stage; ``abort`` and a breach always end in ``rolled-back``; both are final (start a new
rollout to try again).

Time comes in as ``now`` (any monotonic clock); :func:`to_dict` / :func:`from_dict` keep
durations, not times, so a rollout persisted by one process continues in the next (the time
the router was down is not counted as watched).
"""

from __future__ import annotations

import enum
import ipaddress
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from dyncast_bgp.model import IPNetwork, ServiceId

FORMAT = 1  # of to_dict(); readers accept FORMAT and ignore fields they do not know
HISTORY = 32  # events kept per rollout


class Status(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ROLLED_BACK = "rolled-back"
    COMMITTED = "committed"


FINAL = frozenset({Status.ROLLED_BACK, Status.COMMITTED})


@dataclass(frozen=True, slots=True)
class Stage:
    share: float  # 0 < share <= 1: the most of the service's new flows the new version may take
    hold: float  # seconds the stage is watched before the next


@dataclass(frozen=True, slots=True)
class Kpis:
    """Thresholds toward the new-version instances (the worst of them counts); None: not watched."""

    max_rtt_ms: float | None = None  # probe RTT, window mean
    max_loss: float | None = None  # probe loss, window mean (0-1); an unreachable instance counts as 1
    max_service_delay_ms: float | None = None  # the service_delay metric the agents report
    max_metrics: Mapping[str, float] = field(default_factory=dict)  # any other reported metric, e.g. an error rate
    breach_for: float = 0.0  # seconds a breach must last before the rollback (0: the first breaching sample)


@dataclass(frozen=True, slots=True)
class Plan:
    service: ServiceId
    version: int
    stages: tuple[Stage, ...]
    kpis: Kpis = field(default_factory=Kpis)
    hard_rollback: bool = False
    auto_commit: bool = False
    name: str = ""
    clients: tuple[IPNetwork, ...] = ()  # only new flows from these clients may reach the new version (none: all)

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("a plan needs at least one stage")
        wrong = [str(net) for net in self.clients if net.version != self.service.version]
        if wrong:
            raise ValueError(f"clients of the other address family than {self.service}: {', '.join(wrong)}")
        for index, stage in enumerate(self.stages):
            if not (0.0 < stage.share <= 1.0) or not math.isfinite(stage.hold) or stage.hold < 0:
                raise ValueError(f"stages[{index}]: share must be in (0, 1] and hold >= 0")


@dataclass(frozen=True, slots=True)
class Sample:
    """The KPIs toward the new-version instances at one moment (the worst value of each)."""

    instances: int = 0  # new-version instances seen (0: no sample)
    rtt_ms: float | None = None
    loss: float | None = None
    service_delay_ms: float | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    share: float = 0.0  # the new version's current share of new flows (for status; not a KPI)


@dataclass(frozen=True, slots=True)
class Rollout:
    plan: Plan
    status: Status
    stage: int = 0
    held: float = 0.0  # seconds of the current stage's hold already watched
    observed: bool = False  # a sample of a new-version instance arrived during this stage
    breaching: float | None = None  # seconds the current breach has lasted; None: no breach
    reason: str = ""  # why rolled back (or committed), for status
    hard: bool = False  # rolled back hard: flows on the new version were evicted
    last: float = 0.0  # when this state was computed (not persisted)
    history: tuple[tuple[str, str], ...] = ()  # (event, detail), the last HISTORY

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def at_last_stage(self) -> bool:
        return self.stage == len(self.plan.stages) - 1

    @property
    def share(self) -> float | None:
        """The cap on the new version's share of new flows; None once committed (no steering)."""
        if self.status is Status.COMMITTED:
            return None
        if self.status is Status.ROLLED_BACK:
            return 0.0
        return self.plan.stages[self.stage].share


def _event(rollout: Rollout, event: str, detail: str, **changes: Any) -> Rollout:
    return replace(rollout, history=(*rollout.history, (event, detail))[-HISTORY:], **changes)


def start(plan: Plan, now: float) -> Rollout:
    first = plan.stages[0]
    return Rollout(plan, Status.RUNNING, last=now,
                   history=(("rollout_started", f"stage 1/{len(plan.stages)}: share {first.share:.0%}, "
                             f"hold {first.hold:g}s"),))


def breach(kpis: Kpis, sample: Sample) -> str | None:
    """The first KPI ``sample`` is over, in words; None when within every threshold (or no sample)."""
    if sample.instances == 0:
        return None
    checks = [("rtt", sample.rtt_ms, kpis.max_rtt_ms, " ms"), ("loss", sample.loss, kpis.max_loss, ""),
              ("service_delay", sample.service_delay_ms, kpis.max_service_delay_ms, " ms")]
    checks += [(name, sample.metrics.get(name), limit, "") for name, limit in sorted(kpis.max_metrics.items())]
    for name, value, limit, unit in checks:
        if value is not None and limit is not None and value > limit:
            return f"{name} {value:.4g}{unit} over {limit:g}{unit}"
    return None


def observe(rollout: Rollout, sample: Sample | None, now: float) -> Rollout:
    """Time passes to ``now`` with ``sample`` the latest KPIs: the hold counts, a breach rolls back."""
    if rollout.finished:
        return replace(rollout, last=now)
    dt = max(0.0, now - rollout.last)
    plan = rollout.plan
    over = breach(plan.kpis, sample) if sample is not None else None
    if over is not None:
        lasted = rollout.breaching + dt if rollout.breaching is not None else 0.0
        if lasted >= plan.kpis.breach_for:
            return _rolled_back(rollout, f"KPI breach at stage {rollout.stage + 1}: {over}", plan.hard_rollback, now)
        rollout = replace(rollout, breaching=lasted)
    else:
        rollout = replace(rollout, breaching=None)
    if rollout.status is Status.PAUSED:
        return replace(rollout, last=now)
    seen = rollout.observed or (sample is not None and sample.instances > 0)
    rollout = replace(rollout, held=rollout.held + dt, observed=seen, last=now)
    stage = plan.stages[rollout.stage]
    if rollout.held < stage.hold or not rollout.observed:
        return rollout
    if not rollout.at_last_stage:
        following = plan.stages[rollout.stage + 1]
        return _event(rollout, "rollout_stage", f"stage {rollout.stage + 2}/{len(plan.stages)}: share "
                      f"{following.share:.0%}, hold {following.hold:g}s",
                      stage=rollout.stage + 1, held=0.0, observed=False)
    if plan.auto_commit:
        return _event(rollout, "rollout_committed", "auto_commit after the last stage", status=Status.COMMITTED,
                      reason="auto_commit")
    return rollout


def _rolled_back(rollout: Rollout, reason: str, hard: bool, now: float) -> Rollout:
    return _event(rollout, "rollout_rolled_back", reason + (" (hard: flows on the new version evicted)" if hard
                                                            else ""),
                  status=Status.ROLLED_BACK, reason=reason, hard=hard, breaching=None, last=now)


def pause(rollout: Rollout, now: float) -> Rollout | str:
    if rollout.status is not Status.RUNNING:
        return f"rollout of {rollout.plan.service} is {rollout.status}: only a running rollout can be paused"
    rollout = observe(rollout, None, now)
    if rollout.status is not Status.RUNNING:
        return rollout
    return _event(rollout, "rollout_paused", f"at stage {rollout.stage + 1}", status=Status.PAUSED)


def resume(rollout: Rollout, now: float) -> Rollout | str:
    if rollout.status is not Status.PAUSED:
        return f"rollout of {rollout.plan.service} is {rollout.status}: only a paused rollout can be resumed"
    return _event(rollout, "rollout_resumed", f"at stage {rollout.stage + 1}", status=Status.RUNNING, last=now)


def abort(rollout: Rollout, now: float, *, hard: bool = False) -> Rollout | str:
    if rollout.finished:
        return f"rollout of {rollout.plan.service} is already {rollout.status}"
    return _rolled_back(rollout, "aborted by the operator", hard, now)


def commit(rollout: Rollout, now: float) -> Rollout | str:
    if rollout.finished:
        return f"rollout of {rollout.plan.service} is already {rollout.status}"
    if not rollout.at_last_stage:
        return (f"rollout of {rollout.plan.service} is at stage {rollout.stage + 1} of {len(rollout.plan.stages)}: "
                f"commit only from the last stage")
    return _event(rollout, "rollout_committed", "by the operator", status=Status.COMMITTED, reason="operator",
                  last=now)


def next_due(rollout: Rollout) -> float | None:
    """When :func:`observe` should next run without new inputs (a hold or a breach tolerance ends)."""
    if rollout.status is not Status.RUNNING:
        return None
    times = []
    if rollout.observed:
        times.append(rollout.last + max(0.0, rollout.plan.stages[rollout.stage].hold - rollout.held))
    if rollout.breaching is not None:
        times.append(rollout.last + max(0.0, rollout.plan.kpis.breach_for - rollout.breaching))
    return min(times, default=None)


# ---------------------------------------------------------------- persistence


def plan_to_dict(plan: Plan) -> dict[str, Any]:
    kpis = plan.kpis
    return {"name": plan.name, "service": str(plan.service), "version": plan.version,
            "stages": [{"share": stage.share, "hold": stage.hold} for stage in plan.stages],
            "kpis": {"max_rtt_ms": kpis.max_rtt_ms, "max_loss": kpis.max_loss,
                     "max_service_delay_ms": kpis.max_service_delay_ms, "max_metrics": dict(kpis.max_metrics),
                     "breach_for": kpis.breach_for},
            "hard_rollback": plan.hard_rollback, "auto_commit": plan.auto_commit,
            **({"clients": [str(net) for net in plan.clients]} if plan.clients else {})}  # added in 0.1: optional


def plan_from_dict(data: Mapping[str, Any]) -> Plan:
    """The inverse of :func:`plan_to_dict` (raises KeyError, TypeError or ValueError on a bad document)."""
    kpis = data.get("kpis") or {}

    def number(value: Any) -> float | None:
        return None if value is None else float(value)

    return Plan(service=ServiceId.parse(str(data["service"])), version=int(data["version"]),
                stages=tuple(Stage(float(s["share"]), float(s["hold"])) for s in data["stages"]),
                kpis=Kpis(max_rtt_ms=number(kpis.get("max_rtt_ms")), max_loss=number(kpis.get("max_loss")),
                          max_service_delay_ms=number(kpis.get("max_service_delay_ms")),
                          max_metrics={str(k): float(v) for k, v in (kpis.get("max_metrics") or {}).items()},
                          breach_for=float(kpis.get("breach_for") or 0.0)),
                hard_rollback=bool(data.get("hard_rollback", False)), auto_commit=bool(data.get("auto_commit", False)),
                name=str(data.get("name") or ""),
                clients=tuple(ipaddress.ip_network(str(net)) for net in data.get("clients") or ()))


def to_dict(rollout: Rollout) -> dict[str, Any]:
    """The persisted form (durations only, no clock readings)."""
    return {"plan": plan_to_dict(rollout.plan), "status": str(rollout.status), "stage": rollout.stage,
            "held": rollout.held, "observed": rollout.observed, "breaching": rollout.breaching,
            "reason": rollout.reason, "hard": rollout.hard, "history": [list(item) for item in rollout.history]}


def from_dict(data: Mapping[str, Any], now: float) -> Rollout:
    """A rollout read back; its clock restarts at ``now`` (raises KeyError, TypeError or ValueError)."""
    plan = plan_from_dict(data["plan"])
    stage = int(data.get("stage", 0))
    if not 0 <= stage < len(plan.stages):
        raise ValueError(f"stage {stage} is not a stage of the plan ({len(plan.stages)} stages)")
    breaching = data.get("breaching")
    return Rollout(plan, Status(data["status"]), stage=stage, held=float(data.get("held", 0.0)),
                   observed=bool(data.get("observed", False)),
                   breaching=None if breaching is None else float(breaching), reason=str(data.get("reason", "")),
                   hard=bool(data.get("hard", False)), last=now,
                   history=tuple((str(event), str(detail)) for event, detail in data.get("history", ()))[-HISTORY:])


def view(rollout: Rollout, sample: Sample | None = None) -> dict[str, Any]:
    """As ``dyncast ctl rollout status`` shows it."""
    plan = rollout.plan
    stage = plan.stages[rollout.stage]
    return {"service": str(plan.service), "name": plan.name, "version": plan.version, "status": str(rollout.status),
            "stage": rollout.stage + 1, "stages": len(plan.stages),
            "shares": [s.share for s in plan.stages], "cap": rollout.share,
            "clients": [str(net) for net in plan.clients] or None,
            "hold": stage.hold, "held": round(rollout.held, 3), "observed": rollout.observed,
            "breaching": None if rollout.breaching is None else round(rollout.breaching, 3),
            "reason": rollout.reason or None, "hard": rollout.hard,
            "share": None if sample is None else round(sample.share, 6),
            "new_instances": None if sample is None else sample.instances,
            "kpis": plan_to_dict(plan)["kpis"],
            "history": [{"event": event, "detail": detail} for event, detail in rollout.history]}
