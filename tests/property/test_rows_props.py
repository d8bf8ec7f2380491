"""A step's candidates read as rows (``Rib.rows``) are the candidates ``Rib.candidates`` builds, and the router
decides the same with them.

- Row by row: two RIBs with the same history, one read with ``candidates`` per service and one with ``rows``:
  every candidate alike (metrics, state, hold, age, path metrics), the same rejections reported, and the
  batch decision's columns (``block_of``) those ``columns.read`` makes of the lists.
- End to end: two routers fed the same UPDATEs, one deciding every block from rows and one from lists
  (``owner.ROWS_MIN`` out of reach): the same decisions, reasons, exclusions and desired state, step after
  step, with flags raised and cleared (flap dampening), withdrawals and metrics that expire.
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.engine import owner
from dyncast_bgp.engine.assess import Standing
from dyncast_bgp.engine.columns import Block, read
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.eligibility import flap_damped
from dyncast_bgp.engine.owner import RouterEngine, decision_line
from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.engine.rows import CandidateRows, Flat, block_of
from dyncast_bgp.engine.trust import TrustPolicy
from dyncast_bgp.model import IPAddress, PathMetrics, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import Route, RouteKey, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics
from tests.property.test_columnar import agent_path
from tests.property.test_fastdecode import any_raw

PEERS = [ipaddress.ip_address(text) for text in ("192.0.2.1", "192.0.2.2")]
HOPS = [ipaddress.ip_address(f"198.51.100.{n}") for n in range(1, 7)] + [ipaddress.ip_address("2001:db8::7")]
PREFIXES = [ipaddress.ip_network(f"203.0.113.{n}/32") for n in range(20)]
path_values = st.one_of(st.none(), st.floats(0, 1e5), st.sampled_from([math.nan, math.inf]))
measured = st.builds(PathMetrics, rtt_mean_us=path_values, loss_mean=st.one_of(st.none(), st.floats(0, 1)),
                     reachable=st.booleans())

announcement = st.tuples(st.sampled_from(range(len(PEERS))), st.sampled_from(range(len(PREFIXES))),
                         st.sampled_from(range(len(HOPS))), st.integers(0, 2),
                         st.one_of(agent_path, agent_path, agent_path, st.lists(any_raw, max_size=7).map(tuple)),
                         # (8 octets each: the parser refuses any other length before the RIB)
                         st.floats(0, 100))


def applied(rib: Rib, history: list[tuple[int, int, int, int, tuple[bytes, ...], float]]) -> None:
    for peer, prefix, hop, path_id, raw, at in sorted(history, key=lambda item: item[-1]):
        rib.apply(RouteUpdate(PEERS[peer], (Route(PREFIXES[prefix], HOPS[hop], path_id, (65001,),
                                                  ext_raw=b"".join(raw)),)), at)


def _path_of(table: dict[IPAddress, PathMetrics]) -> Callable[[IPAddress], PathMetrics]:
    return lambda binding: table.get(binding, PathMetrics())


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(announcement, max_size=40), st.dictionaries(st.sampled_from(HOPS), measured),
       st.one_of(st.none(), st.floats(1, 100)), st.sampled_from(["trusted", "ignored", "clamped"]),
       st.floats(0, 200))
def test_rows_are_the_candidates(history: list[tuple[int, int, int, int, tuple[bytes, ...], float]],
                                 table: dict[IPAddress, PathMetrics], max_age: float | None, mode: str,
                                 now: float) -> None:
    policy = TrustPolicy(replace(TrustPolicy().default, metrics=mode, min_utilization=1.0, max_capacity=50.0))
    lists_rib, rows_rib = Rib(trust=policy), Rib(trust=policy)
    applied(lists_rib, history)
    applied(rows_rib, history)
    services = [ServiceId(prefix) for prefix in PREFIXES]  # some without a path: empty rows
    path_of = _path_of(table)
    for _ in range(2):  # again: the paths' screened metrics are kept from the first read
        expected = [lists_rib.candidates(service, now, path_of=path_of, max_age=max_age) for service in services]
        rows = rows_rib.rows(services, now, path_of=path_of, max_age=max_age)
        for service, want, got in zip(services, expected, rows, strict=True):
            assert type(got) is CandidateRows and len(got) == len(want)
            assert list(got) == want, service
        assert rows_rib.take_rejections() == lists_rib.take_rejections()
        assert rows_rib.counters == lists_rib.counters
        rows = rows_rib.rows(services, now, path_of=path_of, max_age=max_age)  # fresh: no candidate made yet
        held = next((index for index, want in enumerate(expected) if want), None)
        if held is not None:  # a flap hold on the first instance of the first service with one
            rows[held].hold(0, flap_damped(3.0))
            expected[held] = [replace(expected[held][0], hold=flap_damped(3.0)), *expected[held][1:]]
        for got, want in zip(rows, expected, strict=True):  # read from the columns, the candidates not built
            assert [got.standing(index) for index in range(len(got))] == list(map(Standing.of, want))
        by_count: dict[int, list[int]] = {}
        for index, want in enumerate(expected):
            if want:
                by_count.setdefault(len(want), []).append(index)
        for members in by_count.values():
            chosen = [services[index] for index in members]
            for agent_scores in (False, True):
                got_block = block_of(chosen, [rows[index] for index in members], agent_scores=agent_scores)
                assert got_block is not None and type(got_block.candidates) is Flat
                assert [got_block.candidates.standing(position) for position in range(len(got_block.candidates))] \
                    == [Standing.of(want) for index in members for want in expected[index]]
                same_block(got_block, read(chosen, [expected[index] for index in members], agent_scores=agent_scores))


def same_block(got: Block, want: Block) -> None:
    assert got.services == want.services and got.count == want.count
    assert got.keys == want.keys and got.idents == want.idents
    assert list(got.candidates) == list(want.candidates)
    assert got.metrics.keys() == want.metrics.keys()
    for name in want.metrics:
        np.testing.assert_array_equal(got.metrics[name], want.metrics[name], err_msg=name)
    for field in ("rtt", "loss", "reachable", "plain"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    # usable: columns.read marks a service unusable for a NaN or infinite path value; so does block_of
    np.testing.assert_array_equal(got.usable, want.usable)


def test_block_of_needs_rows_of_one_batch() -> None:
    rib = Rib()
    applied(rib, [(0, 0, 0, 0, (), 0.0), (0, 1, 0, 0, (), 0.0)])
    services = [ServiceId(PREFIXES[0]), ServiceId(PREFIXES[1])]
    first = rib.rows(services[:1], 1.0, path_of=_path_of({}))
    second = rib.rows(services[1:], 1.0, path_of=_path_of({}))
    assert block_of(services, first + second, agent_scores=False) is None  # two batches
    assert block_of(services, rib.rows(services, 1.0, path_of=_path_of({})), agent_scores=False) is not None
    lists = [rib.candidates(service, 1.0, path_of=_path_of({})) for service in services]
    assert block_of(services, lists, agent_scores=False) is None
    assert block_of(services[::-1], rib.rows(services, 1.0, path_of=_path_of({})), agent_scores=False) is None


# ---------------------------------------------------------------- the router, end to end

SERVICES = 20  # more than ROWS_MIN: a step over all of them reads rows
round_of = st.lists(st.tuples(st.sampled_from(range(SERVICES)), st.sampled_from(range(4)), agent_path,
                              st.booleans()), min_size=1, max_size=60)


def updates_of(changes: list[tuple[int, int, tuple[bytes, ...], bool]]) -> list[RouteUpdate]:
    result = []
    for service, hop, raw, withdraw in changes:
        if withdraw:
            result.append(RouteUpdate(PEERS[0], (), (RouteKey(PREFIXES[service], hop),)))
        else:
            result.append(RouteUpdate(PEERS[0], (Route(PREFIXES[service], HOPS[hop], hop, (65001,),
                                                       ext_raw=b"".join(raw)),)))
    return result


def fed(engine: RouterEngine, updates: list[RouteUpdate], now: float, *, rows: bool) -> list[Outcome]:
    """The engine's step after ``updates``, its blocks read as rows or (``rows`` False) as lists."""
    for update in updates:
        engine.on_event(update, now)
    saved = owner.ROWS_MIN
    if not rows:
        owner.ROWS_MIN = 1 << 30
    try:
        return engine.step(now)
    finally:
        owner.ROWS_MIN = saved


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(round_of, min_size=1, max_size=5), st.one_of(st.none(), st.just(50.0)))
def test_the_router_decides_alike_from_rows_and_lists(rounds: list[list[tuple[int, int, tuple[bytes, ...], bool]]],
                                                      max_age: float | None) -> None:
    config = RouterConfig.model_validate({"metrics_max_age": max_age})
    engines = {"rows": RouterEngine(config), "lists": RouterEngine(config)}
    start = [(service, hop, raw, False) for service in range(SERVICES) for hop in range(3)
             for raw in [rounds[0][0][2]]]
    now = 0.0
    for changes in [start, *rounds]:
        now += 30.0
        seen = {}
        for name, engine in engines.items():
            changed = fed(engine, updates_of(changes), now, rows=name == "rows")
            seen[name] = (sorted(str(outcome.decision.service) for outcome in changed),
                          [(decision_line(outcome.decision), dict(outcome.decision.reasons), outcome.status,
                            outcome.fallback) for outcome in engine.outcomes()],
                          engine.desired())
        assert seen["rows"] == seen["lists"]


def _metrics(cpu: float, flags: StateFlag) -> tuple[bytes, ...]:
    return tuple(c.pack() for c in encode_metrics({"cpu_utilization": cpu, "capacity": 100}, flags=flags, version=1))


@pytest.mark.parametrize("flapping", [StateFlag.OVERLOADED, StateFlag.DRAINING])
def test_a_flap_damped_instance_is_held_out_alike(flapping: StateFlag) -> None:
    """An instance whose overloaded flag comes and goes is held out (flap dampening) from rows as from lists;
    a draining one is maintenance, never damped."""
    engines = {"rows": RouterEngine(RouterConfig()), "lists": RouterEngine(RouterConfig())}
    held = set()
    for number in range(8):
        now = float(number)
        changes = [(service, hop, _metrics(20.0 + hop, StateFlag.NONE), False)
                   for service in range(SERVICES) for hop in range(3)]
        changes[1] = (0, 1, _metrics(21.0, flapping if number % 2 == 0 else StateFlag.NONE), False)
        seen = {}
        for name, engine in engines.items():
            fed(engine, updates_of(changes), now, rows=name == "rows")
            seen[name] = ([(decision_line(outcome.decision), dict(outcome.decision.reasons))
                           for outcome in engine.outcomes()], engine.desired())
            outcome = engine.outcome(ServiceId(PREFIXES[0]))
            assert outcome is not None
            held |= {reason for reason in outcome.decision.excluded.values() if "flap-damped" in reason}
        assert seen["rows"] == seen["lists"], number
    assert bool(held) == (flapping is StateFlag.OVERLOADED)  # the case was met: damped, or not as maintenance
