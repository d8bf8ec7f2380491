"""Rollout state machine and steer: for any sequence of samples, time and operator actions, the new version's
share never exceeds the current stage's cap, abort and breaches end rolled back, commit only from the last
stage, and the persisted form round-trips."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import decide
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId
from dyncast_bgp.ops import rollout as machine
from dyncast_bgp.ops.rollout import Kpis, Plan, Rollout, Sample, Stage, Status
from dyncast_bgp.ops.steer import VersionSteer, steer_candidates

SVC = ServiceId.parse("203.0.113.10/32")

plans = st.builds(
    Plan, service=st.just(SVC), version=st.integers(0, 5),
    stages=st.lists(st.builds(Stage, share=st.sampled_from([0.05, 0.1, 0.3, 0.5, 1.0]),
                              hold=st.sampled_from([0.0, 5.0, 30.0])), min_size=1, max_size=4).map(tuple),
    kpis=st.builds(Kpis, max_rtt_ms=st.none() | st.just(50.0), max_loss=st.none() | st.just(0.05),
                   max_service_delay_ms=st.none() | st.just(200.0), breach_for=st.sampled_from([0.0, 3.0])),
    hard_rollback=st.booleans(), auto_commit=st.booleans())
samples = st.none() | st.builds(Sample, instances=st.integers(0, 3), rtt_ms=st.none() | st.floats(0, 100),
                                loss=st.none() | st.floats(0, 0.2), service_delay_ms=st.none() | st.floats(0, 400))
actions = st.lists(st.one_of(
    st.tuples(st.just("observe"), samples, st.floats(0, 40)),
    st.tuples(st.sampled_from(["pause", "resume", "commit"])),
    st.tuples(st.just("abort"), st.booleans()),
), max_size=40)


def _share_bound(r: Rollout) -> float | None:
    return None if r.status is Status.COMMITTED else 0.0 if r.status is Status.ROLLED_BACK else \
        r.plan.stages[r.stage].share


@settings(max_examples=300, deadline=None)
@given(plan=plans, steps=actions)
def test_rollout_runs_stay_within_their_rules(plan: Plan, steps: list[tuple[object, ...]]) -> None:
    now = 0.0
    r = machine.start(plan, now)
    for step in steps:
        before = r
        kind = step[0]
        if kind == "observe":
            now += float(step[2])  # type: ignore[arg-type]
            r = machine.observe(r, step[1], now)  # type: ignore[arg-type]
            if not before.finished and r.status is Status.ROLLED_BACK:
                assert step[1] is not None and machine.breach(plan.kpis, step[1]) is not None  # type: ignore[arg-type]
        elif kind == "abort":
            result = machine.abort(r, now, hard=bool(step[1]))
            assert isinstance(result, str) == before.finished
            if not isinstance(result, str):
                r = result
                assert r.status is Status.ROLLED_BACK and r.hard == bool(step[1]) and r.share == 0.0
        else:
            result = {"pause": machine.pause, "resume": machine.resume, "commit": machine.commit}[str(kind)](r, now)
            if kind == "commit":
                assert isinstance(result, str) == (before.finished or not before.at_last_stage)
            if not isinstance(result, str):
                r = result
        # invariants after every step
        assert r.share == _share_bound(r)
        assert r.stage >= before.stage
        if before.finished:
            assert r.status is before.status  # final states stay
        if r.status is Status.COMMITTED and before.status is not Status.COMMITTED:
            assert before.at_last_stage
        assert machine.from_dict(json.loads(json.dumps(machine.to_dict(r))), r.last) == r
    assert r.status in set(Status)


def _candidate(index: int, version: int, cpu: float) -> Candidate:
    key = InstanceKey(SVC, ipaddress.ip_address(f"198.51.100.{index + 1}"))
    return Candidate(key, InstanceState.ACTIVE,
                     ComputeMetrics(MetricsView({"capacity": 1000, "cpu_utilization": cpu}), version=version),
                     PathMetrics(rtt_mean_us=1000, loss_mean=0.0))


@settings(max_examples=150, deadline=None)
@given(versions=st.lists(st.tuples(st.sampled_from([1, 2]), st.floats(0, 80)), min_size=2, max_size=6),
       shares=st.lists(st.sampled_from([0.05, 0.1, 0.3, 0.6, 1.0]), min_size=1, max_size=4).map(sorted))
def test_the_new_versions_share_never_exceeds_the_stage_cap(versions: list[tuple[int, float]],
                                                           shares: list[float]) -> None:
    cands = [_candidate(i, version, cpu) for i, (version, cpu) in enumerate(versions)]
    if not any(version == 1 for version, _ in versions) or not any(version == 2 for version, _ in versions):
        return
    policy = ServicePolicy()  # the default stability (EWMA, slew limit, dwell)
    memory = None
    previous: Mapping[InstanceKey, float] | None = None
    now = 0.0
    for share in shares:  # stages only raise the cap
        for _ in range(3):  # as the router does it: the previous decision's weights go with the steer
            steered, caps, new = steer_candidates(cands, VersionSteer(2, share), previous)
            now += 1.0
            outcome = decide(SVC, steered, policy, memory, now, caps=caps)
            memory, previous = outcome.memory, outcome.decision.weights
            taken = sum(weight for key, weight in outcome.decision.weights.items() if key in new)
            assert taken <= share + 1e-9 or (pytest.approx(1.0) == sum(outcome.decision.weights.values()) and \
                not any(key not in new for key in outcome.decision.weights))
