"""The batch decision (engine.batch, engine.columns, engine.vector) and the router's use of it (engine.owner)."""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterator

import pytest

from dyncast_bgp.config.schema import RouterConfig, ServicePolicy
from dyncast_bgp.deferred import Deferred
from dyncast_bgp.engine import batch, owner
from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.candidate import Candidate, ident_of
from dyncast_bgp.engine.columns import read
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.engine.memo import IdentityMemo
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.engine.views import KeyedValues
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    InstanceState,
    MetricsView,
    PathMetrics,
    ServiceId,
    StateFlag,
)
from dyncast_bgp.wire.exabgp_json import Route, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.ip_address("10.0.0.3")
POLICY = ServicePolicy()
SERVICES = [ServiceId(ipaddress.IPv4Network((0x0A000000 + n, 32))) for n in range(60)]
BINDINGS = [ipaddress.IPv4Address(0xC6336400 + n) for n in range(16)]


def mixed(service: ServiceId, rng: random.Random) -> list[Candidate]:
    """The benchmark's mix: loads, capacities, paths; a few draining, down, overloaded or unreachable."""
    out = []
    for binding in BINDINGS:
        capacity = rng.choice((100.0, 200.0, 400.0, 800.0))
        cpu = rng.uniform(5.0, 99.0)
        values = {"cpu_utilization": cpu, "capacity": capacity, "active_sessions": float(int(capacity * cpu / 100))}
        roll = rng.random()
        state = InstanceState.DOWN if roll < 0.02 else InstanceState.DRAINING if roll < 0.06 else InstanceState.ACTIVE
        flags = StateFlag.OVERLOADED if rng.random() < 0.05 else StateFlag.NONE
        path = PathMetrics(rtt_mean_us=rng.uniform(500.0, 30_000.0), loss_mean=rng.uniform(0.0, 0.01),
                           reachable=rng.random() > 0.01)
        out.append(Candidate(InstanceKey(service, binding), state, ComputeMetrics(MetricsView(values), flags), path))
    return out


@pytest.fixture
def batched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many services each call of the column path decided (not handed back to ``decide``)."""
    counts: list[int] = []
    block = batch._decide_block

    def spy(requests: list[Request], p: object, now: float) -> list[Outcome | None]:
        outcomes = block(requests, p, now)  # type: ignore[arg-type]
        counts.append(sum(outcome is not None for outcome in outcomes))
        return outcomes

    monkeypatch.setattr(batch, "_decide_block", spy)
    yield counts


def same(got: Outcome, expected: Outcome) -> None:
    assert list(got.decision.weights.items()) == list(expected.decision.weights.items())
    assert list(got.decision.excluded.items()) == list(expected.decision.excluded.items())
    assert got.memory == expected.memory and list(got.memory.weights.items()) == list(expected.memory.weights.items())
    assert (got.status, got.fallback, got.converging) == (expected.status, expected.fallback, expected.converging)


def test_the_benchmark_mix_is_decided_by_columns_exactly_as_decide_does(batched: list[int]) -> None:
    rng = random.Random(3)
    oracle: list[ServiceMemory | None] = [None] * len(SERVICES)
    memories: list[ServiceMemory | None] = [None] * len(SERVICES)
    for now in (0.0, 1.0, 7.0, 8.0, 30.0, 31.0, 90.0):
        lists = [mixed(service, rng) for service in SERVICES]
        expected = [decide(service, candidates, POLICY, memory, now)
                    for service, candidates, memory in zip(SERVICES, lists, oracle, strict=True)]
        got = decide_many([Request(service, candidates, POLICY, memory)
                           for service, candidates, memory in zip(SERVICES, lists, memories, strict=True)], now)
        for g, e in zip(got, expected, strict=True):
            same(g, e)
        oracle, memories = [o.memory for o in expected], [o.memory for o in got]
    assert sum(batched) >= 0.9 * 7 * len(SERVICES)  # nearly all by the columns (some have nothing eligible)
    assert got[0] == expected[0]  # and the lazily made reasons and explanation too


def test_small_groups_other_policies_and_caps_go_to_decide(batched: list[int]) -> None:
    rng = random.Random(5)
    lists = [mixed(service, rng) for service in SERVICES[:20]]
    best = ServicePolicy(policy="best")
    requests = [Request(service, candidates, best if index % 2 else POLICY, None,
                        {candidates[0].key: 0.1} if index % 5 == 0 else None)
                for index, (service, candidates) in enumerate(zip(SERVICES, lists, strict=False))]
    got = decide_many(requests, 0.0)
    for g, r in zip(got, requests, strict=True):
        same(g, decide(r.service, r.candidates, r.policy, r.memory, 0.0, caps=r.caps))
    assert batched == []  # 8 weighted services without caps: below MIN_BATCH
    decide_many(requests, 0.0, min_batch=2)
    assert batched == [8]


def test_reasons_and_explanation_are_made_on_first_read(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(9)
    requests = [Request(service, mixed(service, rng), POLICY) for service in SERVICES[:20]]
    calls: list[ServiceId] = []
    one = batch._one

    def counting(request: Request, now: float) -> Outcome:
        calls.append(request.service)
        return one(request, now)

    monkeypatch.setattr(batch, "_one", counting)
    got = decide_many(requests, 0.0)
    assert calls == []
    reasons = dict(got[3].decision.reasons)
    assert got[3].explain == decide(requests[3].service, requests[3].candidates, POLICY, None, 0.0).explain
    assert calls == [SERVICES[3]]  # once for both
    assert reasons == dict(decide(requests[3].service, requests[3].candidates, POLICY, None, 0.0).decision.reasons)


def test_bad_input_raises_what_decide_raises() -> None:
    rng = random.Random(1)
    requests = [Request(service, mixed(service, rng), POLICY) for service in SERVICES[:20]]
    twice = [*requests[4].candidates[:-1], requests[4].candidates[0]]
    foreign = [*requests[6].candidates[:-1], mixed(SERVICES[40], rng)[-1]]
    for candidates in (twice, foreign):
        bad = [*requests[:4], requests[4]._replace(candidates=candidates), *requests[5:]]
        with pytest.raises(ValueError) as raised:
            decide_many(bad, 0.0)
        with pytest.raises(ValueError) as expected:
            decide(SERVICES[4], candidates, POLICY, None, 0.0)
        assert str(raised.value) == str(expected.value)


def test_unsorted_candidates_are_decided_by_decide(batched: list[int]) -> None:
    rng = random.Random(2)
    lists = [mixed(service, rng) for service in SERVICES[:20]]
    lists[7] = lists[7][::-1]
    got = decide_many([Request(service, candidates, POLICY) for service, candidates in zip(SERVICES, lists,
                                                                                             strict=False)], 0.0)
    same(got[7], decide(SERVICES[7], lists[7], POLICY, None, 0.0))
    assert batched == [19]


def test_idents_from_columns_are_ident_of() -> None:
    v4 = [InstanceKey(SERVICES[0], ipaddress.ip_address("198.51.100.7"), path_id) for path_id in (0, 1, 2**32 - 1)]
    v6 = [InstanceKey(SERVICES[1], ipaddress.ip_address(text)) for text in ("::1", "::ffff:198.51.100.7",
                                                                             "2001:db8::1")]
    for keys in (v4, v6):
        candidates = [Candidate(key, InstanceState.ACTIVE, ComputeMetrics(), PathMetrics()) for key in keys]
        block = read([keys[0].service], [candidates], agent_scores=False)
        assert block.idents == [ident_of(key) for key in keys]
        assert block.usable.tolist() == [True]


def test_keyed_values_lookup() -> None:
    plain = KeyedValues([1, 3], [0.25, 0.75])
    assert plain.lookup([1, 3], 0.0) == [0.25, 0.75]
    assert plain.lookup([1, 2, 3], 0.0) == [0.25, 0.0, 0.75]
    wider = KeyedValues([1, 3], [0.25, 0.75], wider=([1, 2, 3], [0.25, 0.0, 0.75], 0.0))
    assert wider.lookup([1, 2, 3], 0.0) == [0.25, 0.0, 0.75]
    assert wider.lookup([1, 2, 3], -1.0) == [0.25, -1.0, 0.75]  # another default: not the wider layout
    assert wider == plain and dict(wider) == {1: 0.25, 3: 0.75}


def _route(binding: ipaddress.IPv4Address, path_id: int, cpu: float) -> Route:
    communities = tuple(c.pack() for c in encode_metrics({"cpu_utilization": cpu, "capacity": 100}))
    return Route(prefix=SERVICES[0].prefix, next_hop=binding, path_id=path_id, ext_raw=b"".join(communities))


def test_the_router_decides_every_dirty_service_in_one_batch(batched: list[int]) -> None:
    engine = RouterEngine(RouterConfig.model_validate({"defaults": {"min_dwell": 0}}))
    rng = random.Random(4)
    memories: dict[ServiceId, ServiceMemory] = {}
    for now in (0.0, 1.0, 2.0):
        routes = tuple(route._replace(prefix=service.prefix) for service in SERVICES
                       for path_id, binding in enumerate(BINDINGS[:4], start=1)
                       for route in [_route(binding, path_id, rng.uniform(5, 95))])
        engine.on_event(RouteUpdate(PEER, routes), now)
        changed = engine.step(now)
        assert len(changed) == len(SERVICES)
        for outcome in changed:
            service = outcome.decision.service
            candidates = engine.rib.candidates(service, now, path_of=engine.path_of,
                                               max_age=engine.config.metrics_max_age)
            expected = decide(service, candidates, engine.config.policy_for(service), memories.get(service), now)
            same(outcome, expected)
            memories[service] = outcome.memory
    assert batched == [len(SERVICES)] * 3


def _fed_engine(seed: int) -> RouterEngine:
    """An engine that learned 4 instances of every service in SERVICES, with metrics from ``seed``."""
    engine = RouterEngine(RouterConfig.model_validate({"defaults": {"min_dwell": 0}}))
    rng = random.Random(seed)
    routes = tuple(route._replace(prefix=service.prefix) for service in SERVICES
                   for path_id, binding in enumerate(BINDINGS[:4], start=1)
                   for route in [_route(binding, path_id, rng.uniform(5, 95))])
    engine.on_event(RouteUpdate(PEER, routes), 0.0)
    return engine


def test_a_step_in_blocks_decides_block_by_block_what_one_batch_does(batched: list[int],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    whole = {o.decision.service: o for o in _fed_engine(7).step(0.0)}
    monkeypatch.setattr(owner, "STEP_BLOCK", 20)
    batched.clear()
    blocks = {o.decision.service: o for o in _fed_engine(7).step(0.0)}
    assert batched == [20, 20, 20]
    assert list(blocks) == sorted(whole) == SERVICES
    for service, outcome in blocks.items():
        same(outcome, whole[service])


def test_a_step_with_a_limit_leaves_the_rest_pending_and_slices_add_up_to_one_step() -> None:
    one, sliced = _fed_engine(9), _fed_engine(9)
    assert one.pending == sliced.pending == len(SERVICES)
    whole = {o.decision.service: o for o in one.step(0.0)}
    assert one.pending == 0
    slices = []
    while sliced.pending:
        slices.append([o.decision.service for o in sliced.step(0.0, limit=7)])
    assert [len(s) for s in slices] == [7] * 8 + [4]
    assert [service for piece in slices for service in piece] == SERVICES  # the first in service order first
    for service in SERVICES:
        same(sliced.outcome(service), whole[service])  # type: ignore[arg-type]
    assert sliced.desired() == one.desired()
    assert sliced.step(0.5, limit=7) == [] and sliced.pending == 0  # nothing new, no review due yet


def test_slices_go_round_so_a_service_dirtied_again_waits_behind_those_not_decided_yet() -> None:
    engine = _fed_engine(11)
    first = [o.decision.service for o in engine.step(0.0, limit=7)]
    assert first == SERVICES[:7]
    rng = random.Random(12)
    again = tuple(_route(binding, path_id, rng.uniform(5, 95))._replace(prefix=service.prefix)
                  for service in first for path_id, binding in enumerate(BINDINGS[:4], start=1))
    engine.on_event(RouteUpdate(PEER, again), 0.1)  # the first slice's services have new metrics already
    decided = [o.decision.service for o in engine.step(0.1, limit=7)]
    assert decided == SERVICES[7:14]  # not the first seven again: they wait for the round to come back
    while engine.pending > 7:
        decided += [o.decision.service for o in engine.step(0.1, limit=7)]
    assert decided + [o.decision.service for o in engine.step(0.1, limit=7)] == SERVICES[7:] + SERVICES[:7]
    assert engine.pending == 0


def test_a_service_new_since_the_round_began_comes_after_it_in_order() -> None:
    """A round of slices is sorted when it begins: a service learned meanwhile (here one whose prefix sorts
    among those still waiting) comes after the round's slices, not inside them (the last few, fitting in one
    slice, go in service order with it), and nothing is decided twice or lost."""
    engine = _fed_engine(14)
    assert [o.decision.service for o in engine.step(0.0, limit=7)] == SERVICES[:7]
    newcomer = ServiceId(ipaddress.IPv4Network((0x0A000000 + 30, 31)))  # 10.0.0.30/31: sorts between 29 and 30
    assert SERVICES[29].sort_key < newcomer.sort_key < SERVICES[30].sort_key
    engine.on_event(RouteUpdate(PEER, (_route(BINDINGS[0], 1, 40.0)._replace(prefix=newcomer.prefix),)), 0.1)
    decided: list[ServiceId] = []
    while engine.pending:
        decided += [o.decision.service for o in engine.step(0.1, limit=7)]
    assert decided[:49] == SERVICES[7:56]  # seven slices of the round, as it was sorted
    assert decided[49:] == [newcomer, *SERVICES[56:]]  # the rest fit in one slice: all in service order


def test_first_services_go_before_the_rest_and_a_limit_below_one_is_refused() -> None:
    engine = _fed_engine(13)
    last = SERVICES[-1]
    assert [o.decision.service for o in engine.step(0.0, limit=3, first=[last, SERVICES[5]])] == \
        [last, SERVICES[5], SERVICES[0]]
    assert [o.decision.service for o in engine.step(0.0, limit=2, first=[last])] == SERVICES[1:3]  # decided already
    with pytest.raises(ValueError, match="at least 1"):
        engine.step(0.0, limit=0)


def test_path_of_is_remembered_until_a_measurement_changes() -> None:
    static = PathMetrics(rtt_mean_us=900.0)
    engine = RouterEngine(RouterConfig(), static_paths=lambda binding: static)
    binding, twin = BINDINGS[0], ipaddress.IPv4Address(int(BINDINGS[0]))  # equal, another object
    assert engine.path_of(binding) is static and engine.path_of(twin) is static
    measured = PathMetrics(rtt_mean_us=1500.0, loss_mean=0.01)
    engine.on_path(twin, measured)  # reported for an equal object: every reader sees it at once
    assert engine.path_of(binding) == measured and engine.path_of(twin) == measured
    engine.on_path(binding, PathMetrics(reachable=False))
    assert not engine.path_of(twin).reachable


def test_identity_memo_remembers_per_object_within_its_limit() -> None:
    made: list[ipaddress.IPv4Address] = []

    def make(binding: ipaddress.IPv4Address) -> str:
        made.append(binding)
        return str(binding)

    memo: IdentityMemo[ipaddress.IPv4Address, str] = IdentityMemo(limit=2)
    twin = ipaddress.IPv4Address(int(BINDINGS[0]))  # equal to BINDINGS[0], another object
    assert [memo.get(b, make) for b in (BINDINGS[0], BINDINGS[0], twin)] == [str(BINDINGS[0])] * 3
    assert made == [BINDINGS[0], twin]  # the twin is made again (its own entry), the same object is not
    memo.get(BINDINGS[1], make)  # a third entry: the full memo is emptied first
    memo.get(BINDINGS[0], make)
    assert made[2:] == [BINDINGS[1], BINDINGS[0]]
    memo.clear()
    memo.get(BINDINGS[1], make)
    assert made[-1] is BINDINGS[1] and len(made) == 5


def test_with_a_deferred_release_the_engine_holds_each_outcome_it_replaces() -> None:
    """dyncast_bgp/deferred.py: the outcomes a step replaces are held, not freed inside it; none is lost."""
    deferred = Deferred()
    engine = RouterEngine(RouterConfig.model_validate({"defaults": {"min_dwell": 0}}), deferred=deferred)
    rng = random.Random(11)
    kept: list[dict[ServiceId, Outcome | None]] = []
    for now in (0.0, 1.0):
        routes = tuple(route._replace(prefix=service.prefix) for service in SERVICES
                       for path_id, binding in enumerate(BINDINGS[:4], start=1)
                       for route in [_route(binding, path_id, rng.uniform(5, 95))])
        engine.on_event(RouteUpdate(PEER, routes), now)
        engine.step(now)
        kept.append({service: engine.outcome(service) for service in SERVICES})
    held = deferred._held
    assert len(held) == len(SERVICES)  # the first step replaced nothing; the second, every service's outcome
    assert sorted(map(id, held)) == sorted(id(outcome) for outcome in kept[0].values())
    assert all(kept[1][service] is not kept[0][service] for service in SERVICES)
    assert deferred.clear() == len(SERVICES) and not deferred
