"""Canary rollout (issue 6 item 3): plan files, state machine, steer on decide(), router verbs and state file."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.cli import build_parser
from dyncast_bgp.config.loader import parse
from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.ctl.commands import build_request
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.ctl.render import render
from dyncast_bgp.dataplane.desired import ServiceTarget
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import decide
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId, StateFlag
from dyncast_bgp.ops import rollout as machine
from dyncast_bgp.ops.rollout import Kpis, Plan, Sample, Stage, Status
from dyncast_bgp.ops.rolloutbook import RolloutBook, read_document
from dyncast_bgp.ops.rolloutplan import PlanError, load_plan, plan_from_document
from dyncast_bgp.ops.steer import RESET, VersionSteer, steer_candidates, without_new_version
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.wire.exabgp_json import parse_line
from dyncast_bgp.wire.metrics import encode_metrics
from tests.unit.test_router_shift import SlowDataplane

SVC = ServiceId.parse("203.0.113.10/32")
PLAN_YAML = """
name: web-v2
service: 203.0.113.10
version: 2
stages: [{share: 10, hold: 10s}, {share: 30, hold: 1m}, {share: 100, hold: 60}]
kpis: {max_rtt_ms: 50, max_service_delay_ms: 200, max_metrics: {queued_requests: 100}}
rollback: hard
"""


def plan(**changes: object) -> Plan:
    base = Plan(SVC, 2, (Stage(0.1, 10), Stage(0.3, 60), Stage(1.0, 60)),
                Kpis(max_rtt_ms=50, max_service_delay_ms=200))
    return Plan(**{**{f: getattr(base, f) for f in base.__dataclass_fields__}, **changes})


GOOD = Sample(instances=1, rtt_ms=5, service_delay_ms=20)
SLOW = Sample(instances=1, rtt_ms=5, service_delay_ms=900)


# ------------------------------------------------------------ plan files

def test_plan_file_percent_and_durations(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text(PLAN_YAML)
    got = load_plan(path)
    assert got.service == SVC and got.version == 2 and got.hard_rollback and got.name == "web-v2"
    assert got.stages == (Stage(0.1, 10.0), Stage(0.3, 60.0), Stage(1.0, 60.0))
    assert got.kpis.max_metrics == {"queued_requests": 100.0}


def test_plan_errors_say_where() -> None:
    with pytest.raises(PlanError) as caught:
        plan_from_document({"service": "203.0.113.10/24x", "version": -1,
                            "stages": [{"share": 30, "hold": "1m"}, {"share": 10, "hold": "x"}], "extra": 1})
    text = str(caught.value)
    for where in ("service:", "version:", "stages.1.hold:", "extra:"):
        assert where in text, text


def test_error_rate_kpi_and_metric_names_are_checked() -> None:
    base = {"service": "203.0.113.10/32", "version": 2, "stages": [{"share": 10, "hold": 1}]}
    got = plan_from_document({**base, "kpis": {"max_error_rate": 5, "max_metrics": {"queued_requests": 9}}})
    assert got.kpis.max_metrics == {"error_rate": 5.0, "queued_requests": 9.0}
    assert machine.breach(got.kpis, Sample(instances=1, metrics={"error_rate": 12.5})) == "error_rate 12.5 over 5"
    assert machine.breach(got.kpis, Sample(instances=1, metrics={"error_rate": 4.0})) is None
    for kpis, where in (({"max_metrics": {"error_rte": 5}}, r"kpis.max_metrics: .*unknown metric\(s\) error_rte"),
                        ({"max_error_rate": 101}, "kpis.max_error_rate"),
                        ({"max_error_rate": 1, "max_metrics": {"error_rate": 2}}, "both set")):
        with pytest.raises(PlanError, match=where):
            plan_from_document({**base, "kpis": kpis})


# ------------------------------------------------------------ the state machine

def test_stages_advance_after_their_hold_once_a_sample_was_seen() -> None:
    r = machine.start(plan(), 0.0)
    assert r.share == 0.1
    r = machine.observe(r, None, 20.0)
    assert r.stage == 0  # held long enough, but nothing of the new version was seen
    r = machine.observe(r, GOOD, 21.0)
    assert (r.stage, r.share, r.held) == (1, 0.3, 0.0)
    assert machine.next_due(r) is None  # not observed yet in this stage
    r = machine.observe(r, GOOD, 30.0)
    assert machine.next_due(r) == 30.0 + 51.0
    r = machine.observe(r, GOOD, 90.0)
    assert (r.stage, r.status) == (2, Status.RUNNING)
    r = machine.observe(r, GOOD, 1000.0)
    assert (r.stage, r.status) == (2, Status.RUNNING)  # waits for commit
    committed = machine.commit(r, 1001.0)
    assert not isinstance(committed, str) and committed.status is Status.COMMITTED and committed.share is None


def test_a_breach_rolls_back_and_abort_and_commit_rules() -> None:
    r = machine.observe(machine.start(plan(), 0.0), GOOD, 11.0)
    assert r.stage == 1
    assert machine.commit(r, 12.0) == ("rollout of 203.0.113.10/32 is at stage 2 of 3: commit only from the "
                                       "last stage")
    back = machine.observe(r, SLOW, 12.0)
    assert back.status is Status.ROLLED_BACK and back.share == 0.0 and not back.hard
    assert back.reason == "KPI breach at stage 2: service_delay 900 ms over 200 ms"
    assert isinstance(machine.abort(back, 13.0), str) and isinstance(machine.resume(back, 13.0), str)
    hard = machine.abort(r, 12.0, hard=True)
    assert not isinstance(hard, str) and hard.status is Status.ROLLED_BACK and hard.hard


def test_breach_for_tolerates_a_short_breach_and_pause_keeps_watching() -> None:
    r = machine.start(plan(kpis=Kpis(max_service_delay_ms=200, breach_for=5)), 0.0)
    r = machine.observe(r, SLOW, 1.0)
    r = machine.observe(r, SLOW, 3.0)
    assert r.status is Status.RUNNING and r.breaching == 2.0
    r = machine.observe(r, GOOD, 4.0)
    assert r.breaching is None
    paused = machine.pause(r, 5.0)
    assert not isinstance(paused, str) and paused.status is Status.PAUSED and paused.share == 0.1
    still = machine.observe(paused, GOOD, 500.0)
    assert still.stage == 0 and still.held == paused.held  # the hold does not count while paused
    resumed = machine.resume(still, 501.0)
    assert not isinstance(resumed, str) and resumed.status is Status.RUNNING
    assert machine.observe(machine.observe(paused, SLOW, 501.0), SLOW, 507.0).status is Status.ROLLED_BACK


def test_persistence_round_trips_and_bad_documents_are_skipped() -> None:
    r = machine.observe(machine.observe(machine.start(plan(), 0.0), GOOD, 11.0), GOOD, 20.0)
    assert machine.from_dict(json.loads(json.dumps(machine.to_dict(r))), r.last) == r
    found, problems = read_document({"format": 1, "rollouts": [machine.to_dict(r), {"plan": {}}]}, 0.0)
    assert list(found) == [SVC] and len(problems) == 1 and "rollouts[1]: skipped" in problems[0]
    assert read_document({"format": 99}, 0.0)[1] == ["format 99 is not one this version reads (1-1)"]


# ------------------------------------------------------------ the steer on decide()

def candidate(address: str, version: int, *, delay: float = 1000) -> Candidate:
    key = InstanceKey(SVC, ipaddress.ip_address(address))
    metrics = ComputeMetrics(MetricsView({"capacity": 1000, "cpu_utilization": 10, "service_delay": delay}),
                             version=version)
    return Candidate(key, InstanceState.ACTIVE, metrics, PathMetrics(rtt_mean_us=1000, loss_mean=0.0))


def test_caps_bound_the_new_versions_share_and_a_rollback_holds_it_out() -> None:
    policy = ServicePolicy(max_step=1.0, min_dwell=0, smoothing=1.0)
    cands = [candidate("198.51.100.11", 1), candidate("198.51.100.12", 2), candidate("198.51.100.13", 2)]
    memory, previous = None, None
    for now in range(5):
        steered, caps, new = steer_candidates(cands, VersionSteer(2, 0.1), previous)
        outcome = decide(SVC, steered, policy, memory, float(now), caps=caps)
        memory, previous = outcome.memory, outcome.decision.weights
        if now == 0:  # no previous decision: the new version is held out once, then comes back capped
            assert caps is None and set(outcome.decision.excluded.values()) == {RESET}
    assert caps is not None and len(new) == 2
    assert sum(w for k, w in outcome.decision.weights.items() if k in new) == pytest.approx(0.1)
    held, caps, _ = steer_candidates(cands, VersionSteer(2, 0.0, "rollout rolled back (web-v2)"), previous)
    outcome = decide(SVC, held, policy, memory, 10.0, caps=caps)
    assert dict(outcome.decision.weights) == {cands[0].key: 1.0}
    assert set(outcome.decision.excluded.values()) == {"rollout rolled back (web-v2)"}


# ------------------------------------------------------------ the router: verbs, state file, restart

def update(peer_time: float, nh: str, path_id: int, *, version: int, delay: float, cpu: float = 10) -> str:
    values = [int.from_bytes(c.pack(), "big") for c in encode_metrics(
        {"cpu_utilization": cpu, "capacity": 1000, "service_delay": delay}, flags=StateFlag.NONE, version=version)]
    return json.dumps({
        "exabgp": "5.0.0", "time": peer_time, "host": "h", "pid": 1, "ppid": 1, "counter": 1, "type": "update",
        "neighbor": {"address": {"local": "10.0.0.2", "peer": "10.0.0.3"}, "asn": {"local": 65000, "peer": 65000},
                     "direction": "receive", "message": {"update": {
                         "attribute": {"origin": "igp", "local-preference": 100,
                                       "extended-community": [{"value": v, "string": ""} for v in values]},
                         "announce": {"ipv4 unicast": {nh: [{"nlri": str(SVC),
                                                             "path-information": f"0.0.0.{path_id}"}]}}}}}})


ROUTER = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router: {apply_interval: 0.02, startup_hold: 0, probes: {enabled: false}, rollout_state: %s,
         defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}}
"""


def test_router_rollout_breach_rolls_back_persists_and_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "rollouts.json"
    plan_file = tmp_path / "plan.yml"
    plan_file.write_text(PLAN_YAML.replace("rollback: hard", "rollback: soft"))
    config = parse(ROUTER % state)
    old, new = "198.51.100.11", "198.51.100.12"

    async def go() -> tuple[list[dict[str, object]], dict[str, float], dict[str, float], str]:
        gate = asyncio.Event()

        async def lines() -> AsyncIterator[str]:
            yield update(1, old, 1, version=1, delay=1000)
            yield update(1, new, 2, version=2, delay=1000)
            await gate.wait()
            yield update(2, new, 2, version=2, delay=900_000)  # 900 ms: breaks max_service_delay_ms 200
            await asyncio.sleep(0.2)

        runtime = RouterRuntime(config, lines=lines(), dataplane=None, probes=False)
        task = asyncio.create_task(runtime.run())
        await asyncio.sleep(0.1)
        started = runtime.rollout_request(Request("rollout", {"action": "start", "plan": str(plan_file)}))
        assert started["ok"], started
        await asyncio.sleep(0.1)
        held = runtime.engine.outcome(SVC)
        assert held is not None and set(held.decision.excluded.values()) == {RESET}  # it had 0.5: held out once
        await asyncio.sleep(1.2)  # the review readmits it, capped
        outcome = runtime.engine.outcome(SVC)
        assert outcome is not None
        capped = {str(k.binding): w for k, w in outcome.decision.weights.items()}
        on_disk = json.loads(state.read_text())
        assert on_disk["format"] == 1 and on_disk["rollouts"][0]["status"] == "running"
        gate.set()
        await asyncio.wait_for(task, timeout=10)
        outcome = runtime.engine.outcome(SVC)
        assert outcome is not None
        after = {str(k.binding): w for k, w in outcome.decision.weights.items()}
        status = runtime.rollout_request(Request("rollout", {"action": "status"}))
        return status["rollouts"], capped, after, render("rollout", status)

    views, capped, after, table = asyncio.run(go())
    assert capped[new] == pytest.approx(0.1) and capped[old] == pytest.approx(0.9)
    assert after == {old: 1.0}
    assert views[0]["status"] == "rolled-back"
    assert views[0]["reason"] == "KPI breach at stage 1: service_delay 900 ms over 200 ms"
    assert "rolled-back" in table and "KPI breach" in table
    restored = RouterRuntime(config, lines=_empty(), dataplane=None, probes=False)
    assert restored.rollouts.rollouts[SVC].status is Status.ROLLED_BACK
    steer = restored.rollouts.steer(SVC)
    assert steer is not None and steer.hold is not None


def test_a_hard_abort_during_an_apply_evicts_the_new_version_only_after_a_state_without_it_is_installed(
        tmp_path: Path) -> None:
    """CI saw a session stay on the rolled-back instance: the abort came while an apply ran, and its eviction ran
    when that apply (with the new version still in it) returned; the session's next packet picked it again."""
    plan_file = tmp_path / "plan.yml"
    plan_file.write_text(PLAN_YAML)  # rollback: hard
    config = parse(ROUTER % (tmp_path / "rollouts.json"))
    old, new, other = "198.51.100.11", "198.51.100.12", "198.51.100.13"
    dataplane = SlowDataplane()

    async def go() -> RouterRuntime:
        change, done = asyncio.Event(), asyncio.Event()

        async def lines() -> AsyncIterator[str]:
            yield update(1, old, 1, version=1, delay=1000)
            yield update(1, new, 2, version=2, delay=1000)
            yield update(1, other, 3, version=1, delay=1000)
            await change.wait()
            yield update(2, old, 1, version=1, delay=1000, cpu=60)  # moves flows from old to other: an apply
            await done.wait()

        runtime = RouterRuntime(config, lines=lines(), dataplane=dataplane, probes=False)
        task = asyncio.create_task(runtime.run())

        def weights() -> dict[str, float]:
            applied = dataplane.applied[-1].services if dataplane.applied else ()
            return {str(t.key.binding): t.weight for s in applied for t in s.instances}

        # polled, not slept: fixed sleeps (0.1 s, 1.2 s) failed this in CI with the host at 50 % steal
        await _until(lambda: set(weights()) == {old, new, other}, what="the three instances applied")
        started = runtime.rollout_request(Request("rollout", {"action": "start", "plan": str(plan_file)}))
        assert started["ok"], started
        # held out once, readmitted under its 10 % cap by the review
        await _until(lambda: weights().get(new, 0.0) == pytest.approx(0.1),
                     what="the new version taking new flows (10 %) before the abort", detail=weights)
        dataplane.hold.set()
        change.set()
        await dataplane.held()
        aborted = runtime.rollout_request(Request("rollout", {"action": "abort", "service": str(SVC), "hard": True}))
        assert aborted["ok"], aborted
        await asyncio.sleep(0.2)  # the abort is decided while the apply, with the new version in it, runs
        dataplane.release.set()
        await _until(lambda: bool(dataplane.evicted), what="the next apply (without it), then the eviction")
        done.set()
        await asyncio.wait_for(task, timeout=10)
        return runtime

    runtime = asyncio.run(go())
    assert not dataplane.violations, dataplane.violations
    assert [[str(key.binding) for key in keys] for keys in dataplane.evicted] == [[new]]
    assert runtime.counters.rollback_evictions == 1


async def _until(check: Callable[[], bool], *, what: str, timeout: float = 20.0,
                 detail: Callable[[], object] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}; last: {detail()}"
        await asyncio.sleep(0.02)


async def _empty() -> AsyncIterator[str]:
    return
    yield  # pragma: no cover


def test_book_refuses_a_second_start_and_unknown_services() -> None:
    book = RolloutBook()
    assert not isinstance(book.start(plan(), 0.0), str)
    assert "abort or commit it first" in str(book.start(plan(), 1.0))
    assert book.act(ServiceId.parse("192.0.2.9"), "pause", 1.0) == \
        "no rollout of 192.0.2.9/32 (rollouts: 203.0.113.10/32)"
    assert "abort or commit it before clearing" in str(book.act(SVC, "clear", 1.0))
    change = book.act(SVC, "abort", 2.0, hard=True)
    assert not isinstance(change, str) and change.evict
    assert not isinstance(book.act(SVC, "clear", 3.0), str) and book.steer(SVC) is None


def test_ctl_rollout_requests(tmp_path: Path) -> None:
    path = tmp_path / "plan.yml"
    path.write_text(PLAN_YAML)
    args = build_parser().parse_args(["ctl", "rollout", "start", str(path)])
    assert build_request(args) == Request("rollout", {"action": "start", "plan": str(path)})
    args = build_parser().parse_args(["ctl", "rollout", "abort", "203.0.113.10", "--hard"])
    assert build_request(args) == Request("rollout", {"action": "abort", "service": "203.0.113.10", "hard": True})
    assert build_request(build_parser().parse_args(["ctl", "rollout", "status"])) == \
        Request("rollout", {"action": "status"})


# ------------------------------------------------------------ client-prefix canaries


@given(st.dictionaries(st.integers(1, 8), st.floats(0, 1), min_size=1, max_size=8), st.sets(st.integers(1, 8)))
def test_outside_the_audience_the_new_version_gets_nothing_and_the_rest_keeps_its_proportions(
        raw: dict[int, float], new_ids: set[int]) -> None:
    keys = {i: InstanceKey(SVC, ipaddress.ip_address(f"198.51.100.{i}")) for i in raw}
    weights = {keys[i]: w for i, w in raw.items()}
    new = frozenset(keys[i] for i in new_ids if i in keys)
    others = without_new_version(weights, new)
    rest = sum(w for k, w in weights.items() if k not in new)
    if rest <= 1e-9:
        assert others == weights  # nobody else can take flows: no client is left without the service
        return
    assert all(others[k] == 0.0 for k in new) and sum(others.values()) == pytest.approx(1.0)
    for k, w in weights.items():
        if k not in new:
            assert others[k] == pytest.approx(w / rest)


def test_plan_clients_are_parsed_checked_and_persisted_only_when_set() -> None:
    base = {"service": "203.0.113.10/32", "version": 2, "stages": [{"share": 10, "hold": 1}]}
    got = plan_from_document({**base, "clients": ["198.51.100.0/24", "10.1.0.0/16"]})
    assert [str(n) for n in got.clients] == ["198.51.100.0/24", "10.1.0.0/16"]
    assert machine.plan_from_dict(machine.plan_to_dict(got)) == got
    assert "clients" not in machine.plan_to_dict(plan_from_document(base))  # the 0.1.0 shape when unused
    for clients, where in ((["2001:db8::/32"], "not of the address family"), (["nope"], "clients.*clients\\[0\\]")):
        with pytest.raises(PlanError, match=where):
            plan_from_document({**base, "clients": clients})


def test_router_gives_the_audience_the_canary_split_and_everyone_else_the_old_version(tmp_path: Path) -> None:
    plan_file = tmp_path / "plan.yml"
    plan_file.write_text(PLAN_YAML.replace("rollback: hard", "clients: [198.51.100.128/25, 10.9.0.0/16]"))
    config = parse(ROUTER % (tmp_path / "rollouts.json"))
    old, new = "198.51.100.11", "198.51.100.12"

    async def go() -> tuple[ServiceTarget, ServiceTarget]:
        done = asyncio.Event()

        async def lines() -> AsyncIterator[str]:
            yield update(1, old, 1, version=1, delay=1000)
            yield update(1, new, 2, version=2, delay=1000)
            await done.wait()

        runtime = RouterRuntime(config, lines=lines(), dataplane=None, probes=False)
        task = asyncio.create_task(runtime.run())
        await asyncio.sleep(0.1)
        assert runtime.rollout_request(Request("rollout", {"action": "start", "plan": str(plan_file)}))["ok"]
        await asyncio.sleep(1.3)  # held out once (RESET), then readmitted under its 10 % cap
        during = runtime.engine.desired().services[0]
        assert runtime.rollout_request(Request("rollout", {"action": "abort", "service": str(SVC)}))["ok"]
        await asyncio.sleep(0.1)
        after = runtime.engine.desired().services[0]
        done.set()
        await asyncio.wait_for(task, timeout=5)
        return during, after

    during, after = asyncio.run(go())
    by_binding = {str(t.key.binding): t.weight for t in during.instances}
    assert by_binding == {old: pytest.approx(1.0), new: 0.0}  # outside the audience: the old version only
    assert during.audience is not None
    assert [str(n) for n in during.audience.clients] == ["198.51.100.128/25", "10.9.0.0/16"]
    audience = {str(k.binding): w for k, w in during.audience.weights.items()}
    assert audience == {old: pytest.approx(0.9), new: pytest.approx(0.1)}  # inside: the stage's split
    assert after.audience is None  # rolled back: the new version is held out for everyone


def test_an_instance_upgraded_in_place_leaves_the_other_clients_split_at_once(tmp_path: Path) -> None:
    """Same D-BID, same weight, new version tag: the decision does not change, the dataplane target does."""
    engine = RouterEngine(parse(ROUTER % (tmp_path / "rollouts.json")).router)
    a, b = "198.51.100.11", "198.51.100.12"
    engine.on_event(parse_line(update(1, a, 1, version=1, delay=1000)), 1.0)
    engine.on_event(parse_line(update(1, b, 2, version=1, delay=1000)), 1.0)
    engine.step(1.0)
    engine.set_steer(SVC, VersionSteer(2, 0.5, None, (ipaddress.ip_network("10.9.0.0/16"),)))
    engine.step(2.0)
    assert {str(t.key.binding): t.weight for t in engine.desired().services[0].instances} == {a: 0.5, b: 0.5}
    engine.on_event(parse_line(update(3, b, 2, version=2, delay=1000)), 3.0)  # b upgraded in place
    assert engine.step(3.0), "the target changed: the router must be told to apply"
    target = engine.desired().services[0]
    assert {str(t.key.binding): t.weight for t in target.instances} == {a: 1.0, b: 0.0}
    assert target.audience is not None and {str(k.binding) for k in target.audience.weights} == {a, b}
