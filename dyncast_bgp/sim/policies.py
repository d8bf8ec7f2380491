"""The steering policies compared by the simulator, all behind one interface.

An ingress policy sees only its :class:`~dyncast_bgp.sim.information.View` (the
past, as BGP and its probes brought it): ``update(view)`` at every decision
tick, then ``pick(u)`` for every new flow until the next tick (``u`` uniform in
[0, 1) from the ingress's own random stream; the dataplane's weighted pick).
``pick`` returns a site index, or -1 when the ingress has no route.

The oracle is the one exception, by design: it is central, instant and exact
(the bound, not a deployable policy), so its factory alone is handed the
simulator's :class:`Live` state. No other factory receives it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from dyncast_bgp.sim.information import View

NO_ROUTE = -1


class Policy(Protocol):
    def update(self, view: View) -> None: ...

    def pick(self, u: float) -> int: ...


class Live(Protocol):
    """The exact current state, for the oracle only: per site, requests in the system and whether it is up."""

    def in_system(self, site: int) -> int: ...

    def is_up(self, site: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class IngressContext:
    """What a policy is configured with: static facts an operator knows (no load, no state)."""

    index: int
    name: str
    site_names: tuple[str, ...]
    rtt_ms: tuple[float, ...]
    """Nominal RTT to every site: BGP's path cost for anycast, the probes' expectation."""
    servers: tuple[int, ...]
    rate: tuple[float, ...]
    settings: dict[str, Any]
    """The scenario's ``policy:`` section (ServicePolicy fields for the dyncast policies)."""


@dataclass(frozen=True, slots=True)
class PolicySpec:
    name: str
    summary: str
    build: Callable[[IngressContext, Live | None], Policy]
    central: bool = False


def usable(view: View) -> list[int]:
    """Sites this ingress has a route to and can reach."""
    return [index for index, site in enumerate(view.sites) if site.announced and site.reachable]


class Split:
    """A fixed split over sites, picked from by inverse CDF: what a weighted dataplane does."""

    __slots__ = ("_bounds", "_sites")

    def __init__(self) -> None:
        self._bounds: list[float] = []
        self._sites: list[int] = []

    def set(self, weights: Sequence[tuple[int, float]]) -> None:
        total = sum(weight for _, weight in weights)
        self._bounds, self._sites = [], []
        if total <= 0.0:
            return
        running = 0.0
        for site, weight in weights:
            if weight > 0.0:
                running += weight / total
                self._bounds.append(running)
                self._sites.append(site)
        self._bounds[-1] = 1.0

    def pick(self, u: float) -> int:
        if not self._sites:
            return NO_ROUTE
        return self._sites[bisect.bisect_right(self._bounds, u)] if len(self._sites) > 1 else self._sites[0]

    def shares(self) -> dict[int, float]:
        out, previous = {}, 0.0
        for bound, site in zip(self._bounds, self._sites, strict=True):
            out[site] = bound - previous
            previous = bound
        return out


class Anycast:
    """Static nearest anycast: BGP's best path, the lowest path cost among announced sites; load is ignored."""

    def __init__(self, context: IngressContext) -> None:
        self._rtt = context.rtt_ms
        self._site = NO_ROUTE

    def update(self, view: View) -> None:
        announced = [index for index, site in enumerate(view.sites) if site.announced]
        self._site = min(announced, key=lambda i: (self._rtt[i], i)) if announced else NO_ROUTE

    def pick(self, u: float) -> int:
        return self._site


class RandomPick:
    """Uniform over the usable sites."""

    def __init__(self, context: IngressContext) -> None:
        self._sites: list[int] = []

    def update(self, view: View) -> None:
        self._sites = usable(view)

    def pick(self, u: float) -> int:
        sites = self._sites
        return sites[int(u * len(sites))] if sites else NO_ROUTE


class RoundRobin:
    """Each new flow to the next usable site in turn."""

    def __init__(self, context: IngressContext) -> None:
        self._sites: list[int] = []
        self._next = 0

    def update(self, view: View) -> None:
        self._sites = usable(view)

    def pick(self, u: float) -> int:
        sites = self._sites
        if not sites:
            return NO_ROUTE
        self._next = (self._next + 1) % len(sites)
        return sites[self._next]


class LeastLoaded:
    """Greedy: every new flow to the site that looks least loaded in this ingress's (stale) view.

    Load is the reported backlog per server, ``(busy + queued) / servers``: the utilisation
    while a site keeps up, and more than 1 once it queues (a fairer greedy than utilisation
    alone, which saturates at 100 %). Ties go to the nearer site.
    """

    def __init__(self, context: IngressContext) -> None:
        self._rtt = context.rtt_ms
        self._site = NO_ROUTE

    def update(self, view: View) -> None:
        def load(index: int) -> tuple[float, float]:
            site = view.sites[index]
            backlog = (site.busy or 0) + (site.queued or 0)
            return (backlog / site.servers, self._rtt[index])

        sites = usable(view)
        self._site = min(sites, key=load) if sites else NO_ROUTE

    def pick(self, u: float) -> int:
        return self._site


class Oracle:
    """Central, instant, exact: join the site of the shortest expected response time.

    Expected response = RTT + expected wait (FIFO, ``c`` servers: ``max(0, n - c + 1) / (c·mu)``
    with ``n`` in the system now) + mean service time. A bound, not a deployable policy.
    """

    def __init__(self, context: IngressContext, live: Live) -> None:
        self._live = live
        self._rtt_s = tuple(rtt / 1000.0 for rtt in context.rtt_ms)
        self._servers = context.servers
        self._service = tuple(1.0 / rate for rate in context.rate)
        self._cap = tuple(c * r for c, r in zip(context.servers, context.rate, strict=True))

    def update(self, view: View) -> None:
        return None

    def pick(self, u: float) -> int:
        best, best_cost = NO_ROUTE, 0.0
        in_system, is_up = self._live.in_system, self._live.is_up
        for index, rtt in enumerate(self._rtt_s):
            if not is_up(index):
                continue
            waiting = in_system(index) - self._servers[index] + 1
            cost = rtt + self._service[index] + (waiting / self._cap[index] if waiting > 0 else 0.0)
            if best == NO_ROUTE or cost < best_cost:
                best, best_cost = index, cost
        return best


def _oracle(context: IngressContext, live: Live | None) -> Policy:
    if live is None:
        raise ValueError("the oracle needs the live state")
    return Oracle(context, live)


def _engine(name: str) -> Callable[[IngressContext, Live | None], Policy]:
    def build(context: IngressContext, live: Live | None) -> Policy:
        from dyncast_bgp.sim.dyncast import EnginePolicy  # noqa: PLC0415 - the engine loads pydantic schemas

        return EnginePolicy(context, name)
    return build


POLICIES: dict[str, PolicySpec] = {spec.name: spec for spec in (
    PolicySpec("anycast", "static nearest anycast (BGP best path, load-blind)", lambda c, _: Anycast(c)),
    PolicySpec("random", "uniform over reachable sites", lambda c, _: RandomPick(c)),
    PolicySpec("round-robin", "new flows to each reachable site in turn", lambda c, _: RoundRobin(c)),
    PolicySpec("least-loaded", "greedy: all new flows to the least loaded site of the stale view",
               lambda c, _: LeastLoaded(c)),
    PolicySpec("weighted", "dyncast engine, policy weighted", _engine("weighted")),
    PolicySpec("best", "dyncast engine, policy best", _engine("best")),
    PolicySpec("local-first", "dyncast engine, policy local-first (nearest site local)", _engine("local-first")),
    PolicySpec("consolidate", "dyncast engine, policy consolidate", _engine("consolidate")),
    PolicySpec("oracle", "central, instant, exact: shortest expected response (bound)", _oracle, central=True),
)}
