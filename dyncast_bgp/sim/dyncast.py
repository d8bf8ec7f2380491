"""The project's own policies in the simulator: the real :func:`~dyncast_bgp.engine.decide.decide`.

Each simulated ingress runs one service through the engine exactly as the router
does: one :class:`Candidate` per announced site (the agent's last report as L0
metrics: ``cpu_utilization``, ``capacity``, ``active_sessions``,
``queued_requests``; the ingress's probes as path metrics), the
:class:`ServiceMemory` carried from call to call, and the scenario's
``ServicePolicy`` settings. Its weights are the split new flows are picked from
until the next decision.
"""

from __future__ import annotations

import ipaddress

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import decide
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId
from dyncast_bgp.sim.information import View
from dyncast_bgp.sim.policies import IngressContext, Split

SERVICE = ServiceId.parse("203.0.113.10/32")


def binding(site: int) -> ipaddress.IPv4Address:
    """The D-BID of the instance at site number ``site``."""
    return ipaddress.IPv4Address(f"198.51.100.{site + 1}")


def service_policy(context: IngressContext, name: str) -> ServicePolicy:
    """The scenario's policy settings with ``policy: name``; for local-first the nearest site is local."""
    settings = dict(context.settings)
    settings["policy"] = name
    if name == "local-first" and "local" not in settings:
        nearest = min(range(len(context.rtt_ms)), key=lambda i: (context.rtt_ms[i], i))
        settings["local"] = (ipaddress.IPv4Network(f"{binding(nearest)}/32"),)
    return ServicePolicy.model_validate(settings)


class EnginePolicy:
    """One ingress's router for the service: the real decision, fed from the view."""

    def __init__(self, context: IngressContext, name: str) -> None:
        self.policy = service_policy(context, name)
        self._keys = tuple(InstanceKey(SERVICE, binding(i)) for i in range(len(context.site_names)))
        self._index = {key: i for i, key in enumerate(self._keys)}
        self._memory: ServiceMemory | None = None
        self._split = Split()

    def update(self, view: View) -> None:
        candidates = []
        for index, site in enumerate(view.sites):
            if not site.announced:
                continue  # withdrawn (or never announced): the RIB has no route, so no candidate
            values = {"capacity": site.capacity}
            if site.utilisation is not None:
                values["cpu_utilization"] = site.utilisation
            if site.busy is not None:
                values["active_sessions"] = float(site.busy)
            if site.queued is not None:
                values["queued_requests"] = float(site.queued)
            age = None if site.measured_at is None else view.now - site.measured_at
            candidates.append(Candidate(
                self._keys[index], InstanceState.ACTIVE, ComputeMetrics(MetricsView(values)),
                PathMetrics(rtt_mean_us=site.rtt_ms * 1000.0, loss_mean=0.0, reachable=site.reachable),
                metrics_age=age, name=site.name))
        outcome = decide(SERVICE, candidates, self.policy, self._memory, view.now)
        self._memory = outcome.memory
        self._split.set(sorted((self._index[key], weight) for key, weight in outcome.decision.weights.items()))

    def pick(self, u: float) -> int:
        return self._split.pick(u)

    def shares(self) -> dict[int, float]:
        return self._split.shares()
