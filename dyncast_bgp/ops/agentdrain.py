"""The drain state machine (:mod:`dyncast_bgp.ops.drain`) applied to the agent's state.

A drain phase becomes an admin state and the drained flag (``docs/agent.md#drain``):

| phase | admin | flags on the wire |
|---|---|---|
| pending (lead time) | unchanged (active or canary) | unchanged |
| draining | draining | draining |
| drained | draining | draining + drained (routers evict the flows left) |
| serving (undrained) | active, or canary if configured | none of those |

Everything here runs on the agent's state task; no I/O, time comes in as ``now``.
"""

from __future__ import annotations

from collections.abc import Iterable

from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.ops.drain import DrainBook, Fact, Limits, Phase, Transition

SESSIONS_METRIC = "active_sessions"
_SERVING = frozenset({Admin.ACTIVE, Admin.CANARY})


def facts(state: AgentState, now: float) -> dict[InstanceId, Fact]:
    """Every instance: its service, whether it is available (announced, healthy, serving), its sessions."""
    result: dict[InstanceId, Fact] = {}
    for iid, _ in state.instances():
        status = state.status(iid)
        up = status.admin in _SERVING and status.withhold_reason(now) is None
        result[iid] = Fact(iid.service, up, status.metrics(now).get(SESSIONS_METRIC),
                           status.read_at(SESSIONS_METRIC, now))
    return result


def limits(state: AgentState) -> dict[str, Limits]:
    """The ``drain`` settings of every service."""
    found: dict[str, Limits] = {}
    for iid, _ in state.instances():
        if iid.service not in found:
            policy = state.drain_service(iid).drain
            found[iid.service] = Limits(min_available=policy.min_available, max_drained=policy.max_drained,
                                        deadline=policy.deadline, lead_time=policy.lead_time,
                                        threshold=policy.threshold, settle=state.drain_settle(iid))
    return found


def resting(state: AgentState, iid: InstanceId) -> Admin:
    """Where an undrain leads: canary if the config says so, otherwise active."""
    return Admin.CANARY if state.configured_admin(iid) is Admin.CANARY else Admin.ACTIVE


def carry_out(state: AgentState, transitions: Iterable[Transition[InstanceId]]) -> None:
    """Set the admin state and drained mark each transition implies."""
    for step in transitions:
        if not state.has(step.key):
            continue
        if step.after is Phase.DRAINING:
            state.set_admin(step.key, Admin.DRAINING)
            state.set_drained(step.key, False)
        elif step.after is Phase.DRAINED:
            state.set_admin(step.key, Admin.DRAINING)
            state.set_drained(step.key, True)
        elif step.after is Phase.SERVING:
            state.set_admin(step.key, resting(state, step.key))
            state.set_drained(step.key, False)


def tick(state: AgentState, book: DrainBook[InstanceId], now: float) -> list[Transition[InstanceId]]:
    """Move every drain on (lead times, sessions, deadlines) and carry the changes out on ``state``."""
    if not book.records():
        return []
    book.limits = limits(state)
    transitions = book.tick(facts(state, now), now)
    carry_out(state, transitions)
    return transitions
