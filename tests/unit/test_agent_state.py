"""AgentState: what the agent announces for given observations (pure, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.model import MetricsView
from dyncast_bgp.wire.community import decode
from dyncast_bgp.wire.exabgp_text import Announce, Withdraw
from dyncast_bgp.wire.metrics import decode_metrics

BASE = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: %(add_path)s}
agent: {publish: {mode: %(mode)s, min_interval: 1, refresh_interval: 30}}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - name: a
        binding: 198.51.100.11
        capacity: 1000
        static: {cpu_utilization: 40}
      - name: b
        binding: 198.51.100.12
        capacity: 3000
        metrics: [{type: file, path: /nonexistent, interval: 5, timeout: 1, on_failure: %(on_failure)s}]
"""


def make(mode: str = "per-instance", add_path: bool = True, on_failure: str = "keep-last") -> AgentState:
    return AgentState(parse(BASE % {"mode": mode, "add_path": str(add_path).lower(), "on_failure": on_failure}))


def metrics_of(command: Announce | Withdraw) -> dict[str, Any]:
    assert isinstance(command, Announce), command
    decoded = decode_metrics([decode(c.pack()) for c in command.communities])
    return {**decoded.metrics.values, "flags": int(decoded.metrics.flags)}


A = InstanceId("web", "a")
B = InstanceId("web", "b")


def test_instance_waits_for_its_sources_then_is_announced_with_path_ids() -> None:
    state = make()
    first = state.plan(0.0)
    assert [type(c) for c in first] == [Announce]  # b has not reported yet
    assert first[0].path_id == 1 and str(first[0].next_hop) == "198.51.100.11"
    assert metrics_of(first[0]) == {"capacity": 1000.0, "cpu_utilization": 40.0, "flags": 0}
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.5)
    second = state.plan(0.5)
    assert len(second) == 1 and isinstance(second[0], Announce) and second[0].path_id == 2
    assert metrics_of(second[0])["cpu_utilization"] == 10.0


def test_keep_last_keeps_values_until_max_age_then_drops_them() -> None:
    state = make(on_failure="keep-last")
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    state.record_metrics(B, 0, None, "file: gone", 1.0)
    assert state.plan(1.0) == []  # still within max_age (3 x 5 s)
    assert state.next_due() == pytest.approx(15.0)
    later = state.plan(15.5)
    assert len(later) == 1 and isinstance(later[0], Announce)
    assert "cpu_utilization" not in metrics_of(later[0])


def test_drop_forgets_values_at_once_and_withdraw_withdraws_after_max_age() -> None:
    state = make(on_failure="drop")
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    state.record_metrics(B, 0, None, "boom", 2.0)
    dropped = state.plan(2.0)
    assert len(dropped) == 1 and isinstance(dropped[0], Announce)
    assert "cpu_utilization" not in metrics_of(dropped[0])

    state = make(on_failure="withdraw")
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    state.record_metrics(B, 0, None, "boom", 2.0)
    assert state.plan(2.0) == []
    gone = state.plan(15.1)
    assert gone == [Withdraw(gone[0].service, gone[0].next_hop, 2)]


def test_draining_keeps_route_with_flag_and_withdrawn_removes_it() -> None:
    state = make()
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    state.set_admin(A, Admin.DRAINING)
    drained = state.plan(2.0)
    assert len(drained) == 1
    assert isinstance(drained[0], Announce)
    assert metrics_of(drained[0])["flags"] == 1
    state.set_admin(A, Admin.WITHDRAWN)
    assert state.plan(3.0) == [Withdraw(drained[0].service, drained[0].next_hop, 1)]


def test_per_site_mode_announces_one_aggregated_route() -> None:
    state = make(mode="per-site")
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 80}), None, 0.0)
    commands = state.plan(0.0)
    assert len(commands) == 1 and isinstance(commands[0], Announce)
    values = metrics_of(commands[0])
    assert values["capacity"] == 4000.0
    assert values["cpu_utilization"] == pytest.approx((1000 * 40 + 3000 * 80) / 4000)
    assert str(commands[0].next_hop) == "198.51.100.11"
    state.set_admin(A, Admin.WITHDRAWN)
    reduced = state.plan(5.0)
    assert metrics_of(reduced[0])["flags"] & 8  # reduced redundancy


def test_several_instances_without_add_path_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"need bgp\.add_path"):
        make(add_path=False)


def test_withdraw_all_withdraws_every_published_route_once() -> None:
    state = make()
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    withdrawn = state.withdraw_all()
    assert sorted(c.path_id for c in withdrawn) == [1, 2]
    assert all(isinstance(c, Withdraw) for c in withdrawn)
    assert state.withdraw_all() == []


def test_health_rise_and_fall_gate_the_announcement() -> None:
    config = parse("""
bgp: {router_id: 192.0.2.1, local_as: 65001}
services:
  - name: dns
    dsid: 2001:db8::53
    instances:
      - {name: c, binding: "2001:db8:1::2", health: {type: tcp, host: 127.0.0.1, port: 53, rise: 2, fall: 2}}
""")
    state = AgentState(config)
    c = InstanceId("dns", "c")
    assert state.plan(0.0) == []
    state.record_health(c, True, "ok")
    assert state.plan(1.0) == []  # one success of two
    assert state.record_health(c, True, "ok")
    up = state.plan(2.0)
    assert len(up) == 1 and str(up[0].service) == "2001:db8::53/128"
    state.record_health(c, False, "refused")
    assert state.plan(3.0) == []
    state.record_health(c, False, "refused")
    assert state.plan(4.0) == [Withdraw(up[0].service, up[0].next_hop, 0)]


def test_held_readings_keep_one_due_entry_per_service() -> None:
    state = make()
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    for step in range(1, 200):  # sub-threshold drift every 50 ms: each reading is held until the refresh
        now = step * 0.05
        state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10 + (step % 3) * 0.1}), None, now)
        assert state.plan(now) == []
    assert len(state._due) <= 2  # one live entry, at most one superseded not yet dropped
    assert state.next_due() == pytest.approx(30.0)  # the refresh, 30 s after the first announcement


@pytest.mark.parametrize("mode", ["per-instance", "per-site"])
def test_settled_once_every_instance_is_announced_or_known_not_to_be(mode: str) -> None:
    """What the agent's End-of-RIB waits for (agent/eor.py): an instance still waiting for its first metrics
    keeps the state unsettled, and so does a route not sent yet; an instance the operator withdrew does not."""
    state = make(mode=mode)
    assert not state.settled(0.0)  # nothing planned yet: a's route is not sent
    state.plan(0.0)
    assert not state.settled(0.0)  # b waits for its source
    state.set_admin(B, Admin.WITHDRAWN)
    assert state.settled(0.0)  # withdrawn by the operator: not waited for
    state.set_admin(B, Admin.ACTIVE)
    assert not state.settled(0.0)
    state.record_metrics(B, 0, None, "no such file", 0.2)  # reported, failing: known (keep-last: announced)
    # per instance, b's own route is not sent yet; per site, the site's route is there (b's share: an update)
    assert state.settled(0.2) == (mode == "per-site")
    state.plan(0.2)
    assert state.settled(0.2)


def test_settled_waits_for_a_route_damping_holds_back() -> None:
    state = make()
    state.record_metrics(B, 0, MetricsView({"cpu_utilization": 10}), None, 0.0)
    state.plan(0.0)
    assert state.settled(0.0)
    state.set_admin(B, Admin.WITHDRAWN)
    state.plan(0.1)  # withdrawn at once (withdrawals are never held)
    state.set_admin(B, Admin.ACTIVE)
    assert not state.plan(0.2)  # its announcement is held by min_interval (1 s since the withdrawal)
    assert not state.settled(0.2)
    assert state.plan(1.2) and state.settled(1.2)
