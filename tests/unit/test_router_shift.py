"""Session shift on failure: which instances fail (pure), and the router evicting their flows (fake dataplane)."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable

from dyncast_bgp.config.loader import parse
from dyncast_bgp.model import Decision, InstanceKey, ServiceId
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.router.shift import ShiftTracker, failure_of
from tests.unit.exabgp_lines import update, withdraw
from tests.unit.test_router_runtime import SVC, A, B, CheckingDataplane, feed

SID = ServiceId.parse(SVC)
KA, KB = InstanceKey(SID, ipaddress.ip_address(A)), InstanceKey(SID, ipaddress.ip_address(B))


def decision(weights: dict[InstanceKey, float], excluded: dict[InstanceKey, str] | None = None) -> Decision:
    return Decision(SID, weights, excluded=excluded or {})


def test_failure_reasons() -> None:
    assert failure_of("down") == "down"
    assert failure_of("unreachable: path probes unanswered") == "unreachable"
    assert failure_of("rtt over the 20 ms budget") == "budget"
    assert failure_of("loss not yet back below 0.009 (budget 0.01)") == "budget"
    for kept in ("draining", "drained", "overloaded (agent flag)", "utilisation over the 95% ceiling",
                 "flap-damped (penalty 3.0)", "capacity 0"):
        assert failure_of(kept) is None, kept


def test_tracker_reports_each_failure_once_and_only_where_enabled() -> None:
    tracker = ShiftTracker()
    on = lambda service: True  # noqa: E731
    assert tracker.observe([decision({KA: 0.5, KB: 0.5})], on) == {}
    assert tracker.observe([decision({KA: 1.0}, {KB: "unreachable: path probes unanswered"})], on) == {
        KB: "unreachable"}
    assert tracker.observe([decision({KA: 1.0}, {KB: "down"})], on) == {}, "already failed: not again"
    assert tracker.observe([decision({KA: 0.5, KB: 0.5})], on) == {}
    assert tracker.observe([decision({KB: 1.0})], on) == {KA: "withdrawn"}
    assert tracker.observe([decision({KA: 0.5, KB: 0.5})], on) == {}
    assert tracker.observe([decision({KA: 1.0}, {KB: "draining"})], on) == {}, "draining keeps its flows"
    assert tracker.observe([decision({KA: 1.0}, {KB: "rtt over the 20 ms budget"})], on) == {KB: "budget"}
    off = ShiftTracker()
    off.observe([decision({KA: 0.5, KB: 0.5})], lambda service: False)
    assert off.observe([decision({KA: 1.0})], lambda service: False) == {}


class EvictingDataplane(CheckingDataplane):
    def __init__(self) -> None:
        super().__init__()
        self.evicted: list[list[InstanceKey]] = []

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        listed = list(keys)
        assert self.applied, "invariant violation: evicting before any state is installed"
        assert all(key not in {t.key for s in self.applied[-1].services for t in s.instances if t.weight > 0}
                   for key in listed), "invariant violation: evicting an instance that still takes new flows"
        self.evicted.append(listed)
        return 7 * len(listed)


CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.05
  startup_hold: 0
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
  services: {"%s": {shift_on_failure: %s}}
"""


def run(shift: bool) -> tuple[RouterRuntime, EvictingDataplane]:
    dataplane = EvictingDataplane()
    lines = [(0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (0, update(1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (0.3, withdraw(2, "10.0.0.3", SVC, 2)),
             (0.3, "")]

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % (SVC, "true" if shift else "false")), lines=feed(lines),
                                dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=10)
        return runtime

    return asyncio.run(go()), dataplane


def test_withdrawn_instance_flows_are_evicted_after_the_apply_and_counted() -> None:
    runtime, dataplane = run(shift=True)
    assert dataplane.evicted == [[KB]]
    assert (runtime.counters.shift_evictions, runtime.counters.shifted_flows) == (1, 7)


def test_without_shift_on_failure_flows_stay() -> None:
    runtime, dataplane = run(shift=False)
    assert dataplane.evicted == [] and runtime.counters.shifted_flows == 0
