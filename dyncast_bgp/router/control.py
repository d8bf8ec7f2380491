"""The router's verbs on the control socket (`dyncast ctl --router ...`): what it knows and why it decided.

Verbs (read-only but ``rollout``; fields after the verb):

- ``services``: per service, the policy, its fallback setting and the fallback in force, the
  decision's status, the instances with their weights (and those kept at 0 for their flows);
- ``instances`` {service?}: every instance: D-BID, ADD-PATH path ids and the peers they came
  from, state and flags, metrics and their age, path RTT/loss/reachability, eligible or the
  exclusion reason, weight;
- ``decisions``: each service's last decision change: weights, exclusions, status, when;
- ``explain`` {service}: the full explanation of one service's decision (every instance's
  metrics, path, L1/L2 scores, target, weight, exclusion reason);
- ``flows`` {service?}: live flows per instance, counted by the dataplane (in a worker thread);
- ``status``: version, uptime, sessions, counters;
- ``rollout`` {action, service?, plan?, hard?}: canary rollouts (the one verb that changes something;
  answered by :meth:`dyncast_bgp.router.runtime.RouterRuntime.rollout_request`, docs/operations.md).

The socket and its protocol are :mod:`dyncast_bgp.ctl`; the answers are built here by pure
functions of the engine, the :class:`~dyncast_bgp.router.audit.DecisionBook` and the clock,
on the event loop (the only place the engine is read), so an answer is one consistent picture.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from dyncast_bgp.config.schema import with_length
from dyncast_bgp.ctl.protocol import FieldSpec, Request, Response, Verb, error
from dyncast_bgp.dataplane.desired import DataplaneError
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import InstanceKey, ServiceId
from dyncast_bgp.router.audit import DecisionBook, iso

ROLE = "router"
FLOWS_TIMEOUT = 10.0  # seconds a flow count may take (conntrack on a busy box is slow)

_SERVICE = {"service": FieldSpec(str, help="a D-SID, e.g. 203.0.113.10/32 (a bare address means /32 or /128)")}
_OPTIONAL_SERVICE = {"service": FieldSpec(str, required=False, help="only this service")}

VERBS: Mapping[str, Verb] = {verb.name: verb for verb in (
    Verb("services", "per service: policy, fallback, status, instances and weights"),
    Verb("instances", "every instance: D-BID, path id, peer, state, metrics, path, eligibility, weight",
         _OPTIONAL_SERVICE),
    Verb("decisions", "each service's last decision change: weights, exclusions, status, when"),
    Verb("explain", "why each instance of a service has its weight (metrics, path, scores, reasons)", _SERVICE),
    Verb("flows", "live flows per instance, from the dataplane", _OPTIONAL_SERVICE),
    Verb("status", "version, uptime, BGP sessions, counters"),
    Verb("rollout", "canary rollouts: status, start (plan), pause, resume, abort (hard), commit, clear", {
        "action": FieldSpec(str, help="status, start, pause, resume, abort, commit or clear"),
        "service": FieldSpec(str, required=False, help="the D-SID (every action but status and start)"),
        "plan": FieldSpec(str, required=False, help="start: the plan file's path, as the router sees it"),
        "hard": FieldSpec(bool, required=False, help="abort: also evict the flows on the new version")}),
)}

FlowCounter = Callable[[], Awaitable[Mapping[InstanceKey, int]]]


@dataclass(slots=True)
class RouterControl:
    """Answers control requests from the router's state (``handle`` is the server's handler)."""

    engine: RouterEngine
    book: DecisionBook
    clock: Callable[[], float]  # the engine's clock (ages)
    wall: Callable[[], float]  # epoch seconds (when)
    status: Callable[[], dict[str, Any]]
    flows: FlowCounter | None = None  # None: no dataplane
    rollout: Callable[[Request], Response] | None = None  # the rollout verb (router/runtime.py); None: not offered

    async def handle(self, request: Request) -> Response:
        verb = request.verb
        if verb == "rollout":  # its service need not have routes yet: the rollout handler checks it
            if self.rollout is None:
                return error("rollouts are not available here")
            return self.rollout(request)
        service: ServiceId | None = None
        if (name := request.text("service")) is not None:
            found = resolve_service(self.engine, name)
            if isinstance(found, str):
                return error(found)
            service = found
        if verb == "flows":
            return await self._flows(service)
        now = self.clock()
        if verb == "services":
            return ok(services=services_view(self.engine))
        if verb == "instances":
            return ok(instances=instances_view(self.engine, now, only=service))
        if verb == "decisions":
            return ok(decisions=decisions_view(self.book, self.wall()))
        if verb == "explain":
            assert service is not None  # the protocol required it
            return ok(explain=explain_view(self.engine, service))
        if verb == "status":
            return ok(status=self.status())
        return error(f"request.verb: {verb!r} is not a router verb")

    async def _flows(self, only: ServiceId | None) -> Response:
        if self.flows is None:
            return error("no dataplane: the router runs with --no-dataplane, so there are no flows to count")
        try:
            async with asyncio.timeout(FLOWS_TIMEOUT):
                counts = await self.flows()
        except TimeoutError:
            return error(f"the dataplane did not count flows within {FLOWS_TIMEOUT:g} s")
        except DataplaneError as exc:
            return error(f"the dataplane could not count flows: {exc}")
        return ok(flows=flows_view(counts, only))


def ok(**fields: Any) -> Response:
    return {"ok": True, "role": ROLE, **fields}


def resolve_service(engine: RouterEngine, name: str) -> ServiceId | str:
    """The service a request names, or an error saying what is known."""
    try:
        service = ServiceId.parse(with_length(name))
    except ValueError as exc:
        return f"request.service: {exc}"
    if engine.outcome(service) is None:
        known = ", ".join(str(outcome.decision.service) for outcome in _outcomes(engine)[:20]) or "none"
        return f"request.service: no service {str(service)!r} (known: {known})"
    return service


def _outcomes(engine: RouterEngine) -> list[Any]:
    return sorted(engine.outcomes(), key=lambda outcome: outcome.decision.service.sort_key)


def _lingering(engine: RouterEngine) -> dict[ServiceId, list[str]]:
    """Instances kept at weight 0 for their flows after they left the RIB (per service)."""
    lingering: dict[ServiceId, list[str]] = {}
    for target in engine.desired().services:
        outcome = engine.outcome(target.service)
        known = {item.key.binding for item in outcome.explain} if outcome is not None else set()
        gone = [str(instance.key.binding) for instance in target.instances if instance.key.binding not in known]
        if gone:
            lingering[target.service] = gone
    return lingering


def services_view(engine: RouterEngine) -> list[dict[str, Any]]:
    lingering = _lingering(engine)
    views = []
    for outcome in _outcomes(engine):
        service = outcome.decision.service
        policy = engine.config.policy_for(service)
        explain = outcome.explain
        views.append({
            "service": str(service), "policy": policy.policy, "fallback_policy": policy.fallback,
            "fallback": outcome.fallback, "status": outcome.status, "converging": outcome.converging,
            "affinity": policy.affinity, "instances": len(explain),
            "eligible": sum(1 for item in explain if item.eligible),
            "weights": {str(key.binding): round(weight, 6)
                        for key, weight in sorted(outcome.decision.weights.items())},
            "lingering": lingering.get(service, []),
        })
    return views


def instances_view(engine: RouterEngine, now: float, *, only: ServiceId | None = None) -> list[dict[str, Any]]:
    views = []
    for outcome in _outcomes(engine):
        service = outcome.decision.service
        if only is not None and service != only:
            continue
        paths: dict[str, list[dict[str, Any]]] = {}
        for path in sorted(engine.rib.paths(service), key=lambda p: p.key):
            paths.setdefault(str(path.next_hop), []).append({
                "peer": path.key[0], "path_id": path.key[2], "age": round(now - path.received_at, 3),
                "stale": path.stale_since is not None})
        for item in outcome.explain:
            data = item.to_dict()
            views.append({
                "service": str(service), "instance": data["instance"], "name": data["name"],
                "paths": paths.get(data["instance"], []), "state": data["state"], "flags": data["flags"],
                "metrics": data["metrics"], "metrics_age": data["metrics_age"], "path": data["path"],
                "eligible": data["eligible"], "excluded": data["excluded"], "weight": data["weight"],
                "reason": data["reason"],
            })
    return views


def decisions_view(book: DecisionBook, wall: float) -> list[dict[str, Any]]:
    views = []
    for service, entry in book.entries():
        decision = entry.outcome.decision
        views.append({
            "service": str(service), "status": entry.outcome.status, "fallback": entry.outcome.fallback,
            "at": iso(entry.at), "ago": round(max(0.0, wall - entry.at), 3), "changes": entry.changes,
            "weights": {str(key.binding): round(weight, 6) for key, weight in sorted(decision.weights.items())},
            "excluded": {str(key.binding): reason for key, reason in sorted(decision.excluded.items())},
        })
    return views


def explain_view(engine: RouterEngine, service: ServiceId) -> dict[str, Any]:
    outcome = engine.outcome(service)
    assert outcome is not None  # resolved before
    policy = engine.config.policy_for(service)
    return {**outcome.to_dict(), "policy": policy.policy, "fallback_policy": policy.fallback}


def flows_view(counts: Mapping[InstanceKey, int], only: ServiceId | None) -> list[dict[str, Any]]:
    return [{"service": str(key.service), "instance": str(key.binding), "path_id": key.path_id, "flows": count}
            for key, count in sorted(counts.items()) if only is None or key.service == only]
