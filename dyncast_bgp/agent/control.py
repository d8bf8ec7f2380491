"""The agent's verbs on the control socket (`dyncast ctl`): look at instances, drain and restore them.

Verbs (fields after the verb; ``service`` is optional where an instance is named):

- ``instances``: every instance with its D-BID, admin state, health, whether it is published, its metrics;
- ``status``: the agent's counters;
- ``drain`` {instance}: admin ``draining``: still announced, with the draining flag (no new flows);
- ``undrain`` {instance}: from ``draining`` back to ``active`` (``canary`` if the config says canary);
- ``withdraw`` {instance}: admin ``withdrawn``: not announced;
- ``restore`` {instance}: from ``withdrawn`` back to ``active`` (or ``canary``, as for undrain).

An instance is named ``service/instance``, or by its bare name when only one
service has an instance of that name. The state task runs :func:`apply` on a
request (the only step that changes anything, through ``AgentState.set_admin``),
plans and writes the resulting commands at once, then answers with
:func:`answer`, so a reply already reflects what was sent. Both are pure
functions of the state apart from that one call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.ctl.protocol import FieldSpec, Request, Response, Verb, error
from dyncast_bgp.model import StateFlag
from dyncast_bgp.ops import agentdrain
from dyncast_bgp.ops.drain import Accepted, DrainBook
from dyncast_bgp.ops.drain import Transition as DrainTransition

_NAMED = {"instance": FieldSpec(str, help="service/instance, or a bare instance name when unique"),
          "service": FieldSpec(str, required=False, help="the service, when `instance` is a bare name")}
_DRAIN = {**_NAMED,
          "hard": FieldSpec(bool, required=False, help="drained at once: routers evict its flows (re-pinned)"),
          "deadline": FieldSpec(int, required=False, help="seconds of draining before it counts as drained "
                                "(default: the service's drain.deadline)"),
          "lead_time": FieldSpec(int, required=False, help="seconds before the draining flag is announced "
                                 "(default: the service's drain.lead_time)")}

VERBS: Mapping[str, Verb] = {verb.name: verb for verb in (
    Verb("instances", "every instance: D-BID, admin state, health, published, metrics"),
    Verb("status", "the agent's counters"),
    Verb("drain", "announce with the draining flag: no new flows, existing ones continue; drained at zero "
         "sessions or the deadline (--hard: at once, flows re-pinned)", _DRAIN),
    Verb("undrain", "take new flows again (active, or canary if configured so)", _NAMED),
    Verb("withdraw", "stop announcing the instance", _NAMED),
    Verb("restore", "announce a withdrawn instance again (active, or canary if configured so)", _NAMED),
)}


@dataclass(frozen=True, slots=True)
class Transition:
    iid: InstanceId
    before: Admin
    after: Admin

    @property
    def changed(self) -> bool:
        return self.before is not self.after


@dataclass(frozen=True, slots=True)
class Applied:
    """What :func:`apply` did: nothing (a read-only verb), a transition, or an error answer."""

    transition: Transition | None = None
    error: str | None = None
    drains: tuple[DrainTransition[InstanceId], ...] = ()  # drain phase changes (ops/drain.py), to be logged


# verb -> the admin states it acts on, and those in which it has nothing to do
_ACTS_ON: dict[str, tuple[frozenset[Admin], frozenset[Admin]]] = {
    "drain": (frozenset({Admin.ACTIVE, Admin.CANARY}), frozenset({Admin.DRAINING})),
    "undrain": (frozenset({Admin.DRAINING}), frozenset({Admin.ACTIVE, Admin.CANARY})),
    "withdraw": (frozenset({Admin.ACTIVE, Admin.CANARY, Admin.DRAINING}), frozenset({Admin.WITHDRAWN})),
    "restore": (frozenset({Admin.WITHDRAWN}), frozenset({Admin.ACTIVE, Admin.CANARY})),
}
_INSTEAD = {("drain", Admin.WITHDRAWN): "draining would announce it again; `restore` it first",
            ("undrain", Admin.WITHDRAWN): "it is not draining; use `restore`",
            ("restore", Admin.DRAINING): "it is not withdrawn; use `undrain`"}


def resolve(state: AgentState, name: str, service: str | None) -> InstanceId | str:
    """The instance a request names, or an error message (unknown, or ambiguous with the candidates)."""
    known = [iid for iid, _ in state.instances()]
    if "/" in name:
        if service is not None:
            return f"request.service: give the service once, either in `instance` ({name!r}) or in `service`"
        service, _, name = name.partition("/")
    matches = [iid for iid in known if iid.instance == name and (service is None or iid.service == service)]
    if len(matches) == 1:
        return matches[0]
    wanted = f"{service}/{name}" if service is not None else name
    if not matches:
        return f"request.instance: no instance {wanted!r} (known: {', '.join(str(iid) for iid in known)})"
    return (f"request.instance: {wanted!r} is ambiguous, name it as one of: "
            f"{', '.join(str(iid) for iid in sorted(matches))}")


def _resting(state: AgentState, iid: InstanceId) -> Admin:
    """Where undrain/restore lead: canary if the config says so, otherwise active."""
    return Admin.CANARY if state.configured_admin(iid) is Admin.CANARY else Admin.ACTIVE


def target(state: AgentState, verb: str, iid: InstanceId) -> Admin | str:
    """The admin state ``verb`` leads to from the current one, or why it does not apply."""
    current = state.status(iid).admin
    acts_on, nothing_to_do = _ACTS_ON[verb]
    if current in nothing_to_do:
        return current
    if current not in acts_on:
        return f"{iid} is {current}: {_INSTEAD.get((verb, current), f'`{verb}` does not apply')}"
    return {"drain": Admin.DRAINING, "withdraw": Admin.WITHDRAWN}.get(verb) or _resting(state, iid)


def apply(state: AgentState, request: Request, drains: DrainBook[InstanceId] | None = None,
          now: float = 0.0) -> Applied:
    """Carry out ``request`` on ``state`` (the only place the control socket changes anything).

    With ``drains`` (the agent's :class:`~dyncast_bgp.ops.drain.DrainBook`), ``drain`` and ``undrain`` go
    through the drain state machine: lead time, constraints, drained at zero sessions or the deadline.
    """
    if request.verb not in _ACTS_ON:
        return Applied()
    name = request.text("instance")
    assert name is not None  # the protocol checked it
    iid = resolve(state, name, request.text("service"))
    if isinstance(iid, str):
        return Applied(error=iid)
    if drains is not None:
        if request.verb == "drain" and state.status(iid).admin is not Admin.WITHDRAWN and (
                drains.get(iid) is not None or state.status(iid).admin is not Admin.DRAINING):
            return _drain(state, request, iid, drains, now)
        if request.verb == "undrain" and drains.get(iid) is not None:
            return _undrain(state, iid, drains, now)
        if request.verb == "withdraw":
            drains.forget(iid)
            state.set_drained(iid, False)
    after = target(state, request.verb, iid)
    if not isinstance(after, Admin):  # (Admin is a StrEnum: test for it, not for str)
        return Applied(error=after)
    before = state.set_admin(iid, after)
    return Applied(Transition(iid, before, after))


def _seconds(request: Request, name: str) -> float | None:
    value = request.args.get(name)
    return float(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _drain(state: AgentState, request: Request, iid: InstanceId, drains: DrainBook[InstanceId],
           now: float) -> Applied:
    before = state.status(iid).admin
    drains.limits = agentdrain.limits(state)
    outcome = drains.request(iid, agentdrain.facts(state, now), now, hard=request.args.get("hard") is True,
                             deadline=_seconds(request, "deadline"), lead_time=_seconds(request, "lead_time"))
    if not isinstance(outcome, Accepted):
        return Applied(error=f"drain of {iid} refused: {outcome.reason}")
    agentdrain.carry_out(state, outcome.transitions)
    return Applied(_PhaseChange(iid, before, state.status(iid).admin, outcome.changed), drains=outcome.transitions)


def _undrain(state: AgentState, iid: InstanceId, drains: DrainBook[InstanceId], now: float) -> Applied:
    before = state.status(iid).admin
    step = drains.undrain(iid, agentdrain.facts(state, now))
    steps = (step,) if step is not None else ()
    agentdrain.carry_out(state, steps)
    return Applied(_PhaseChange(iid, before, state.status(iid).admin, True), drains=steps)


@dataclass(frozen=True, slots=True)
class _PhaseChange(Transition):
    """A transition that counts as a change when the drain phase moved, even if the admin state did not."""

    moved: bool = False

    @property
    def changed(self) -> bool:
        return self.moved


def answer(state: AgentState, request: Request, applied: Applied, now: float,
           counters: Mapping[str, Any], *, drains: DrainBook[InstanceId] | None = None) -> Response:
    """The reply, built after the change (if any) was planned and written."""
    if applied.error is not None:
        return error(applied.error)
    if request.verb == "instances":
        return {"ok": True, "instances": [instance_view(state, iid, now, drains) for iid, _ in state.instances()]}
    if request.verb == "status":
        return {"ok": True, "status": dict(counters)}
    transition = applied.transition
    assert transition is not None
    return {"ok": True, "changed": transition.changed, "from": str(transition.before), "to": str(transition.after),
            "instance": instance_view(state, transition.iid, now, drains)}


def flag_names(flags: StateFlag) -> list[str]:
    return [flag.name.lower() for flag in StateFlag if flag and flag in flags and flag.name]


def instance_view(state: AgentState, iid: InstanceId, now: float,
                  drains: DrainBook[InstanceId] | None = None) -> dict[str, Any]:
    """One instance as the ``instances`` verb shows it."""
    status = state.status(iid)
    machine = state.health_machine(iid)
    health = "unknown" if not status.health_known else "healthy" if status.healthy else "unhealthy"
    detail = status.health_detail if machine is not None else "no health check"
    metrics = status.metrics(now)
    published = state.published(iid, now)
    view: dict[str, Any] = {
        "service": iid.service, "instance": iid.instance, "dbid": str(status.binding),
        "path_id": state.path_id(iid),
        "admin": str(status.admin), "configured_admin": str(state.configured_admin(iid)),
        "health": health, "health_detail": detail,
        "withheld": status.withhold_reason(now),
        "published": published is not None,
        "published_flags": flag_names(published.flags) if published is not None else None,
        "flags": flag_names(status.flags(metrics)),
        "metrics": dict(sorted(metrics.items())),
    }
    if drains is not None:  # the agent's drain phases (ops/drain.py): null while serving
        record = drains.get(iid)
        view["drain"] = record.view(now) if record is not None else None
    return view


def admin_counts(state: AgentState) -> dict[str, int]:
    counts = dict.fromkeys((str(admin) for admin in Admin), 0)
    for iid, _ in state.instances():
        counts[str(state.status(iid).admin)] += 1
    return counts
