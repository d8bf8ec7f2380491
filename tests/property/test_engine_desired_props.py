"""``RouterEngine.desired()`` reuses what it built before (a service's target while its decision stands, its
instances' order and forwardings while the same keys come in the same order). Whatever the history, the
desired state equals one built from nothing for the same decisions."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.dataplane.desired import DesiredState
from dyncast_bgp.engine.batch import MIN_BATCH
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.exabgp_json import Route, RouteKey, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.IPv4Address("192.0.2.1")
SERVICES = [ipaddress.IPv4Network((0xCB007100 + n, 32)) for n in range(MIN_BATCH + 2)]  # 203.0.113.n/32
HOPS = [ipaddress.IPv4Address(0xC6336400 + n) for n in range(1, 5)]  # 198.51.100.1-4

announcement = st.tuples(st.floats(1.0, 99.0), st.sampled_from([StateFlag.NONE, StateFlag.NONE, StateFlag.DRAINING,
                                                                 StateFlag.OVERLOADED]))
change = st.one_of(st.none(), announcement)  # None: withdrawn
round_of_changes = st.dictionaries(st.tuples(st.integers(0, len(SERVICES) - 1), st.integers(0, len(HOPS) - 1)),
                                   change, max_size=24)


def route(service: int, hop: int, cpu: float, flags: StateFlag) -> Route:
    communities = encode_metrics({"cpu_utilization": cpu, "capacity": 100, "active_sessions": 10}, flags=flags)
    return Route(SERVICES[service], HOPS[hop], hop + 1, (65001,), ext_raw=b"".join(c.pack() for c in communities))


def from_nothing(engine: RouterEngine) -> DesiredState:
    """The desired state built anew for the engine's decisions: no target, no layout kept."""
    targets = []
    for service, entry in engine._services.items():
        target = engine._target(service, dataclasses.replace(entry, target=None, layout=None))
        if target is not None:
            targets.append(target)
    return DesiredState.of(targets)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(round_of_changes, st.sampled_from([0.5, 5.0, 400.0])), min_size=1, max_size=6))
def test_the_desired_state_equals_one_built_from_nothing(rounds: list[tuple[dict[tuple[int, int], object], float]]
                                                         ) -> None:
    engine = RouterEngine(RouterConfig())
    now = 0.0
    for service in range(len(SERVICES)):  # every service starts with every instance: the batch decides them
        engine.on_event(RouteUpdate(PEER, tuple(route(service, hop, 50.0, StateFlag.NONE)
                                                for hop in range(len(HOPS)))), now)
    engine.step(now)
    assert engine.desired() == from_nothing(engine)
    for changes, later in rounds:
        now += later
        for (service, hop), what in changes.items():
            if what is None:
                update = RouteUpdate(PEER, withdrawn=(RouteKey(SERVICES[service], hop + 1),))
            else:
                assert isinstance(what, tuple)
                update = RouteUpdate(PEER, (route(service, hop, *what),))
            engine.on_event(update, now)
        engine.step(now)
        assert engine.desired() == from_nothing(engine)


full_round = st.lists(announcement, min_size=len(SERVICES) * len(HOPS), max_size=len(SERVICES) * len(HOPS))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(full_round, st.sampled_from([0.5, 5.0, 400.0])), min_size=1, max_size=4))
def test_after_whole_recomputes_the_desired_state_equals_one_built_from_nothing(
        rounds: list[tuple[list[tuple[float, StateFlag]], float]]) -> None:
    """Every instance of every service announced anew each round (a full recompute: one block of the batch
    decision, its exclusions laid out with the weights): the targets reused and relisted equal new ones."""
    engine = RouterEngine(RouterConfig())
    now = 0.0
    for announced, later in [([(50.0, StateFlag.NONE)] * len(SERVICES) * len(HOPS), 0.0), *rounds]:
        now += later
        for service in range(len(SERVICES)):
            row = announced[service * len(HOPS):(service + 1) * len(HOPS)]
            engine.on_event(RouteUpdate(PEER, tuple(route(service, hop, cpu, flags)
                                                    for hop, (cpu, flags) in enumerate(row))), now)
        engine.step(now)
        assert engine.decided == len(SERVICES)
        assert engine.desired() == from_nothing(engine)
