"""Whatever a client sends, the registration API answers 2xx/4xx with JSON, never 5xx, and its state stays sound."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dyncast_bgp.agent.api import ApiRequest, Registrations, parse_body
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import parse
from dyncast_bgp.config.schema import InstanceConfig

CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent: {api: {names: {dns: 203.0.113.53}, pool: 203.0.113.0/28}}
services:
  - name: web
    dsid: 203.0.113.10
    instances: [{name: a, binding: 198.51.100.11}]
"""

CONFIGURED = parse(CONFIG)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)

field_values = st.one_of(
    json_values, st.sampled_from(["198.51.100.12", "2001:db8::1", "203.0.113.10", "203.0.113.53/32", "web", "dns",
                                  "video", "b", "", "a" * 80, "cpu_utilization", "mean latency", "http://x/"]),
    st.sampled_from([{"type": "none"}, {"type": "tcp", "host": "h", "port": 80}, {"type": "http"}]),
    st.sampled_from([[{"type": "procfs"}], [{"type": "file", "path": "/x", "interval": 1, "timeout": 2}]]),
)
registration_like = st.dictionaries(
    st.sampled_from(["service", "name", "binding", "dsid", "capacity", "version", "state", "static", "metrics",
                     "health", "monitoring", "parameters", "path_id", "extra"]), field_values, max_size=8)
targets = st.sampled_from(["/v1/instances", "/v1/instances/web/b", "/v1/instances/web/a", "/v1/instances/dns/x",
                           "/v1/instances/web/b?immediate=true", "/v1/instances/web/b?deadline=x",
                           "/v1/services", "/v1/parameters", "/v1/instances/%ff/%00", "/", "/v1/instances/a/b/c"])
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])


class Tasks:
    def __init__(self) -> None:
        self.running: set[InstanceId] = set()

    def start_instance(self, iid: InstanceId, instance: InstanceConfig) -> None:
        assert iid not in self.running, "invariant violation: started twice"
        self.running.add(iid)

    def stop_instance(self, iid: InstanceId) -> None:
        self.running.discard(iid)


def serialisable(document: list[dict[str, Any]]) -> None:
    json.dumps(document, allow_nan=False)  # what the state file would get


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(methods, targets, st.one_of(json_values, registration_like)), min_size=1, max_size=6))
def test_any_request_sequence_gets_a_json_answer_below_500(requests: list[tuple[str, str, Any]]) -> None:
    state = AgentState(CONFIGURED)
    api = Registrations(CONFIGURED, state, save=serialisable)
    tasks = Tasks()
    now = 10.0
    for method, target, body in requests:
        request = ApiRequest.of(method, target, body)
        applied = api.apply(request, tasks, now)
        api.tick(tasks, now)
        state.plan(now)
        answer = api.answer(request, applied, now)
        assert 200 <= answer.status < 500
        json.dumps(answer.body, allow_nan=False)
        now += 1.0
    registered = {iid for iid, _ in state.instances()} - {InstanceId("web", "a")}
    assert registered == set(api.registered) == tasks.running
    for iid in registered:  # every registered D-BID is unique within its service
        same = [other for other, _ in state.instances() if other.service == iid.service
                and state.status(other).binding == state.status(iid).binding]
        assert same == [iid]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_any_body_bytes_parse_or_raise_value_error(raw: bytes) -> None:
    try:
        parse_body(raw)
    except ValueError as exc:
        assert str(exc).startswith("body:")
