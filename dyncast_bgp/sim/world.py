"""The discrete-event simulator: one heap of events, FIFO multi-server sites, ingress client populations.

One run = one scenario under one policy. Events (in time order, ties by
insertion order, so a run is a function of the scenario and the seed):

- a *session* starts at an ingress (Poisson, rate / mean requests per session):
  its first request is a new flow, placed by the ingress's policy; its later
  requests follow at exponential gaps and go to the same site (affinity);
- a request *arrives* at its site: a free server starts it, else it waits (FIFO);
  a *departure* frees the server for the next waiting request;
- every ``agent_interval_s`` each site's agent measures and maybe publishes
  (:func:`~dyncast_bgp.sim.information.publishes`);
- every ``decision_interval_s`` (its own phase) each ingress builds its
  :class:`~dyncast_bgp.sim.information.View` and updates its policy;
- a site *fails*: requests in it and sent to it are retried by their clients
  after ``retry_timeout_s`` as new flows; it *recovers* later.

A request's response time is its network RTT plus its time in the site (wait +
service), counted from its first attempt. The network delay is not simulated as
an event: a constant shift per (ingress, site) does not change the arrival
process a site sees.

Random streams are separate per purpose (arrivals and work per ingress, picks per
ingress, probe noise, decision phases), so every policy faces the same requests
(common random numbers) and a run is reproducible from its seed.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

from dyncast_bgp.sim.information import Feed, Report, View, build_view, check_causal, probe_reachable, publishes
from dyncast_bgp.sim.policies import NO_ROUTE, POLICIES, IngressContext, Policy, PolicySpec
from dyncast_bgp.sim.scenario import Ingress, Scenario, ServiceTime

_DEPART, _REQUEST, _SESSION, _RETRY, _AGENT, _SAMPLE, _DECIDE, _FAIL, _RECOVER = range(9)

Progress = Callable[[float], None]
ViewHook = Callable[[View], View]


@dataclass
class RunResult:
    """What one run measured. Response times (seconds) of the requests that arrived in [warmup, duration)."""

    scenario: str
    policy: str
    site_names: tuple[str, ...]
    bucket_s: float
    warmup_s: float
    duration_s: float
    slo_s: float
    responses: array[float] = field(repr=False)
    traffic: list[list[int]] = field(repr=False)
    """Per bucket, per site: requests that reached the site (attempts)."""
    utilisation: list[list[float]] = field(repr=False)
    """Per bucket, per site: the mean busy fraction of its servers."""
    retried: int = 0
    """Attempts that hit a failed site or found no route (the client retried them)."""
    requests: int = 0
    """Requests generated over the whole run (warm-up included)."""
    events: int = 0
    wall_s: float = 0.0


def work_sampler(shape: ServiceTime, rng: random.Random) -> Callable[[], float]:
    """Draws of a request's work, mean 1 (a server of rate r serves it in work / r seconds)."""
    if shape.distribution == "exponential":
        return lambda: rng.expovariate(1.0)
    if shape.distribution == "lognormal":
        sigma = math.sqrt(math.log1p(shape.cv * shape.cv))
        mu = -sigma * sigma / 2.0
        return lambda: rng.lognormvariate(mu, sigma)
    scale = (shape.alpha - 1.0) / shape.alpha
    alpha = shape.alpha
    return lambda: scale * rng.paretovariate(alpha)


class Arrivals:
    """Poisson session starts of one ingress at a piecewise-constant rate (its surges).

    Times must be asked for in increasing order (a cursor walks the rate segments).
    """

    def __init__(self, ingress: Ingress, requests_per_session: float, rng: random.Random) -> None:
        points = sorted({0.0} | {s.start for s in ingress.surges} | {s.end for s in ingress.surges})
        self._starts = points
        self._rates = [ingress.rate * math.prod(s.factor for s in ingress.surges if s.start <= point < s.end)
                       / requests_per_session for point in points]
        self._ends = [*points[1:], math.inf]
        self._index = 0
        self._rng = rng

    def next_after(self, t: float) -> float:
        """The next session start after ``t`` (memoryless across rate changes); ``inf`` if none."""
        index = self._index
        while t >= self._ends[index]:
            index += 1
        while True:
            until = self._ends[index]
            rate = self._rates[index]
            if rate > 0.0:
                candidate = t + self._rng.expovariate(rate)
                if candidate < until:
                    self._index = index
                    return candidate
            if until == math.inf:
                self._index = index
                return math.inf
            t, index = until, index + 1


Request = tuple[float, int, list[int], float]
"""(first attempt time, ingress, session, work): the session is ``[site]``, shared by its requests."""
Event = tuple[float, int, int, int, Any, Any]
"""(time, sequence number, kind, ingress or site, payload, payload)."""


def contexts(scenario: Scenario) -> tuple[IngressContext, ...]:
    names = tuple(site.name for site in scenario.sites)
    return tuple(IngressContext(index, ingress.name, names, tuple(ingress.rtt_ms[n] for n in names),
                                tuple(site.servers for site in scenario.sites),
                                tuple(site.rate for site in scenario.sites), dict(scenario.policy))
                 for index, ingress in enumerate(scenario.expanded_ingresses()))


def simulate(scenario: Scenario, policy: str | PolicySpec, *, seed: int | None = None,
             progress: Progress | None = None, view_hook: ViewHook | None = None) -> RunResult:
    """Run ``scenario`` with every ingress using ``policy``; the seed defaults to the scenario's.

    ``view_hook`` lets a test tamper with the views policies get (every view is checked for
    causality after the hook); ``progress`` is called with the simulated time every bucket.
    """
    spec = POLICIES[policy] if isinstance(policy, str) else policy
    world = _World(scenario, spec, scenario.seed if seed is None else seed, progress, view_hook)
    return world.run()


class _World:
    """The state of one run. :meth:`run` is the event loop; the hot events are handled inline."""

    def __init__(self, scenario: Scenario, spec: PolicySpec, seed: int, progress: Progress | None,
                 view_hook: ViewHook | None) -> None:
        self.scenario, self.spec, self.progress, self.view_hook = scenario, spec, progress, view_hook
        info = self.info = scenario.information
        self.sites = scenario.sites
        ingresses = scenario.expanded_ingresses()
        ns, ni = self.ns, self.ni = len(self.sites), len(ingresses)
        self.names = tuple(site.name for site in self.sites)
        self.servers = [site.servers for site in self.sites]
        self.rate = [site.rate for site in self.sites]
        self.capacities = tuple(site.capacity for site in self.sites)
        self.busy = [0] * ns
        self.queues: list[deque[Request]] = [deque() for _ in range(ns)]
        self.up = [True] * ns
        self.epoch = [0] * ns
        self.failed_at = [0.0] * ns
        self.area = [0.0] * ns
        self.area_t = [0.0] * ns
        self.agent_area = [0.0] * ns
        self.sample_area = [0.0] * ns

        def stream(purpose: str) -> random.Random:
            return random.Random(f"{seed}:{purpose}")

        self.ctxs = contexts(scenario)
        self.policies: list[Policy] = [spec.build(ctx, self if spec.central else None) for ctx in self.ctxs]
        self.arrival_rngs = [stream(f"arrivals:{i}") for i in range(ni)]
        self.arrivals = [Arrivals(ing, scenario.sessions.requests, self.arrival_rngs[i])
                         for i, ing in enumerate(ingresses)]
        self.works = [work_sampler(scenario.service_time, rng) for rng in self.arrival_rngs]
        self.pick_rngs = [stream(f"picks:{i}").random for i in range(ni)]
        self.noise = stream("probe-noise")
        self.phases = stream("phases")
        jitter = stream("jitter")
        self.delays = [info.propagation_s + jitter.uniform(0.0, info.propagation_jitter_s) for _ in range(ni)]
        self.buckets = math.ceil(scenario.duration_s / scenario.bucket_s)
        self.traffic = [0] * (self.buckets * ns)
        self.utilisation: list[list[float]] = []
        self.responses: array[float] = array("d")
        self.feed = Feed(ns)
        for s in range(ns):  # the world starts warm: every site announced, idle, long before t=0
            self.feed.publish(Report(s, -1e9, -1e9))
        self.heap: list[Event] = []
        self.seq = count()
        self.retried = 0

    # -- the oracle's window on the world (policies.Live) --
    def in_system(self, site: int) -> int:
        return self.busy[site] + len(self.queues[site])

    def is_up(self, site: int) -> bool:
        return self.up[site]

    def run(self) -> RunResult:  # noqa: PLR0915 - one loop on purpose: locals, not attributes, are the speed
        started = time.perf_counter()
        scenario, info, ns = self.scenario, self.info, self.ns
        heap, seq, busy, queues, up, epoch = self.heap, self.seq, self.busy, self.queues, self.up, self.epoch
        servers, rate, area, area_t, traffic = self.servers, self.rate, self.area, self.area_t, self.traffic
        policies, pick_rngs, works, arrival_rngs = self.policies, self.pick_rngs, self.works, self.arrival_rngs
        rtt_s = [[ctx.rtt_ms[s] / 1000.0 for s in range(ns)] for ctx in self.ctxs]
        record = self.responses.append
        push, pop = heapq.heappush, heapq.heappop
        think = 1.0 / scenario.sessions.think_s
        mean_len = scenario.sessions.requests
        log_stay = math.log(1.0 - 1.0 / mean_len) if mean_len > 1.0 else 0.0
        timeout = info.retry_timeout_s
        duration, warmup, bucket_s, buckets = scenario.duration_s, scenario.warmup_s, scenario.bucket_s, self.buckets
        self._schedule_start()
        events = requests = 0

        def arrive(t: float, req: Request, s: int) -> None:
            if s == NO_ROUTE or not up[s]:
                self.retried += 1
                push(heap, (t + timeout, next(seq), _RETRY, req[1], req, None))
                return
            b = int(t / bucket_s)
            if b < buckets:
                traffic[b * ns + s] += 1
            if busy[s] < servers[s]:
                area[s] += busy[s] * (t - area_t[s])
                area_t[s] = t
                busy[s] += 1
                push(heap, (t + req[3] / rate[s], next(seq), _DEPART, s, req, epoch[s]))
            else:
                queues[s].append(req)

        while heap:
            t, _, kind, x, y, z = pop(heap)
            events += 1
            if kind == _DEPART:
                s, req = x, y
                if z != epoch[s]:  # the site failed while serving it: the client retries after its timeout
                    self.retried += 1
                    push(heap, (max(self.failed_at[s] + timeout, t), next(seq), _RETRY, req[1], req, None))
                    continue
                t0 = req[0]
                if warmup <= t0 < duration:
                    record(t - t0 + rtt_s[req[1]][s])
                queue = queues[s]
                if queue:
                    nxt = queue.popleft()
                    push(heap, (t + nxt[3] / rate[s], next(seq), _DEPART, s, nxt, z))
                else:
                    area[s] += busy[s] * (t - area_t[s])
                    area_t[s] = t
                    busy[s] -= 1
            elif kind == _REQUEST:  # a later request of a session: same site (affinity)
                session = y
                requests += 1
                arrive(t, (t, x, session, works[x]()), session[0])
                if z > 1:
                    nxt_t = t + arrival_rngs[x].expovariate(think)
                    if nxt_t < duration:
                        push(heap, (nxt_t, next(seq), _REQUEST, x, session, z - 1))
            elif kind == _SESSION:  # a new session: a new flow, placed by the ingress's policy
                length = 1 if log_stay == 0.0 else 1 + int(math.log(1.0 - arrival_rngs[x].random()) / log_stay)
                session = [policies[x].pick(pick_rngs[x]())]
                requests += 1
                arrive(t, (t, x, session, works[x]()), session[0])
                if length > 1:
                    nxt_t = t + arrival_rngs[x].expovariate(think)
                    if nxt_t < duration:
                        push(heap, (nxt_t, next(seq), _REQUEST, x, session, length - 1))
                nxt_t = self.arrivals[x].next_after(t)
                if nxt_t < duration:
                    push(heap, (nxt_t, next(seq), _SESSION, x, None, None))
            elif kind == _RETRY:  # a new flow for the same session: picked again
                session = y[2]
                session[0] = policies[x].pick(pick_rngs[x]())
                arrive(t, y, session[0])
            else:
                self._periodic(t, kind, x)

        return RunResult(scenario.name, self.spec.name, self.names, bucket_s, warmup, duration,
                         scenario.slo_ms / 1000.0, self.responses,
                         [traffic[b * ns:(b + 1) * ns] for b in range(buckets)], self.utilisation[:buckets],
                         self.retried, requests, events, time.perf_counter() - started)

    def _push(self, t: float, kind: int, x: int) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, x, None, None))

    def _schedule_start(self) -> None:
        info = self.info
        for i in range(self.ni):
            self._push(self.arrivals[i].next_after(0.0), _SESSION, i)
            self._push(self.phases.uniform(0.0, info.decision_interval_s), _DECIDE, i)
        self._push(info.agent_interval_s, _AGENT, 0)
        self._push(self.scenario.bucket_s, _SAMPLE, 0)
        for s, site in enumerate(self.sites):
            for window in site.failures:
                self._push(window.start, _FAIL, s)
                self._push(window.end, _RECOVER, s)
        for i in range(self.ni):
            self.policies[i].update(self.view_at(i, 0.0))

    def _periodic(self, t: float, kind: int, x: int) -> None:
        duration = self.scenario.duration_s
        if kind == _AGENT:
            self._agent_tick(t)
            if t + self.info.agent_interval_s < duration:
                self._push(t + self.info.agent_interval_s, _AGENT, 0)
        elif kind == _SAMPLE:
            self._sample(t)
            if t + self.scenario.bucket_s <= duration + 1e-9:
                self._push(t + self.scenario.bucket_s, _SAMPLE, 0)
        elif kind == _DECIDE:
            self.policies[x].update(self.view_at(x, t))
            if t + self.info.decision_interval_s < duration:
                self._push(t + self.info.decision_interval_s, _DECIDE, x)
        elif kind == _FAIL:
            self._fail(t, x)
        elif kind == _RECOVER:
            self.up[x] = True

    def _settle(self, t: float, s: int) -> None:
        """Bring site ``s``'s busy-time integral up to ``t``."""
        self.area[s] += self.busy[s] * (t - self.area_t[s])
        self.area_t[s] = t

    def _sample(self, t: float) -> None:
        row = []
        for s in range(self.ns):
            self._settle(t, s)
            row.append((self.area[s] - self.sample_area[s]) / (self.servers[s] * self.scenario.bucket_s))
            self.sample_area[s] = self.area[s]
        self.utilisation.append(row)
        if self.progress is not None:
            self.progress(t)

    def _fail(self, t: float, s: int) -> None:
        """Site ``s`` fails: what it was serving is lost (see the departures), what waited is retried."""
        self._settle(t, s)
        self.up[s], self.busy[s] = False, 0
        self.epoch[s] += 1
        self.failed_at[s] = t
        queue = self.queues[s]
        while queue:
            req = queue.popleft()
            self.retried += 1
            heapq.heappush(self.heap, (t + self.info.retry_timeout_s, next(self.seq), _RETRY, req[1], req, None))

    def view_at(self, i: int, now: float) -> View:
        """What ingress ``i`` knows at ``now`` (checked for causality)."""
        info, ns, rtt = self.info, self.ns, self.ctxs[i].rtt_ms
        if info.probe_noise_ms:
            rtts = tuple(max(rtt[s] + self.noise.gauss(0.0, info.probe_noise_ms), 0.05) for s in range(ns))
        else:
            rtts = rtt
        reach = tuple(probe_reachable(self.sites[s].failures, now, info.probe_detect_s) for s in range(ns))
        view = build_view(self.feed, ingress=i, now=now, delay_s=self.delays[i], names=self.names,
                          capacities=self.capacities, servers=tuple(self.servers), rtt_ms=rtts, reachable=reach)
        if self.view_hook is not None:
            view = self.view_hook(view)
        check_causal(view, now)
        return view

    def _agent_tick(self, t: float) -> None:
        """Every site's agent measures (utilisation over the interval, backlog now) and publishes if damping lets it."""
        info = self.info
        for s, site in enumerate(self.sites):
            self._settle(t, s)
            used = (self.area[s] - self.agent_area[s]) / (site.servers * info.agent_interval_s)
            self.agent_area[s] = self.area[s]
            healthy = not any(w.start + info.health_detect_s <= t < w.end + info.health_detect_s
                              for w in site.failures)
            previous = self.feed.last(s)
            if not healthy:
                if previous is None or not previous.withdrawn:
                    self.feed.publish(Report(s, t, t, withdrawn=True))  # a withdrawal goes out at once
                continue
            backlog = self.busy[s] + len(self.queues[s])
            if publishes(previous, min(100.0, 100.0 * used), backlog, t, info.damping):
                self.feed.publish(Report(s, t, t, min(100.0, 100.0 * used), self.busy[s], len(self.queues[s])))
