"""Trust policy at RIB intake (engine/trust.py): properties over random rules and random BGP event sequences.

- a refused announcement never reaches a decision, and the counted limits hold;
- rules that allow everything with trusted metrics behave exactly like no policy;
- ``metrics: ignored`` gives the same weights as an agent that announced no metrics at all;
- clamped metrics always lie within the rule's bounds.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.engine.trust import Rule, TrustPolicy, passes_as_announced, refusal, screen
from dyncast_bgp.model import ComputeMetrics, MetricsView, PathMetrics, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import Event, PeerState, Route, RouteKey, RouteUpdate, SessionState
from dyncast_bgp.wire.metrics import encode_metrics

PEERS = ("10.0.9.1", "10.0.9.2", "10.0.8.1")
PREFIXES = ("203.0.113.10/32", "203.0.113.11/32", "198.51.100.10/32")
NEXT_HOPS = ("10.1.0.11", "10.1.0.12", "172.16.0.11")
DEFAULTS = {"max_step": 1.0, "min_dwell": 0, "smoothing": 1.0, "fallback_grace": 0,
            "flap_dampening": {"enabled": False}}

metric_values = st.fixed_dictionaries({}, optional={
    "cpu_utilization": st.floats(0, 100), "capacity": st.sampled_from([0, 1, 100, 1000, 1e9]),
    "active_sessions": st.integers(0, 50), "overall_score": st.floats(0, 10)})
raws = st.builds(lambda values, flags: tuple(c.pack() for c in encode_metrics(values, flags=StateFlag(flags))),
                 metric_values, st.sampled_from([0, 1, 4]))


@st.composite
def events(draw: st.DrawFn) -> Event:
    peer = ipaddress.ip_address(draw(st.sampled_from(PEERS)))
    if draw(st.integers(0, 9)) == 0:
        return PeerState(peer, SessionState.DOWN, None)
    announced = draw(st.lists(st.builds(
        lambda prefix, hop, path_id, raw: Route(ipaddress.ip_network(prefix), ipaddress.ip_address(hop), path_id,
                                                ext_raw=b"".join(raw)),
        st.sampled_from(PREFIXES), st.sampled_from(NEXT_HOPS), st.integers(0, 2), raws), max_size=3))
    withdrawn = draw(st.lists(st.builds(lambda prefix, path_id: RouteKey(ipaddress.ip_network(prefix), path_id),
                                        st.sampled_from(PREFIXES), st.integers(0, 2)), max_size=2))
    return RouteUpdate(peer, tuple(announced), tuple(withdrawn))


@st.composite
def rules(draw: st.DrawFn) -> dict[str, Any]:
    rule: dict[str, Any] = {"metrics": draw(st.sampled_from(["trusted", "clamped", "ignored"]))}
    if draw(st.booleans()):
        rule["dsids"] = draw(st.lists(st.sampled_from([*PREFIXES, "203.0.113.0/24"]), max_size=2))
    if draw(st.booleans()):
        rule["dbids"] = draw(st.lists(st.sampled_from([*NEXT_HOPS, "10.1.0.0/16"]), max_size=2))
    if draw(st.booleans()):
        rule["max_instances"] = draw(st.integers(0, 3))
    if draw(st.booleans()):
        rule["max_prefixes"] = draw(st.integers(0, 2))
    return rule


def no_path(_: object) -> PathMetrics:
    return PathMetrics()


@settings(max_examples=60, deadline=None)
@given(st.lists(rules(), min_size=2, max_size=2), rules(), st.lists(events(), max_size=25))
def test_a_refused_announcement_never_reaches_a_decision(peer_rules: list[dict[str, Any]], default: dict[str, Any],
                                                         sequence: list[Event]) -> None:
    config = RouterConfig.model_validate({
        "defaults": DEFAULTS,
        "trust": {"default": default, "peers": [{"peer": PEERS[0], **peer_rules[0]},
                                                 {"peer": "10.0.9.0/24", **peer_rules[1]}]}})
    engine = RouterEngine(config)
    policy = engine.rib.trust
    for number, event in enumerate(sequence):
        engine.on_event(event, float(number))
        engine.rib.check_invariants()
        engine.step(float(number))
        for peer in PEERS:  # the counted limits hold
            rule = policy.rule_for(peer)
            held = [path for service in engine.rib.services() for path in engine.rib.paths(service)
                    if path.key[0] == peer]
            if rule.max_instances is not None:
                assert len(held) <= rule.max_instances
            if rule.max_prefixes is not None:
                assert len({path.key[1] for path in held}) <= rule.max_prefixes
    for service in engine.rib.services():
        outcome = engine.outcome(service)
        assert outcome is not None
        for key in [*outcome.decision.weights, *outcome.decision.excluded]:
            assert any(refusal(policy.rule_for(path.key[0]), service.prefix, key.binding) is None
                       for path in engine.rib.paths(service) if path.next_hop == key.binding), key


@settings(max_examples=80, deadline=None)
@given(st.lists(events(), max_size=25))
def test_trust_everything_is_no_policy(sequence: list[Event]) -> None:
    permissive = TrustPolicy(Rule("default"), [(ipaddress.ip_network("10.0.9.0/24"), Rule("lab"))])
    plain, trusting = Rib(), Rib(trust=permissive, track_instances=True)
    for number, event in enumerate(sequence):
        assert plain.apply(event, float(number)) == trusting.apply(event, float(number))
    trusting.check_invariants()
    assert plain.services() == trusting.services()
    for service in plain.services():
        assert plain.candidates(service, 99.0, path_of=no_path) == trusting.candidates(service, 99.0, path_of=no_path)
    assert plain.counters == trusting.counters


def _neutral(route: Route) -> Route:
    """The same route as announced by an agent that reports no metrics, only its state flags."""
    rib = Rib()
    rib.apply(RouteUpdate(ipaddress.ip_address(PEERS[0]), (route,)), 0.0)
    [path] = rib.paths(ServiceId(route.prefix))
    flags = path.metrics.flags
    return route._replace(ext_raw=b"".join(c.pack() for c in encode_metrics({}, flags=flags)))


@settings(max_examples=50, deadline=None)
@given(st.lists(events(), max_size=20))
def test_ignored_metrics_weigh_exactly_like_no_metrics(sequence: list[Event]) -> None:
    ignored = RouterEngine(RouterConfig.model_validate({
        "defaults": DEFAULTS, "trust": {"peers": [{"peer": PEERS[2], "metrics": "ignored"}]}}))
    reference = RouterEngine(RouterConfig.model_validate({"defaults": DEFAULTS}))
    for number, event in enumerate(sequence):
        ignored.on_event(event, float(number))
        same = event
        if isinstance(event, RouteUpdate) and str(event.peer) == PEERS[2]:
            same = event._replace(announced=tuple(_neutral(route) for route in event.announced))
        reference.on_event(same, float(number))
        assert ([o.decision for o in ignored.step(float(number))]
                == [o.decision for o in reference.step(float(number))])


@settings(max_examples=300, deadline=None)
@given(metric_values, st.floats(0, 100), st.floats(0, 1e6) | st.none(), st.floats(0, 10))
def test_clamped_metrics_lie_within_the_bounds(values: dict[str, float], floor: float, cap: float | None,
                                               best: float) -> None:
    rule = Rule("r", metrics="clamped", min_utilization=floor, max_capacity=cap, max_score=best)
    metrics = screen(ComputeMetrics(MetricsView(values)), rule).metrics
    if "cpu_utilization" in metrics.values:
        assert metrics.values["cpu_utilization"] >= floor
    if "overall_score" in metrics.values:
        assert metrics.values["overall_score"] <= best
    if cap is not None and "capacity" in metrics.values:
        assert metrics.values["capacity"] <= cap
    assert set(metrics.values) <= set(values)


wide_values = st.dictionaries(st.sampled_from(["cpu_utilization", "capacity", "active_sessions", "overall_score",
                                               "queued_requests", "service_delay"]),
                              st.floats(0, 1e12) | st.sampled_from([0.0, 100.0, 101.0, 1e9]), max_size=5)


@settings(max_examples=400, deadline=None)
@given(wide_values, st.sampled_from(["trusted", "clamped", "ignored"]), st.booleans())
def test_what_passes_as_announced_is_what_screening_leaves_alone(values: dict[str, float], mode: str,
                                                                 view: bool) -> None:
    """The RIB's fast path (trust.passes_as_announced) never skips a finding screen() would make."""
    metrics = ComputeMetrics(MetricsView(values) if view else values, StateFlag.DRAINING)  # type: ignore[arg-type]
    rule = Rule("r", metrics=mode, max_capacity=500.0)
    if passes_as_announced(metrics, rule):
        screened = screen(metrics, rule)
        assert screened.metrics is metrics and screened.findings == ()
