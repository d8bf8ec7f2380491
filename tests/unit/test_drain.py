"""Drain (issue 6 item 2): the state machine, the agent's verbs on it, the CLI, and the router's eviction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Mapping

import pytest

from dyncast_bgp.agent import control
from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.cli import build_parser
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.ctl.commands import build_request
from dyncast_bgp.ctl.protocol import Request, parse_request
from dyncast_bgp.ctl.render import render
from dyncast_bgp.dataplane.desired import ApplyResult, DesiredState
from dyncast_bgp.model import InstanceKey, InstanceState, MetricsView, ServiceId, StateFlag, state_from_flags
from dyncast_bgp.ops import agentdrain
from dyncast_bgp.ops.drain import Accepted, DrainBook, Fact, Limits, Phase, Refused
from dyncast_bgp.ops.durations import parse_duration
from dyncast_bgp.ops.evict import DrainedTracker
from dyncast_bgp.router.runtime import RouterRuntime
from tests.unit.exabgp_lines import update

# ------------------------------------------------------------ the state machine

WEB = "web"


def facts(up: Mapping[str, bool], sessions: Mapping[str, float] | None = None) -> dict[str, Fact]:
    return {name: Fact(WEB, ok, (sessions or {}).get(name)) for name, ok in up.items()}


ALL_UP = {"a": True, "b": True, "c": True, "d": True}


def accepted(result: Accepted[str] | Refused) -> Accepted[str]:
    assert isinstance(result, Accepted), result
    return result


def test_soft_drain_is_drained_when_sessions_reach_the_threshold() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(threshold=2)})
    steps = accepted(book.request("a", facts(ALL_UP, {"a": 40}), 0.0)).transitions
    assert [(s.before, s.after, s.event) for s in steps] == [
        (Phase.SERVING, Phase.PENDING, "drain_scheduled"), (Phase.PENDING, Phase.DRAINING, "drain_started")]
    assert book.tick(facts(ALL_UP, {"a": 3}), 5.0) == []
    done = book.tick(facts(ALL_UP, {"a": 2}), 6.0)
    assert [(s.after, s.event, s.why) for s in done] == [(Phase.DRAINED, "instance_drained", "sessions")]
    assert book.get("a") is not None and book.get("a").finished_at == 6.0  # type: ignore[union-attr]


def test_a_session_count_read_before_the_settle_time_does_not_end_a_drain() -> None:
    """A count of 0 read as draining begins does not prove the sessions ended: the routers may not have the
    draining flag yet, and a session one of them pinned just before may not be counted yet. Ended on it, the
    routers would evict that session (CI's three-site lab: a restart 12 ms after a session's SYN)."""
    book: DrainBook[str] = DrainBook({WEB: Limits(settle=3.0)})
    steps = accepted(book.request("a", {"a": Fact(WEB, True, 0.0, sampled_at=9.5)}, 10.0)).transitions
    assert [s.after for s in steps] == [Phase.PENDING, Phase.DRAINING]  # not drained at once
    assert book.tick({"a": Fact(WEB, True, 0.0, sampled_at=12.9)}, 13.0) == []
    assert book.tick({"a": Fact(WEB, True, 0.0, sampled_at=12.9)}, 60.0) == []  # late, but the same old count
    done = book.tick({"a": Fact(WEB, True, 0.0, sampled_at=13.0)}, 13.5)
    assert [(s.after, s.why) for s in done] == [(Phase.DRAINED, "sessions")]
    instant: DrainBook[str] = DrainBook({WEB: Limits(settle=0.0)})  # settle 0: as soon as a count says so
    steps = accepted(instant.request("a", {"a": Fact(WEB, True, 0.0, sampled_at=10.0)}, 10.0)).transitions
    assert [s.after for s in steps] == [Phase.PENDING, Phase.DRAINING, Phase.DRAINED]


SOURCED = """
bgp: {router_id: 192.0.2.1, local_as: 65001}
services:
  - name: web
    dsid: 203.0.113.10/32
    drain: {settle: 2}
    instances:
      - name: a
        binding: 198.51.100.11
        metrics:
          - {type: http, url: "http://198.51.100.11:8080/metrics", interval: 1, timeout: 0.5}
          - {type: http, url: "http://198.51.100.11:8080/load", interval: 1, timeout: 0.5}
"""


def test_the_agent_ends_a_drain_on_a_session_count_read_after_the_settle_time() -> None:
    state = AgentState(parse(SOURCED))
    a = InstanceId("web", "a")
    state.record_health(a, True, "")
    sessions, cpu = MetricsView({"active_sessions": 0.0}), MetricsView({"cpu_utilization": 9.0})
    state.record_metrics(a, 0, sessions, None, 9.0)
    state.record_metrics(a, 1, cpu, None, 9.0)
    state.plan(9.0)
    assert state.status(a).read_at("active_sessions", 10.0) == 9.0
    assert agentdrain.facts(state, 10.0)[a] == Fact("web", True, 0.0, 9.0)
    book: DrainBook[InstanceId] = DrainBook()
    assert control.apply(state, drain("drain", "web/a"), book, now=10.0).drains[-1].after is Phase.DRAINING
    state.record_metrics(a, 1, cpu, None, 12.5)  # the other source's newer read does not date the count
    assert agentdrain.tick(state, book, 12.5) == []
    state.record_metrics(a, 0, sessions, None, 11.9)  # read before 10 + 2
    assert agentdrain.tick(state, book, 12.6) == []
    state.record_metrics(a, 0, sessions, None, 12.7)
    assert [(s.event, s.why) for s in agentdrain.tick(state, book, 12.8)] == [("instance_drained", "sessions")]
    assert state.status(a).drained


def test_the_settle_time_outlasts_the_re_announce_throttle() -> None:
    """The draining flag can be held back up to publish.min_interval: the default settle time is that + 2 s, and
    a shorter one is refused where it is configured (0 turns it off)."""
    slow = SOURCED.replace("bgp: {router_id: 192.0.2.1, local_as: 65001}",
                           "bgp: {router_id: 192.0.2.1, local_as: 65001}\nagent: {publish: {min_interval: 5}}")
    config = parse(slow.replace("    drain: {settle: 2}\n", ""))
    assert config.settle_for(config.services[0]) == 7.0
    assert agentdrain.limits(AgentState(config))["web"].settle == 7.0
    with pytest.raises(ConfigError, match=r"services\[0\] \(web\): drain.settle \(2 s\) must exceed "
                                          r"publish.min_interval \(5 s\)"):
        parse(slow)
    assert parse(slow.replace("settle: 2", "settle: 0")).services[0].drain.settle == 0.0


def test_soft_drain_without_sessions_ends_at_its_deadline() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(deadline=600)})
    accepted(book.request("a", facts(ALL_UP), 10.0, deadline=60))
    assert book.next_due() == 13.0  # the settle time (3 s) ends: a static count would end the drain then
    assert book.tick(facts(ALL_UP), 13.0) == []  # without a count, nothing
    assert book.next_due() == 70.0  # the settle timer is gone once a tick saw it end
    assert book.tick(facts(ALL_UP), 69.9) == []
    assert [s.why for s in book.tick(facts(ALL_UP), 70.0)] == ["deadline"]


def test_lead_time_keeps_the_instance_serving_until_it_ends() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(lead_time=30)})
    steps = accepted(book.request("a", facts(ALL_UP), 0.0)).transitions
    assert [s.after for s in steps] == [Phase.PENDING]
    assert book.next_due() == 30.0
    assert book.tick(facts(ALL_UP), 29.0) == []
    assert [s.after for s in book.tick(facts(ALL_UP), 30.0)] == [Phase.DRAINING]
    accepted(book.request("b", facts(ALL_UP), 31.0, lead_time=0))  # the request's lead time wins
    assert book.phase("b") is Phase.DRAINING


def test_hard_drain_is_drained_at_once_and_a_soft_drain_can_be_made_hard() -> None:
    book: DrainBook[str] = DrainBook()
    steps = accepted(book.request("a", facts(ALL_UP, {"a": 100}), 0.0, hard=True)).transitions
    assert steps[-1].after is Phase.DRAINED and steps[-1].why == "hard"
    accepted(book.request("b", facts(ALL_UP, {"b": 100}), 0.0))
    assert book.phase("b") is Phase.DRAINING
    again = accepted(book.request("b", facts(ALL_UP, {"b": 100}), 1.0, hard=True))
    assert again.changed and book.phase("b") is Phase.DRAINED
    assert not accepted(book.request("b", facts(ALL_UP), 2.0)).changed  # nothing more to do


def test_max_drained_serializes_drains_with_the_reason() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(max_drained=1)})
    accepted(book.request("a", facts(ALL_UP), 0.0))
    refused = book.request("b", facts(ALL_UP), 1.0)
    assert isinstance(refused, Refused)
    assert refused.reason == "max_drained 1 reached for service web: a (draining); undrain one first"
    assert book.undrain("a", facts(ALL_UP)) is not None
    accepted(book.request("b", facts(ALL_UP), 2.0))


def test_min_available_refuses_a_drain_that_would_leave_too_few() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(min_available=2)})
    up = {"a": True, "b": True, "c": False}
    refused = book.request("a", facts(up), 0.0)
    assert isinstance(refused, Refused)
    assert refused.reason == "draining a would leave 1 available instance of service web, min_available is 2"
    accepted(book.request("c", facts(up), 0.0))  # a down instance leaves the available count as it is


def test_a_pending_drain_is_blocked_while_it_would_break_min_available() -> None:
    book: DrainBook[str] = DrainBook({WEB: Limits(min_available=1, lead_time=10)})
    up = {"a": True, "b": True}
    accepted(book.request("a", facts(up), 0.0))
    blocked = book.tick(facts({"a": True, "b": False}), 10.0)  # b failed during the lead time
    assert [(s.event, s.why) for s in blocked] == [("drain_blocked", "would leave 0 available of web, "
                                                                      "min_available is 1")]
    assert book.tick(facts({"a": True, "b": False}), 11.0) == []  # logged once
    assert book.next_due() is None
    assert [s.after for s in book.tick(facts(up), 12.0)] == [Phase.DRAINING]


def test_records_of_vanished_instances_are_dropped_and_bad_numbers_refused() -> None:
    book: DrainBook[str] = DrainBook()
    accepted(book.request("a", facts(ALL_UP), 0.0))
    book.tick(facts({"b": True}), 1.0)
    assert book.get("a") is None
    assert isinstance(book.request("a", facts(ALL_UP), 0.0, deadline=0), Refused)
    assert isinstance(book.request("a", facts(ALL_UP), 0.0, lead_time=float("nan")), Refused)
    assert isinstance(book.request("zz", facts(ALL_UP), 0.0), Refused)


def test_durations() -> None:
    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h", "1d", 7)] == [90, 90, 600, 5400, 86400, 7]
    for bad in ("", "m", "-1s", "inf", "10 minutes"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)


# ------------------------------------------------------------ the wire: drained flag

def test_drained_travels_as_draining_plus_drained() -> None:
    assert state_from_flags(StateFlag.DRAINING | StateFlag.DRAINED) is InstanceState.DRAINED
    assert state_from_flags(StateFlag.DRAINING) is InstanceState.DRAINING


# ------------------------------------------------------------ the agent

AGENT = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent: {publish: {min_interval: 1, refresh_interval: 30}}
services:
  - name: web
    dsid: 203.0.113.10
    drain: {max_drained: 1, min_available: 2, deadline: 300, threshold: 0}
    instances:
      - {name: a, binding: 198.51.100.11, static: {active_sessions: 12}}
      - {name: b, binding: 198.51.100.12, static: {active_sessions: 0}}
      - {name: c, binding: 198.51.100.13}
      - {name: d, binding: 198.51.100.14, state: canary}
"""


def agent() -> tuple[AgentState, DrainBook[InstanceId]]:
    state = AgentState(parse(AGENT))
    for iid, _ in state.instances():
        state.record_health(iid, True, "")
    state.plan(0.0)
    return state, DrainBook()


def drain(verb: str, instance: str, **extra: object) -> Request:
    result = parse_request(json.dumps({"verb": verb, "instance": instance, **extra}).encode(), control.VERBS)
    assert isinstance(result, Request), result
    return result


def test_agent_soft_drain_waits_for_sessions_then_announces_drained() -> None:
    state, book = agent()
    a = InstanceId("web", "a")
    applied = control.apply(state, drain("drain", "web/a"), book, now=1.0)
    assert applied.error is None and [s.event for s in applied.drains] == ["drain_scheduled", "drain_started"]
    assert state.status(a).admin is Admin.DRAINING
    assert state.status(a).flags(state.status(a).metrics(1.0)) == StateFlag.DRAINING
    assert agentdrain.tick(state, book, 2.0) == []  # 12 sessions
    shown = render("instances", {"ok": True, "instances": [control.instance_view(state, a, 2.0, book)]})
    assert "draining, settling 2s, deadline in 299s" in shown, shown
    steps = agentdrain.tick(state, book, 301.0)
    assert [(s.event, s.why) for s in steps] == [("instance_drained", "deadline")]
    assert state.status(a).flags(state.status(a).metrics(301.0)) == StateFlag.DRAINING | StateFlag.DRAINED
    view = control.instance_view(state, a, 301.0, book)
    assert view["drain"]["phase"] == "drained" and view["drain"]["why"] == "deadline"
    assert "drained (deadline)" in render("instances", {"ok": True, "instances": [view]})


def test_agent_refuses_a_second_drain_with_the_reason_and_undrain_returns_the_instance() -> None:
    state, book = agent()
    assert control.apply(state, drain("drain", "b"), book, now=0.0).drains[-1].after is Phase.DRAINING
    assert agentdrain.tick(state, book, 2.9) == []  # 0 sessions, but the drain's settle time (3 s) is not over
    assert [(s.event, s.why) for s in agentdrain.tick(state, book, 3.0)] == [("instance_drained", "sessions")]
    refused = control.apply(state, drain("drain", "c"), book, now=3.0)
    assert refused.error == "drain of web/c refused: max_drained 1 reached for service web: web/b (drained); " \
                            "undrain one first"
    answer = control.answer(state, drain("drain", "c"), refused, 3.0, {})
    assert answer == {"ok": False, "error": refused.error}
    undrained = control.apply(state, drain("undrain", "b"), book, now=4.0)
    assert undrained.transition is not None and undrained.transition.changed
    assert state.status(InstanceId("web", "b")).admin is Admin.ACTIVE
    assert not state.status(InstanceId("web", "b")).drained
    back = control.apply(state, drain("undrain", "d"), book, now=4.0)  # not draining: nothing to do
    assert back.transition is not None and not back.transition.changed


def test_agent_min_available_counts_only_this_agents_instances() -> None:
    state, book = agent()
    state.set_admin(InstanceId("web", "c"), Admin.WITHDRAWN)  # not available: a and b are left
    assert control.apply(state, drain("drain", "a"), book, now=0.0).error is None  # leaves b and d: 2
    control.apply(state, drain("undrain", "a"), book, now=0.0)
    state.set_admin(InstanceId("web", "d"), Admin.DRAINING)  # drained by config/API: not available either
    refused = control.apply(state, drain("drain", "a"), book, now=0.0)
    assert refused.error is not None and "min_available is 2" in refused.error


def test_agent_hard_drain_with_lead_time_and_the_withdrawn_refusal() -> None:
    state, book = agent()
    applied = control.apply(state, drain("drain", "a", hard=True, lead_time=30, deadline=60), book, now=0.0)
    assert [s.after for s in applied.drains] == [Phase.PENDING]
    assert state.status(InstanceId("web", "a")).admin is Admin.ACTIVE  # still serving during the lead time
    answer = control.answer(state, drain("drain", "a"), applied, 0.0, {}, drains=book)
    assert answer["changed"] and answer["instance"]["drain"]["phase"] == "pending"
    assert [s.after for s in agentdrain.tick(state, book, 30.0)] == [Phase.DRAINING, Phase.DRAINED]
    control.apply(state, drain("withdraw", "a"), book, now=31.0)
    assert book.get(InstanceId("web", "a")) is None
    again = control.apply(state, drain("drain", "a"), book, now=32.0)
    assert again.error is not None and "restore" in again.error


def test_ctl_drain_options_reach_the_request() -> None:
    args = build_parser().parse_args(["ctl", "drain", "web/a", "--hard", "--deadline", "10m", "--lead-time", "30s"])
    assert build_request(args) == Request("drain", {"instance": "web/a", "hard": True, "deadline": 600,
                                                    "lead_time": 30})
    plain = build_parser().parse_args(["ctl", "drain", "web/a"])
    assert build_request(plain) == Request("drain", {"instance": "web/a"})


# ------------------------------------------------------------ the router: drained -> evict

def test_drained_tracker_evicts_once_per_drain() -> None:
    from dyncast_bgp.model import Decision  # noqa: PLC0415

    service = ServiceId.parse("203.0.113.10/32")
    a = InstanceKey(service, __import__("ipaddress").ip_address("198.51.100.11"))
    b = InstanceKey(service, __import__("ipaddress").ip_address("198.51.100.12"))
    tracker = DrainedTracker()
    assert tracker.observe([Decision(service, {a: 1.0}, excluded={b: "draining"})]) == {}
    assert tracker.observe([Decision(service, {a: 1.0}, excluded={b: "drained"})]) == {b: "drained"}
    assert tracker.observe([Decision(service, {a: 1.0}, excluded={b: "drained"})]) == {}
    assert tracker.observe([Decision(service, {a: 0.5, b: 0.5})]) == {}
    assert tracker.observe([Decision(service, {a: 1.0}, excluded={b: "drained"})]) == {b: "drained"}


class EvictingDataplane:
    def __init__(self) -> None:
        self.evicted: list[list[InstanceKey]] = []

    def apply(self, desired: DesiredState) -> ApplyResult:
        return ApplyResult(changed=True, seconds=0.001)

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        return {}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        self.evicted.append(list(keys))
        return 7


ROUTER = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router: {apply_interval: 0.02, startup_hold: 0, probes: {enabled: false},
         defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}}
"""


def test_router_evicts_the_flows_of_an_instance_announced_drained() -> None:
    svc, a, b = "203.0.113.10/32", "198.51.100.11", "198.51.100.12"
    load: dict[str, float] = {"cpu_utilization": 20.0, "capacity": 1000.0}
    lines = [(0.0, update(1, "10.0.0.3", svc, a, 1, metrics=load)),
             (0.0, update(1, "10.0.0.3", svc, b, 2, metrics=load)),
             (0.2, update(2, "10.0.0.3", svc, b, 2, metrics=load, flags=int(StateFlag.DRAINING))),
             (0.2, update(3, "10.0.0.3", svc, b, 2, metrics=load,
                          flags=int(StateFlag.DRAINING | StateFlag.DRAINED))),
             (0.3, "")]

    async def feed() -> AsyncIterator[str]:
        for delay, line in lines:
            await asyncio.sleep(delay)
            yield line

    async def go() -> tuple[RouterRuntime, EvictingDataplane]:
        dataplane = EvictingDataplane()
        runtime = RouterRuntime(parse(ROUTER), lines=feed(), dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=10)
        return runtime, dataplane

    runtime, dataplane = asyncio.run(go())
    assert [[str(key.binding) for key in keys] for keys in dataplane.evicted] == [[b]]  # not when only draining
    assert runtime.counters.drain_evictions == 1 and runtime.counters.shifted_flows == 7
    assert runtime.counters.shift_evictions == 0
