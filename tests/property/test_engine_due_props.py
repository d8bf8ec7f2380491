"""A step finds the services due again (a review of a converging service, a lingering instance whose time is
up) by looking at all of them only when the earliest such time has come (``RouterEngine._next_review``,
``_next_linger``), not in every slice of a recompute. Checked against an engine that looks at all of them in
every step (what the router did before), over random histories of announcements, withdrawals, time and
step limits: the same services decided, the same decisions, desired state and next due time."""

from __future__ import annotations

import ipaddress
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import RouterConfig, ServicePolicy
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import ServiceId
from dyncast_bgp.wire.exabgp_json import Route, RouteKey, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.IPv4Address("192.0.2.1")
SERVICES = [ipaddress.IPv4Network((0xCB007100 + n, 32)) for n in range(6)]  # 203.0.113.n/32
HOPS = [ipaddress.IPv4Address(0xC6336400 + n) for n in range(1, 4)]  # 198.51.100.1-3
CONFIGS = [RouterConfig(defaults=ServicePolicy(affinity_timeout=30.0)),  # converging: reviews every second
           RouterConfig(defaults=ServicePolicy(affinity_timeout=30.0, min_dwell=0.0, max_step=1.0, smoothing=1.0))]
"""The second settles at once: no review dirties a service whose lingering instance's time is up."""


class LooksEveryStep(RouterEngine):
    """An engine whose every step looks at every review and every lingering instance, leaving a due review in
    place until the service is decided (as the router did before)."""

    def step(self, now: float, **kwargs):  # type: ignore[no-untyped-def]  # passed through
        self._next_review = self._next_linger = -math.inf
        return super().step(now, **kwargs)

    def _due_reviews(self, now: float) -> list[ServiceId]:
        return [service for service, at in self._review_at.items() if at <= now]

    def _lingering_over(self, now: float) -> list[ServiceId]:
        return [service for service, entry in self._services.items()
                if any(until <= now for until in entry.lingering.values())]


def route(service: int, hop: int, cpu: float) -> Route:
    communities = encode_metrics({"cpu_utilization": cpu, "capacity": 100, "active_sessions": 10})
    return Route(SERVICES[service], HOPS[hop], hop + 1, (65001,), ext_raw=b"".join(c.pack() for c in communities))


change = st.one_of(st.none(), st.floats(1.0, 99.0))  # None: withdrawn
round_of = st.tuples(st.dictionaries(st.tuples(st.integers(0, len(SERVICES) - 1), st.integers(0, len(HOPS) - 1)),
                                     change, max_size=10),
                     st.sampled_from([0.0, 0.5, 1.0, 3.0, 10.0, 20.0, 31.0, 400.0]),
                     st.lists(st.sampled_from([1, 2, None]), min_size=1, max_size=4))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(CONFIGS), st.lists(round_of, min_size=1, max_size=12))
def test_looking_when_something_is_due_decides_as_looking_every_step(
        config: RouterConfig, history: list[tuple[dict[tuple[int, int], float | None], float, list[int | None]]]
) -> None:
    engines = [RouterEngine(config), LooksEveryStep(config)]
    now = 0.0
    for engine in engines:
        for service in range(len(SERVICES)):
            engine.on_event(RouteUpdate(PEER, tuple(route(service, hop, 50.0) for hop in range(len(HOPS)))), now)
        engine.step(now)
    for changes, later, limits in history:
        now += later
        updates = [RouteUpdate(PEER, withdrawn=(RouteKey(SERVICES[service], hop + 1),)) if cpu is None
                   else RouteUpdate(PEER, (route(service, hop, cpu),)) for (service, hop), cpu in changes.items()]
        for engine in engines:
            for update in updates:
                engine.on_event(update, now)
        for limit in limits:  # slices of a recompute, the clock standing or moving on a little
            ours, every = engines
            decided = [sorted(str(o.decision.service) for o in engine.step(now, limit=limit)) for engine in engines]
            assert decided[0] == decided[1]
            assert ours.decided == every.decided and ours.pending == every.pending
            now += 0.25
        assert ([(o.decision.weights, o.decision.excluded, o.status) for o in ours.outcomes()]
                == [(o.decision.weights, o.decision.excluded, o.status) for o in every.outcomes()])
        assert ours.desired() == every.desired()
        if not ours.pending:  # (while some are pending, the old way also names the due reviews still waiting)
            assert ours.next_due() == every.next_due()
