"""The router observes a service's flagged instances and its *watched* ones (flagged, draining or held out
before: ``FlapTracker.watches``), not every instance the tracker has an entry for. An entry that is none of
these cannot change when its instance is seen without flags, so leaving it alone must decide exactly what
observing it decides. Checked against an engine whose tracker watches every entry (what the router did before),
over random histories of flags, withdrawals and comebacks, quick enough for instances to be held out."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import FlapDampening, RouterConfig, ServicePolicy
from dyncast_bgp.engine.batch import MIN_BATCH
from dyncast_bgp.engine.flap import FlapTracker
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import InstanceKey, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import Route, RouteKey, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.IPv4Address("192.0.2.1")
SERVICES = [ipaddress.IPv4Network((0xCB007100 + n, 32)) for n in range(MIN_BATCH + 2)]  # 203.0.113.n/32
HOPS = [ipaddress.IPv4Address(0xC6336400 + n) for n in range(1, 4)]  # 198.51.100.1-3
QUICK = RouterConfig(defaults=ServicePolicy(flap_dampening=FlapDampening(suppress=1.5, reuse=1.0, half_life=10.0,
                                                                         max_suppress=30.0)))
"""Two flaps close together hold an instance out (the defaults need about three within 5 s)."""


class EveryEntry(FlapTracker):
    """A tracker that has the router observe every instance it has an entry for."""

    def watches(self, service: ServiceId) -> bool:
        return any(key.service == service for key in self._entries)

    def watched_of(self, service: ServiceId) -> frozenset[InstanceKey]:
        return frozenset(key for key in self._entries if key.service == service)


def route(service: int, hop: int, flags: StateFlag) -> Route:
    communities = encode_metrics({"cpu_utilization": 40.0 + 10 * hop, "capacity": 100, "active_sessions": 10},
                                 flags=flags)
    return Route(SERVICES[service], HOPS[hop], hop + 1, (65001,), ext_raw=b"".join(c.pack() for c in communities))


flag = st.sampled_from([StateFlag.NONE, StateFlag.NONE, StateFlag.OVERLOADED, StateFlag.DRAINING,
                        StateFlag.OVERLOADED | StateFlag.DRAINING])
change = st.one_of(st.none(), flag)  # None: withdrawn
whole = st.lists(flag, min_size=len(SERVICES) * len(HOPS), max_size=len(SERVICES) * len(HOPS))
partial = st.dictionaries(st.tuples(st.integers(0, len(SERVICES) - 1), st.integers(0, len(HOPS) - 1)), change,
                          max_size=12)
rounds = st.lists(st.tuples(st.one_of(whole, partial), st.sampled_from([0.5, 2.0, 20.0, 400.0])),
                  min_size=1, max_size=10)


@settings(max_examples=60, deadline=None)
@given(rounds)
def test_watching_only_changeable_entries_decides_as_watching_every_entry(
        history: list[tuple[list[StateFlag] | dict[tuple[int, int], StateFlag | None], float]]) -> None:
    engines = [RouterEngine(QUICK), RouterEngine(QUICK)]
    engines[1].flaps = EveryEntry()
    now = 0.0
    for changes, later in [([StateFlag.NONE] * len(SERVICES) * len(HOPS), 0.0), *history]:
        now += later
        if isinstance(changes, list):  # every instance announced: the step reads rows (a whole block)
            updates = [RouteUpdate(PEER, tuple(route(service, hop, changes[service * len(HOPS) + hop])
                                               for hop in range(len(HOPS)))) for service in range(len(SERVICES))]
        else:  # a few: services decided one by one, from lists
            updates = [RouteUpdate(PEER, withdrawn=(RouteKey(SERVICES[service], hop + 1),)) if what is None
                       else RouteUpdate(PEER, (route(service, hop, what),)) for (service, hop), what in changes.items()]
        for engine in engines:
            for update in updates:
                engine.on_event(update, now)
            engine.step(now)
        ours, every = engines
        ours.flaps.check_invariants()
        assert ours.flaps.flaps == every.flaps.flaps
        assert ours.flaps._entries == every.flaps._entries
        assert ([(o.decision.weights, o.decision.excluded) for o in ours.outcomes()]
                == [(o.decision.weights, o.decision.excluded) for o in every.outcomes()])
        assert ours.next_due() == every.next_due()
    assert ours.flaps.flaps == every.flaps.flaps


half_lives = st.sampled_from([5.0, 15.0, 60.0])
histories = st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["vanish", "appear", "raise", "clear", "drain",
                                                                   "undrain"]), st.floats(0.0, 2_000.0)),
                     max_size=40)


@settings(max_examples=200, deadline=None)
@given(histories, st.dictionaries(st.integers(0, 7), half_lives), st.floats(0.0, 5_000.0))
def test_forget_with_the_shortest_half_life_drops_what_asking_each_entry_drops(
        history: list[tuple[int, str, float]], own: dict[int, float], later: float) -> None:
    """``forget(shortest=)`` skips asking the half-life of an entry touched recently by the shortest one: it
    drops exactly the entries that asking each entry's half-life drops."""
    keys = [InstanceKey(ServiceId(SERVICES[n % len(SERVICES)]), HOPS[n % len(HOPS)]) for n in range(8)]
    half_life = {key: own.get(n, 15.0) for n, key in enumerate(keys)}
    trackers = [FlapTracker(), FlapTracker()]
    now = 0.0
    for n, what, step in history:
        now += step
        params = FlapDampening(half_life=half_life[keys[n]], max_suppress=4 * half_life[keys[n]])
        for tracker in trackers:
            if what == "vanish":
                tracker.vanished(keys[n], now)
            elif what == "appear":
                tracker.appeared(keys[n], params, now)
            elif what in ("raise", "clear"):
                tracker.flags(keys[n], what == "raise", params, now)
            else:
                tracker.draining(keys[n], what == "drain", now)
    now += later
    shortest = min([15.0, *own.values()])
    asked = trackers[0].forget(now, half_life.__getitem__)
    skipped = trackers[1].forget(now, half_life.__getitem__, shortest=shortest)
    assert asked == skipped
    assert {key for key in keys if trackers[0].known(key)} == {key for key in keys if trackers[1].known(key)}
    trackers[1].check_invariants()
