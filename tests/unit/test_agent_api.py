"""The registration API in-process: Registrations on an AgentState, with fake tasks and a fake state file."""

from __future__ import annotations

from typing import Any

import pytest

from dyncast_bgp.agent.api import ApiRequest, ApiResponse, Registrations, validate
from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import parse
from dyncast_bgp.config.schema import Config, InstanceConfig
from dyncast_bgp.wire.exabgp_text import Announce, Withdraw

CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent:
  publish: {min_interval: 1, refresh_interval: 30}
  api:
    names: {dns: 203.0.113.53}
    pool: 203.0.113.0/28
    drain_deadline: 30
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11, capacity: 1000}
"""


class FakeTasks:
    """Records start/stop; fails the test on a start of a running instance or a stop of an unknown one."""

    def __init__(self) -> None:
        self.running: set[InstanceId] = set()
        self.starts = 0

    def start_instance(self, iid: InstanceId, instance: InstanceConfig) -> None:
        assert iid not in self.running, f"invariant violation: {iid} started twice"
        self.running.add(iid)
        self.starts += 1

    def stop_instance(self, iid: InstanceId) -> None:
        self.running.discard(iid)


class Harness:
    def __init__(self, text: str = CONFIG, saved: list[dict[str, Any]] | None = None) -> None:
        self.config: Config = parse(text)
        self.state = AgentState(self.config)
        self.saved: list[list[dict[str, Any]]] = []
        self.api = Registrations(self.config, self.state, save=self.saved.append)
        self.tasks = FakeTasks()
        self.api.restore(saved or [], self.tasks)
        self.now = 100.0
        self.commands = self.state.plan(self.now)

    def call(self, method: str, target: str, body: Any = None) -> ApiResponse:
        request = ApiRequest.of(method, target, body)
        applied = self.api.apply(request, self.tasks, self.now)
        self.api.tick(self.tasks, self.now)
        self.commands = self.state.plan(self.now)
        return self.api.answer(request, applied, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.api.tick(self.tasks, self.now)
        self.commands = self.state.plan(self.now)


def body(name: str = "b", binding: str = "198.51.100.12", **extra: Any) -> dict[str, Any]:
    return {"service": "web", "name": name, "binding": binding, **extra}


def test_register_announces_at_once_and_is_persisted() -> None:
    h = Harness()
    answer = h.call("POST", "/v1/instances", body(capacity=500, version=7))
    assert answer.status == 201, answer.body
    view = answer.body["instance"]
    assert (view["origin"], view["dbid"], view["dsid"], view["published"]) == ("api", "198.51.100.12",
                                                                               "203.0.113.10/32", True)
    assert [type(c) for c in h.commands] == [Announce]
    assert h.commands[0].next_hop.compressed == "198.51.100.12" and h.commands[0].path_id == 2
    assert h.saved[-1] == [{"service": "web", "name": "b", "binding": "198.51.100.12", "capacity": 500.0,
                            "version": 7}]
    assert InstanceId("web", "b") in h.tasks.running


def test_list_shows_config_and_registered_instances() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body())
    answer = h.call("GET", "/v1/instances")
    assert [(v["instance"], v["origin"]) for v in answer.body["instances"]] == [("a", "config"), ("b", "api")]
    assert answer.body["conflicts"] == []
    assert h.call("GET", "/v1/instances/web/b").body["instance"]["instance"] == "b"
    assert h.call("GET", "/v1/instances/web/zz").status == 404


def test_name_only_registration_gets_the_configured_or_allocated_dsid() -> None:
    h = Harness()
    dns = h.call("POST", "/v1/instances", {"service": "dns", "name": "d1", "binding": "198.51.100.21"})
    assert dns.status == 201 and dns.body["instance"]["dsid"] == "203.0.113.53/32"
    pooled = h.call("POST", "/v1/instances", {"service": "video", "name": "v1", "binding": "198.51.100.31"})
    assert pooled.status == 201
    again = Harness()  # another site, same config: the same D-SID for the same name
    other = again.call("POST", "/v1/instances", {"service": "video", "name": "v9", "binding": "198.51.100.99"})
    assert other.body["instance"]["dsid"] == pooled.body["instance"]["dsid"]
    services = h.call("GET", "/v1/services").body
    assert services["running"]["video"] == pooled.body["instance"]["dsid"]


def test_conflicting_dsid_unknown_service_and_duplicate_dbid_are_409() -> None:
    h = Harness()
    assert h.call("POST", "/v1/instances", body(dsid="203.0.113.99")).status == 409
    wrong = h.call("POST", "/v1/instances", {"service": "dns", "name": "x", "binding": "198.51.100.40",
                                              "dsid": "203.0.113.54"})
    assert wrong.status == 409 and "D-SID conflict" in wrong.body["error"]
    dup = h.call("POST", "/v1/instances", body(binding="198.51.100.11"))
    assert dup.status == 409 and "duplicate D-BID" in dup.body["error"]
    exists = h.call("POST", "/v1/instances", body(name="a", binding="198.51.100.50"))
    assert exists.status == 409 and "config" in exists.body["error"]
    no_pool = Harness(CONFIG.replace("    pool: 203.0.113.0/28\n", ""))
    unknown = no_pool.call("POST", "/v1/instances", {"service": "nope", "name": "x", "binding": "198.51.100.40"})
    assert unknown.status == 409 and "unknown service" in unknown.body["error"]
    assert h.saved == [] and len(h.state.instances()) == 1


def test_invalid_registration_gets_422_with_field_paths() -> None:
    h = Harness()
    answer = h.call("POST", "/v1/instances", body(binding="not-an-ip", capacity=-1,
                                                  health={"type": "http", "url": "http://x/", "interval": 0},
                                                  monitoring=["cpu_utilization", "warp_factor"]))
    assert answer.status == 422
    locs = {f["loc"] for f in answer.body["fields"]}
    assert {"binding", "capacity", "health.interval", "monitoring"} <= locs
    monitoring = next(f["msg"] for f in answer.body["fields"] if f["loc"] == "monitoring")
    assert "warp_factor" in monitoring and "mean_latency" in monitoring  # the known names are listed
    assert h.call("POST", "/v1/instances", [1, 2]).status == 422
    assert h.call("POST", "/v1/instances", None).status == 422


def test_etsi_parameters_map_to_wire_metrics_and_network_ones_to_probes() -> None:
    h = Harness()
    answer = h.call("POST", "/v1/instances", body(
        monitoring=["CPU utilization", "memory_utilization", "mean latency", "peak packet loss rate"],
        parameters={"cpu_utilization": 35, "Memory utilization": 60}))
    assert answer.status == 201, answer.body
    view = answer.body["instance"]
    assert view["metrics"] == {"cpu_utilization": 35.0, "memory_utilization": 60.0}
    assert view["monitoring"]["mean_latency"] == {"kind": "network", "carried_as": "rtt_mean_us",
                                                  "measured_by": "router probes"}
    assert view["monitoring"]["cpu_utilization"]["measured_by"] == "agent"
    refused = h.call("POST", "/v1/instances", body(name="c", binding="198.51.100.13",
                                                   parameters={"mean_latency": 5}))
    assert refused.status == 422 and "path probes" in refused.body["fields"][0]["msg"]


def test_update_changes_the_announcement_and_keeps_health() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body(capacity=500))
    h.advance(5)
    answer = h.call("PUT", "/v1/instances/web/b", {"binding": "198.51.100.12", "capacity": 800})
    assert answer.status == 200 and answer.body["changed"] is True
    assert answer.body["instance"]["metrics"]["capacity"] == 800.0
    assert [type(c) for c in h.commands] == [Announce]
    assert h.tasks.starts == 1, "no task restart when sources and health are unchanged"
    assert h.saved[-1][0]["capacity"] == 800.0
    assert h.call("PUT", "/v1/instances/web/a", {"binding": "198.51.100.11"}).status == 409  # config wins
    assert h.call("PUT", "/v1/instances/web/zz", {"binding": "198.51.100.77"}).status == 404
    renamed = h.call("PUT", "/v1/instances/web/b", {"name": "c", "binding": "198.51.100.12"})
    assert renamed.status == 422


def test_update_of_health_restarts_the_tasks() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body())
    answer = h.call("PUT", "/v1/instances/web/b", body(health={"type": "tcp", "host": "198.51.100.12", "port": 80}))
    assert answer.status == 200 and h.tasks.starts == 2
    assert answer.body["instance"]["health"] == "unknown"  # a new check starts from scratch


def test_immediate_deregistration_withdraws_now() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body())
    answer = h.call("DELETE", "/v1/instances/web/b?immediate=true")
    assert answer.status == 200 and answer.body["removed"] == "web/b"
    assert [type(c) for c in h.commands] == [Withdraw]
    assert not h.state.has(InstanceId("web", "b")) and h.tasks.running == set()
    assert h.saved[-1] == []
    assert h.call("DELETE", "/v1/instances/web/b").status == 404
    assert h.call("DELETE", "/v1/instances/web/a").status == 409  # from the config


def test_graceful_deregistration_drains_then_withdraws_at_zero_sessions_or_deadline() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body(static={"active_sessions": 4}))
    h.advance(5)
    answer = h.call("DELETE", "/v1/instances/web/b")
    assert answer.status == 202 and answer.body["instance"]["admin"] == "draining"
    assert answer.body["instance"]["deregistering"] == {"deadline_in": 30.0}
    assert h.state.status(InstanceId("web", "b")).admin is Admin.DRAINING
    assert h.saved[-1] == [], "a deregistered instance does not come back after a restart"
    assert h.call("POST", "/v1/instances", body()).status == 409  # still leaving
    assert h.api.next_due() == 108.0  # the settle time (drain.settle, 3 s): a count read after it may end it
    h.advance(3)
    assert h.api.next_due() == 135.0  # 4 sessions: the deadline is next
    h.advance(7)
    assert h.state.has(InstanceId("web", "b"))
    h.advance(20)  # the deadline
    assert not h.state.has(InstanceId("web", "b"))
    assert [type(c) for c in h.commands] == [Withdraw]


def test_graceful_deregistration_ends_early_when_sessions_reach_zero() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body(static={"active_sessions": 0}))
    h.advance(5)
    answer = h.call("DELETE", "/v1/instances/web/b?deadline=100")
    assert answer.status == 202
    h.advance(2.9)  # 0 sessions, but the count must be read drain.settle (3 s) after it began: a router may
    assert h.state.has(InstanceId("web", "b"))  # still pin a session on it meanwhile (decision 0011)
    assert h.api.next_due() == pytest.approx(108.0)
    h.advance(0.1)
    assert not h.state.has(InstanceId("web", "b"))
    assert h.call("DELETE", "/v1/instances/web/c?deadline=-1").status == 404
    h.call("POST", "/v1/instances", body(name="c", binding="198.51.100.13"))
    assert h.call("DELETE", "/v1/instances/web/c?deadline=soon").status == 400


def test_restart_restores_registrations_and_config_wins_conflicts() -> None:
    h = Harness()
    h.call("POST", "/v1/instances", body())
    h.call("POST", "/v1/instances", {"service": "video", "name": "v1", "binding": "198.51.100.31"})
    saved = h.saved[-1] + [
        {"service": "web", "name": "a", "binding": "198.51.100.60"},  # the config's instance
        {"service": "web", "name": "x", "binding": "198.51.100.11"},  # the config's D-BID
        {"service": "web", "name": "y", "binding": "198.51.100.61", "dsid": "203.0.113.77"},  # another D-SID
        {"service": "web", "name": "z", "binding": "bogus"},
    ]
    again = Harness(saved=saved)
    names = sorted(str(iid) for iid, _ in again.state.instances())
    assert names == ["video/v1", "web/a", "web/b"]
    assert again.tasks.running == {InstanceId("web", "b"), InstanceId("video", "v1")}
    conflicts = again.call("GET", "/v1/instances").body["conflicts"]
    assert [(c["instance"], c["origin"]) for c in conflicts] == [("a", "state_file"), ("x", "state_file"),
                                                                 ("y", "state_file"), ("z", "state_file")]
    assert "config" in conflicts[0]["reason"] and "binding" in conflicts[3]["reason"]
    assert again.saved[-1] == h.saved[-1], "the state file is rewritten without the losers"


def test_second_instance_without_add_path_is_refused() -> None:
    h = Harness(CONFIG.replace("add_path: true", "add_path: false"))
    answer = h.call("POST", "/v1/instances", body())
    assert answer.status == 409 and "add_path" in answer.body["error"]


@pytest.mark.parametrize(("method", "target", "status"), [
    ("GET", "/nope", 404), ("PATCH", "/v1/instances/web/a", 405), ("DELETE", "/v1/instances", 405),
    ("GET", "/v1/instances/web", 404), ("POST", "/v1/services", 405),
])
def test_routing_errors(method: str, target: str, status: int) -> None:
    assert Harness().call(method, target).status == status


def test_parameters_endpoint_lists_the_etsi_names() -> None:
    names = Harness().call("GET", "/v1/parameters").body["parameters"]
    assert {"cpu_utilization", "memory_utilization", "mean_latency", "peak_latency", "mean_throughput",
            "peak_throughput", "mean_packet_loss_rate", "peak_packet_loss_rate"} <= set(names)


def test_a_dbid_of_the_other_family_is_refused_at_binding() -> None:
    answer = Harness().call("POST", "/v1/instances", body(binding="2001:db8::1"))
    assert answer.status == 422 and answer.body["fields"][0]["loc"] == "binding"
    assert "IPv6 D-BID" in answer.body["fields"][0]["msg"]


def test_validate_reports_every_unknown_field() -> None:
    checked = validate({"service": "web", "name": "b", "binding": "198.51.100.1", "colour": 1, "size": 2})
    assert isinstance(checked, list) and sorted(e.loc for e in checked) == ["colour", "size"]
