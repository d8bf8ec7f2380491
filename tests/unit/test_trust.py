"""Trust policy and metric screening at RIB intake (engine/trust.py, engine/rib.py): by hand-built examples."""

from __future__ import annotations

import ipaddress
import math

import pytest

from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import RouterConfig, Trust
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.engine.trust import (
    DBID_NOT_ALLOWED,
    DSID_NOT_ALLOWED,
    MAX_INSTANCES,
    MAX_PREFIXES,
    METRIC_INVALID,
    METRICS_CLAMPED,
    METRICS_IMPLAUSIBLE,
    Rule,
    TrustPolicy,
    implausible,
    screen,
)
from dyncast_bgp.model import ComputeMetrics, MetricsView, PathMetrics, ServiceId, StateFlag
from dyncast_bgp.router.rejections import LogLimiter, log_rejections
from dyncast_bgp.wire.community import MetricCommunity
from dyncast_bgp.wire.exabgp_json import Route, RouteKey, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

GOOD, ROGUE, OTHER = (ipaddress.ip_address(a) for a in ("10.0.9.2", "10.0.9.66", "10.0.8.1"))
SVC = ServiceId.parse("203.0.113.10/32")
FOREIGN = ServiceId.parse("192.0.2.99/32")
A, B, OUTSIDE = (ipaddress.ip_address(a) for a in ("10.1.0.11", "10.1.0.12", "172.16.0.1"))

TRUST = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  trust:
    default: {metrics: ignored}
    peers:
      - {peer: 10.0.9.2, dsids: [203.0.113.0/24], dbids: [10.1.0.0/16], max_instances: 3, max_prefixes: 2}
      - peer: 10.0.9.0/24
        name: lab-rogues
        dsids: [203.0.113.10]
        metrics: clamped
        clamp: {min_utilization: 30, max_capacity: 500, max_score: 7}
"""


def policy() -> TrustPolicy:
    return TrustPolicy.from_config(parse(TRUST).router.trust)


def route(prefix: ServiceId, next_hop: ipaddress.IPv4Address | ipaddress.IPv6Address, path_id: int = 0,
          **metrics: float) -> Route:
    communities = tuple(c.pack() for c in encode_metrics(metrics))
    return Route(prefix=prefix.prefix, next_hop=next_hop, path_id=path_id, ext_raw=b"".join(communities))


def metrics_of(rib: Rib, service: ServiceId = SVC) -> dict[str, dict[str, float]]:
    return {str(c.key.binding): dict(c.metrics.values)
            for c in rib.candidates(service, 0.0, path_of=lambda _: PathMetrics())}


def test_config_rules_first_match_and_default() -> None:
    trust = policy()
    assert trust.rule_for("10.0.9.2").label == "peer 10.0.9.2/32"
    assert trust.rule_for("10.0.9.66").label == "lab-rogues"
    assert trust.rule_for("10.0.8.1").label == "default"
    assert trust.rule_for("2001:db8::1").label == "default"
    assert parse("bgp: {router_id: 192.0.2.1, local_as: 65000}").router.trust == Trust()  # old configs: trust all


def test_config_errors_say_where() -> None:
    with pytest.raises(ConfigError, match=r"router.trust.peers\[0\].metrics"):
        parse(TRUST.replace("max_prefixes: 2}", "max_prefixes: 2, metrics: maybe}"))
    with pytest.raises(ConfigError, match=r"router.trust.peers\[0\].dsids"):
        parse(TRUST.replace("dsids: [203.0.113.0/24]", "dsids: [203.0.113.1/24]"))


def test_announcements_outside_the_rule_are_refused_counted_and_never_reach_the_rib() -> None:
    rib = Rib(trust=policy())
    changed = rib.apply(RouteUpdate(GOOD, (route(SVC, A, 1), route(FOREIGN, A, 2), route(SVC, OUTSIDE, 3))), 0.0)
    assert changed == {SVC}
    assert set(metrics_of(rib)) == {str(A)}
    assert rib.services() == [SVC]
    assert rib.counters.rejected == {DSID_NOT_ALLOWED: 1, DBID_NOT_ALLOWED: 1}
    taken = rib.take_rejections()
    assert [(r.reason, r.peer, r.service, r.binding, r.rule) for r in taken] == [
        (DSID_NOT_ALLOWED, "10.0.9.2", "192.0.2.99/32", "10.1.0.11", "peer 10.0.9.2/32"),
        (DBID_NOT_ALLOWED, "10.0.9.2", "203.0.113.10/32", "172.16.0.1", "peer 10.0.9.2/32")]
    assert "203.0.113.0/24" in taken[0].detail
    assert rib.take_rejections() == []
    rib.check_invariants()


def test_a_refused_replacement_withdraws_the_path_it_would_replace() -> None:
    rib = Rib(trust=policy())
    rib.apply(RouteUpdate(GOOD, (route(SVC, A, 1),)), 0.0)
    assert rib.apply(RouteUpdate(GOOD, (route(SVC, OUTSIDE, 1),)), 1.0) == {SVC}  # same key, next hop outside
    assert metrics_of(rib) == {}
    assert rib.counters.withdrawn == 1
    rib.check_invariants()


def test_max_instances_and_max_prefixes_count_what_the_peer_holds() -> None:
    rib = Rib(trust=policy())  # GOOD: max_instances 3, max_prefixes 2
    second, third = ServiceId.parse("203.0.113.11/32"), ServiceId.parse("203.0.113.12/32")
    rib.apply(RouteUpdate(GOOD, (route(SVC, A, 1), route(SVC, B, 2), route(second, A, 3), route(third, A, 4))), 0.0)
    assert rib.counters.rejected == {MAX_INSTANCES: 1}
    rib.apply(RouteUpdate(GOOD, (route(SVC, A, 1, cpu_utilization=5),)), 1.0)  # a replacement is not counted
    assert rib.counters.rejected == {MAX_INSTANCES: 1}
    rib.apply(RouteUpdate(GOOD, withdrawn=(RouteKey(SVC.prefix, 2),)), 2.0)
    rib.apply(RouteUpdate(GOOD, (route(third, A, 5),)), 3.0)  # room for a path, not for a third D-SID
    assert rib.counters.rejected == {MAX_INSTANCES: 1, MAX_PREFIXES: 1}
    rib.apply(RouteUpdate(GOOD, (route(SVC, B, 6),)), 4.0)  # a D-SID it already holds is fine
    assert rib.services() == [SVC, second] and len(rib) == 3
    rib.apply(RouteUpdate(GOOD, withdrawn=(RouteKey(second.prefix, 3),)), 5.0)
    rib.apply(RouteUpdate(GOOD, (route(third, A, 5),)), 6.0)  # one D-SID gone: room for another
    assert rib.services() == [SVC, third]
    rib.check_invariants()


def test_other_peers_are_not_limited_by_one_peers_rule() -> None:
    rib = Rib(trust=policy())
    rib.apply(RouteUpdate(OTHER, (route(FOREIGN, OUTSIDE, 1, cpu_utilization=10),)), 0.0)
    assert rib.counters.rejected == {}
    assert metrics_of(rib, FOREIGN) == {str(OUTSIDE): {}}  # default rule: metrics ignored


def test_clamped_metrics_cannot_claim_an_idle_or_huge_instance() -> None:
    rib = Rib(trust=policy())
    rib.apply(RouteUpdate(ROGUE, (route(SVC, A, 1, cpu_utilization=0, capacity=100_000, overall_score=10,
                                        active_sessions=3),)), 0.0)
    assert metrics_of(rib) == {str(A): {"cpu_utilization": 30.0, "capacity": 500.0, "overall_score": 7.0,
                                        "active_sessions": 3.0}}
    [rejection] = rib.take_rejections()
    assert rejection.reason == METRICS_CLAMPED and rejection.rule == "lab-rogues"
    assert rejection.detail == "cpu_utilization 0 -> 30; capacity 100000 -> 500; overall_score 10 -> 7"
    metrics_of(rib)
    assert rib.take_rejections() == []  # screened once per received route, not per read


def test_invalid_and_implausible_metrics_are_dropped_and_counted_the_route_stays() -> None:
    rib = Rib()  # no trust rules: plausibility still applies
    bad_cpu = MetricCommunity.of("cpu_utilization", 50.0)
    raw = bytearray(bad_cpu.pack())
    raw[4:8] = bytes.fromhex("7fc00000")  # float32 NaN
    nan_route = Route(prefix=SVC.prefix, next_hop=A, path_id=1,
                      ext_raw=b"".join((bytes(raw), *(c.pack() for c in encode_metrics({"capacity": 100})))))
    rib.apply(RouteUpdate(GOOD, (nan_route, route(SVC, B, 2, capacity=0, active_sessions=5, cpu_utilization=1))),
              0.0)
    assert metrics_of(rib) == {str(A): {"capacity": 100.0}, str(B): {}}
    assert rib.counters.rejected == {METRIC_INVALID: 1, METRICS_IMPLAUSIBLE: 1}
    reasons = {r.binding: r.detail for r in rib.take_rejections()}
    assert "not finite" in reasons[str(A)]
    assert reasons[str(B)] == "capacity 0 while reporting sessions; metrics discarded"


@pytest.mark.parametrize(("values", "why"), [
    ({"capacity": 1e9}, "capacity 1e+09 above the plausible 1e+08"),
    ({"service_delay": 4e9}, "service_delay 4e+09 above the plausible 3.6e+09"),
    ({"capacity": 0, "queued_requests": 1}, "capacity 0 while reporting sessions"),
    ({"capacity": 0, "active_sessions": 0}, None),
    ({"capacity": 1e8, "cpu_utilization": 0}, None),
])
def test_implausible(values: dict[str, float], why: str | None) -> None:
    assert implausible(values) == why


def test_screen_keeps_state_flags_whatever_the_mode() -> None:
    metrics = ComputeMetrics(MetricsView({"cpu_utilization": 1.0}), StateFlag.DRAINING, 7)
    for mode in ("trusted", "clamped", "ignored"):
        screened = screen(metrics, Rule("r", metrics=mode, min_utilization=50))
        assert screened.metrics.flags is StateFlag.DRAINING and screened.metrics.version == 7
    assert screen(metrics, Rule("r", metrics="ignored")).metrics.values == {}
    assert screen(metrics, Rule("r", metrics="ignored")).findings == ()  # ignoring is policy, not news


def test_an_engine_never_decides_on_a_refused_announcement() -> None:
    config = RouterConfig.model_validate({
        "trust": {"peers": [{"peer": "10.0.9.66", "dsids": ["198.51.100.0/24"]}]},
        "defaults": {"max_step": 1.0, "min_dwell": 0, "smoothing": 1.0}})
    engine = RouterEngine(config)
    engine.on_event(RouteUpdate(GOOD, (route(SVC, A, 1, cpu_utilization=50, capacity=100),)), 0.0)
    engine.on_event(RouteUpdate(ROGUE, (route(SVC, B, 1, cpu_utilization=0, capacity=10_000),)), 0.0)
    [outcome] = engine.step(0.0)
    assert dict(outcome.decision.weights) == {next(iter(outcome.decision.weights)): 1.0}
    assert {str(k.binding) for k in outcome.decision.weights} == {str(A)}
    assert outcome.decision.excluded == {}


class _Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, object]] = []

    def warning(self, event: str, **fields: object) -> object:
        self.lines.append({"event": event, **fields})
        return None


def test_rejections_are_logged_once_per_peer_instance_reason_per_minute() -> None:
    rib = Rib(trust=policy())
    recorder, limiter = _Recorder(), LogLimiter()
    for second in range(0, 130):
        rib.apply(RouteUpdate(GOOD, (route(FOREIGN, A, 1), route(SVC, OUTSIDE, 2))), float(second))
        log_rejections(rib.take_rejections(), limiter, float(second), recorder)
    assert rib.counters.rejected == {DSID_NOT_ALLOWED: 130, DBID_NOT_ALLOWED: 130}
    assert len(recorder.lines) == 6  # two keys, at 0, 60 and 120 s
    assert recorder.lines[2]["not_logged_since"] == 59 and recorder.lines[2]["reason"] == DSID_NOT_ALLOWED
    assert all(line["event"] == "input_rejected" for line in recorder.lines)


def test_log_limiter_stays_bounded() -> None:
    limiter = LogLimiter(max_keys=10)
    allowed = [limiter.allow(("p", str(i), "b", "r"), 0.0) for i in range(20)]
    assert allowed[:10] == [0] * 10 and allowed[10:] == [None] * 10
    assert limiter.allow(("p", "new", "b", "r"), 61.0) == 0  # old keys swept after the interval
    assert not math.isnan(limiter.suppressed)
