"""Session shift on failure: which instances fail (pure), and the router evicting their flows (fake dataplane)."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable

from dyncast_bgp.config.loader import parse
from dyncast_bgp.dataplane.desired import ApplyResult, DataplaneError, DesiredState
from dyncast_bgp.model import Decision, InstanceKey, ServiceId
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.router.shift import ShiftTracker, failure_of
from tests.unit.exabgp_lines import end_of_rib, update, withdraw
from tests.unit.test_router_runtime import SVC, A, B, CheckingDataplane, Wait, feed

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
    """Records evictions and every one made while the installed state still gives the instance new flows."""

    def __init__(self) -> None:
        super().__init__()
        self.evicted: list[list[InstanceKey]] = []
        self.violations: list[str] = []

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        listed = list(keys)
        taking = {t.key for s in self.applied[-1].services for t in s.instances if t.weight > 0} \
            if self.applied else set()
        if not self.applied:
            self.violations.append(f"evicting {listed} before any state is installed")
        self.violations.extend(f"evicting {key} while the installed state still gives it new flows"
                               for key in listed if key in taking)
        self.evicted.append(listed)
        return 7 * len(listed)


class SlowDataplane(EvictingDataplane):
    """Once ``hold`` is set, the next apply waits until ``release``: inputs that arrive meanwhile are decided
    while it runs."""

    def __init__(self) -> None:
        super().__init__()
        self.hold, self.entered, self.release = threading.Event(), threading.Event(), threading.Event()

    def apply(self, desired: DesiredState) -> ApplyResult:
        if self.hold.is_set():
            self.hold.clear()
            self.entered.set()
            self.release.wait(5)
        return super().apply(desired)

    async def held(self) -> None:
        """Until the held apply has started (the test fails after 5 s)."""
        assert await asyncio.to_thread(self.entered.wait, 5), "the held apply never started"


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

    def on_b() -> float:
        return {str(t.key.binding): t.weight for s in dataplane.applied[-1].services for t in s.instances}.get(
            B, 0.0) if dataplane.applied else 0.0

    # shift: until the eviction; without: until B is out of the kernel, then a moment for a wrong eviction
    end: list[tuple[Wait, str | None]] = [(lambda: bool(dataplane.evicted), "")] if shift else [
        (lambda: bool(dataplane.applied) and on_b() == 0.0, None), (0.3, "")]
    lines: list[tuple[Wait, str | None]] = [
        (0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
        (0, update(1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000})),
        (lambda: on_b() > 0.0, withdraw(2, "10.0.0.3", SVC, 2)),
        *end]

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % (SVC, "true" if shift else "false")), lines=feed(lines),
                                dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    return asyncio.run(go()), dataplane


def test_withdrawn_instance_flows_are_evicted_after_the_apply_and_counted() -> None:
    runtime, dataplane = run(shift=True)
    assert dataplane.evicted == [[KB]] and not dataplane.violations, dataplane.violations
    assert (runtime.counters.shift_evictions, runtime.counters.shifted_flows) == (1, 7)


def test_without_shift_on_failure_flows_stay() -> None:
    runtime, dataplane = run(shift=False)
    assert dataplane.evicted == [] and runtime.counters.shifted_flows == 0


def test_a_failure_decided_while_an_apply_runs_is_evicted_after_the_next_apply_not_this_one() -> None:
    """The apply under way installs a state that still gives B new flows: evicting B's flows when it returns would
    let their next packets pick B again (CI saw a rolled-back session stay on its instance this way)."""
    dataplane = SlowDataplane()
    metrics = {"cpu_utilization": 20.0, "capacity": 1000.0}

    async def lines() -> AsyncIterator[str]:
        yield update(1, "10.0.0.3", SVC, A, 1, metrics=metrics)
        yield update(1, "10.0.0.3", SVC, B, 2, metrics=metrics)
        await _until(lambda: bool(dataplane.applied), "the first apply: A and B")
        dataplane.hold.set()
        yield update(2, "10.0.0.3", SVC, A, 1, metrics={**metrics, "cpu_utilization": 60.0})  # the second: held
        await dataplane.held()
        yield withdraw(3, "10.0.0.3", SVC, 2)
        await asyncio.sleep(0.2)  # decided (B failed) while the second apply, with B in it, runs
        dataplane.release.set()
        await _until(lambda: bool(dataplane.evicted), "the third apply (without B), then the eviction")

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % (SVC, "true")), lines=lines(), dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    runtime = asyncio.run(go())
    assert not dataplane.violations, dataplane.violations
    assert dataplane.evicted == [[KB]] and len(dataplane.applied) == 3
    on_b = [{str(t.key.binding): t.weight for s in state.services for t in s.instances}[B]
            for state in dataplane.applied]
    assert on_b[0] == 0.5 and on_b[1] > 0.5 and on_b[2] == 0.0, on_b  # A's load moved flows to B, then B failed
    assert runtime.counters.shift_evictions == 1


async def _until(check: Callable[[], bool], what: str) -> None:
    """Polled, not slept: fixed sleeps of 0.3 s failed such tests on a CI host at 50-70 % steal."""
    deadline = time.monotonic() + 20.0
    while not check():
        assert time.monotonic() < deadline, f"not within 20 s: {what}"
        await asyncio.sleep(0.01)


class RefusingDataplane(EvictingDataplane):
    """Refuses every apply (counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts = 0

    def apply(self, desired: DesiredState) -> ApplyResult:
        self.attempts += 1
        raise DataplaneError("refused on purpose")


def test_evictions_waiting_on_a_refused_apply_do_not_retry_it_at_every_step() -> None:
    """A refused apply is tried again on the next change, as without evictions waiting: inputs that change no
    decision (End-of-RIB here) must not make the router retry it (and log an error) every apply interval."""
    dataplane = RefusingDataplane()
    metrics = {"cpu_utilization": 20.0, "capacity": 1000.0}
    lines = [(0, update(1, "10.0.0.3", SVC, A, 1, metrics=metrics)),
             (0, update(1, "10.0.0.3", SVC, B, 2, metrics=metrics)),
             (0.3, withdraw(2, "10.0.0.3", SVC, 2)),  # B failed: its eviction waits for an apply that goes through
             *[(0.1, end_of_rib(3, "10.0.0.3")) for _ in range(5)],
             (0.2, "")]

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % (SVC, "true")), lines=feed(lines), dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    runtime = asyncio.run(go())
    assert dataplane.attempts == 2 and runtime.counters.apply_errors == 2, dataplane.attempts
    assert dataplane.evicted == []
