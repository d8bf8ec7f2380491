"""RouterRuntime with fed ExaBGP lines and a fake dataplane that checks what it is given."""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence

import pytest

from dyncast_bgp.config.loader import parse
from dyncast_bgp.dataplane.desired import ApplyResult, DataplaneError, DesiredState
from dyncast_bgp.deferred import RELEASE_CHUNK
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.model import InstanceKey, ServiceId
from dyncast_bgp.router import runtime as runtime_module
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.wire.exabgp_json import parse_line
from tests.unit.exabgp_lines import end_of_rib, peer_up, update, withdraw

CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.05
  startup_hold: %(hold)s
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
"""
SVC, A, B = "203.0.113.10/32", "198.51.100.11", "198.51.100.12"


class CheckingDataplane:
    """Fails the test on a malformed desired state; can refuse the first apply."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.applied: list[DesiredState] = []
        self.fail_first = fail_first

    def apply(self, desired: DesiredState) -> ApplyResult:
        for service in desired.services:
            total = sum(target.weight for target in service.instances)
            assert math.isclose(total, 1.0) or total == 0.0, f"weights of {service.service} sum to {total}"
        if self.fail_first:
            self.fail_first = False
            raise DataplaneError("refused on purpose")
        self.applied.append(desired)
        return ApplyResult(changed=True, seconds=0.001)

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        return {}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        return 0


Wait = float | Callable[[], bool]
"""Before a line: seconds to sleep, or a condition to poll for (20 s at most). Conditions, where a test needs
the router to have done something first: fixed sleeps of 0.2-0.3 s fail on a CI host at 50-70 % steal."""


async def feed(lines: Sequence[tuple[Wait, str | None]]) -> AsyncIterator[str]:
    """The lines after their waits; a line None only waits."""
    for wait, line in lines:
        if callable(wait):
            deadline = time.monotonic() + 20.0
            while not wait():
                assert time.monotonic() < deadline, f"the condition before {line!r:.80} never held"
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(wait)
        if line is not None:
            yield line


def run(lines: Sequence[tuple[Wait, str | None]], dataplane: CheckingDataplane, hold: float = 0) -> RouterRuntime:
    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % {"hold": hold}), lines=feed(lines), dataplane=dataplane)
        task = asyncio.create_task(runtime.run())
        await asyncio.wait_for(task, timeout=30)
        return runtime
    return asyncio.run(go())


def weights(state: DesiredState) -> dict[str, float]:
    return {str(t.key.binding): t.weight for s in state.services for t in s.instances}


def test_decisions_reach_the_dataplane_coalesced_and_bad_lines_are_skipped() -> None:
    dataplane = CheckingDataplane()
    lines: list[tuple[Wait, str | None]] = [
             (0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (0, update(1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (0, "{garbage"),
             (lambda: len(dataplane.applied) >= 1, withdraw(2, "10.0.0.3", SVC, 2)),
             (lambda: len(dataplane.applied) >= 2, "")]
    runtime = run(lines, dataplane)
    assert runtime.counters.rejected_lines == 1
    assert weights(dataplane.applied[0]) == {A: 0.5, B: 0.5}  # both updates in one apply
    assert weights(dataplane.applied[-1]) == {A: 1.0, B: 0.0}  # B lingers at 0 for its flows
    assert len(dataplane.applied) == 2


def test_a_refused_apply_is_counted_and_the_next_change_is_applied() -> None:
    dataplane = CheckingDataplane(fail_first=True)
    lines: list[tuple[Wait, str | None]] = [
        (0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20})),
        (lambda: not dataplane.fail_first, update(2, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20})),
        (lambda: bool(dataplane.applied) and weights(dataplane.applied[-1]) == {A: 0.5, B: 0.5}, "")]
    runtime = run(lines, dataplane)
    assert runtime.counters.apply_errors == 1
    assert weights(dataplane.applied[-1]) == {A: 0.5, B: 0.5}


def test_kernel_is_first_programmed_after_end_of_rib_not_before() -> None:
    """After a restart a half-learned RIB must not replace the installed state (that would evict flows)."""
    dataplane = CheckingDataplane()
    applied_before_eor: list[int] = []
    lines = [(0, peer_up(1, "10.0.0.3")),
             (0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20})),
             (0.5, update(2, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20})),
             (0, end_of_rib(2, "10.0.0.3")),
             (0.3, "")]

    async def go() -> None:
        runtime = RouterRuntime(parse(CONFIG % {"hold": 30}), lines=feed(lines), dataplane=dataplane)
        task = asyncio.create_task(runtime.run())
        await asyncio.sleep(0.4)  # A is known, B not yet, no End-of-RIB: nothing may be applied
        applied_before_eor.append(len(dataplane.applied))
        await asyncio.wait_for(task, timeout=30)

    asyncio.run(go())
    assert applied_before_eor == [0]
    assert [weights(state) for state in dataplane.applied] == [{A: 0.5, B: 0.5}]  # the full RIB, once


def test_without_end_of_rib_the_hold_expires_and_the_kernel_is_programmed() -> None:
    dataplane = CheckingDataplane()
    lines = [(0, peer_up(1, "10.0.0.3")), (0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20})),
             (1.0, "")]
    run(lines, dataplane, hold=0.3)
    assert [weights(state) for state in dataplane.applied] == [{A: 1.0}]


class TimedDataplane(CheckingDataplane):
    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def apply(self, desired: DesiredState) -> ApplyResult:
        self.times.append(time.monotonic())
        return super().apply(desired)


def test_an_isolated_change_is_applied_at_once_and_a_burst_after_it_waits_the_interval() -> None:
    """Leading-edge coalescing: apply_interval 0.4 s delays only changes that follow an apply closely."""
    dataplane = TimedDataplane()
    sent: list[float] = []

    async def lines() -> AsyncIterator[str]:
        script = [(0.0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
                  (1.0, update(2, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000})),
                  (0.05, update(3, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 90, "capacity": 1000})),
                  (0.6, "")]
        for delay, line in script:
            await asyncio.sleep(delay)
            sent.append(time.monotonic())
            yield line

    async def go() -> None:
        config = parse(CONFIG.replace("apply_interval: 0.05", "apply_interval: 0.4") % {"hold": 0})
        runtime = RouterRuntime(config, lines=lines(), dataplane=dataplane)
        await asyncio.wait_for(runtime.run(), timeout=30)

    asyncio.run(go())
    assert len(dataplane.times) == 3, dataplane.times
    assert dataplane.times[1] - sent[1] < 0.2  # quiet for a second before: applied without the 0.4 s wait
    assert dataplane.times[2] - dataplane.times[1] >= 0.39  # 50 ms after an apply: waits out the interval


def test_steps_freeze_the_live_state_and_the_periodic_full_collection_runs_when_idle() -> None:
    """router/collector.py in the runtime: a step leaves the state frozen; an idle router collects in full."""
    dataplane = CheckingDataplane()
    frozen_after_step: list[int] = []

    async def go() -> RouterRuntime:
        config = parse((CONFIG + "  gc_full_interval: 0.2\n") % {"hold": 0})
        lines = [(0.0, peer_up(1, "10.0.0.3")),
                 (0.0, update(2, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
                 (0.1, ""), (0.6, "")]
        runtime = RouterRuntime(config, lines=feed(lines), dataplane=dataplane)
        original = runtime._after_inputs

        def after() -> None:
            gc.unfreeze()
            original()
            frozen_after_step.append(gc.get_freeze_count())
        runtime._after_inputs = after  # type: ignore[method-assign]
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    runtime = asyncio.run(go())
    assert frozen_after_step and all(count > 0 for count in frozen_after_step), frozen_after_step
    assert runtime.counters.gc_full_collections >= 1
    assert runtime.collector.last is not None and runtime.counters.gc_full_seconds >= 0.0
    assert weights(dataplane.applied[-1]) == {A: 1.0}


async def burst(services: list[str], *, then: float) -> AsyncIterator[str]:
    """A peer announcing one instance of each service and its End-of-RIB in one burst (no turn of the loop
    between these lines), then nothing for ``then`` seconds before the input ends."""
    yield peer_up(1, "10.0.0.3")
    for svc in services:
        yield update(2, "10.0.0.3", svc, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})
    yield end_of_rib(3, "10.0.0.3")
    await asyncio.sleep(then)


def test_a_large_recompute_goes_in_slices_and_the_loop_runs_other_tasks_in_between(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """STEP_SLICE services per step; between two slices the loop runs its other tasks (here a ticker)."""
    monkeypatch.setattr(runtime_module, "STEP_SLICE", 2)
    dataplane = CheckingDataplane()
    events: list[str] = []
    services = [f"203.0.113.{n}/32" for n in range(1, 8)]

    async def go() -> RouterRuntime:
        runtime = RouterRuntime(parse(CONFIG % {"hold": 0}), lines=burst(services, then=0.5), dataplane=dataplane)
        step = runtime.engine.step

        def watched(now: float, *, limit: int | None = None, first: Iterable[ServiceId] = ()) -> list[Outcome]:
            changed = step(now, limit=limit, first=first)
            events.append(f"step {len(changed)}")
            return changed
        runtime.engine.step = watched  # type: ignore[method-assign]

        async def ticker() -> None:
            while True:
                events.append("tick")
                await asyncio.sleep(0)
        ticking = asyncio.create_task(ticker())
        await asyncio.wait_for(runtime.run(), timeout=30)
        ticking.cancel()
        return runtime

    runtime = asyncio.run(go())
    steps = [index for index, event in enumerate(events) if event.startswith("step ") and event != "step 0"]
    assert [events[i] for i in steps] == ["step 2", "step 2", "step 2", "step 1"], events
    counters = runtime.counters  # the whole recompute, timed from its first slice to its last
    assert (counters.recompute_services, counters.recompute_slices) == (7, 4), counters
    assert counters.recompute_seconds > 0.0
    assert all("tick" in events[a:b] for a, b in itertools.pairwise(steps)), events
    assert sorted(str(s.service) for s in dataplane.applied[-1].services) == sorted(services)


def test_after_a_start_the_first_apply_waits_until_every_service_is_decided(monkeypatch: pytest.MonkeyPatch) -> None:
    """A RIB decided in slices: the first apply (which replaces what a previous run installed) holds them all."""
    monkeypatch.setattr(runtime_module, "STEP_SLICE", 2)
    dataplane = CheckingDataplane()
    services = [f"203.0.113.{n}/32" for n in range(1, 21)]

    async def go() -> None:
        runtime = RouterRuntime(parse(CONFIG % {"hold": 15}), lines=burst(services, then=1.0), dataplane=dataplane)
        step = runtime.engine.step

        def slow(now: float, *, limit: int | None = None, first: Iterable[ServiceId] = ()) -> list[Outcome]:
            time.sleep(0.01)  # the applier's 5 ms debounce runs out between two slices
            return step(now, limit=limit, first=first)
        runtime.engine.step = slow  # type: ignore[method-assign]
        await asyncio.wait_for(runtime.run(), timeout=30)

    asyncio.run(go())
    assert dataplane.applied, "nothing applied"
    assert sorted(str(s.service) for s in dataplane.applied[0].services) == sorted(services)


def test_what_a_recompute_replaced_is_released_in_the_turns_after_it() -> None:
    """dyncast_bgp/deferred.py in the runtime: the replaced outcome (the engine's) and book entry are held while
    the router decides, then released by the loop's next turns; the decision reached the dataplane."""
    dataplane = CheckingDataplane()
    lines: list[tuple[Wait, str | None]] = [
             (0.0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (0.0, update(2, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000})),
             (lambda: len(dataplane.applied) >= 1,
              update(3, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 90, "capacity": 1000})),
             (lambda: len(dataplane.applied) >= 2, "")]
    runtime = run(lines, dataplane)
    assert runtime.deferred.released >= 2 and not runtime.deferred
    assert weights(dataplane.applied[-1])[A] > weights(dataplane.applied[-1])[B]


def test_a_turn_releases_a_chunk_once_nothing_is_pending_and_the_excess_over_the_limit_always() -> None:
    runtime = RouterRuntime(parse(CONFIG % {"hold": 0}), lines=feed([]), dataplane=None)
    deferred = runtime.deferred
    deferred.limit = 100
    for _ in range(200):
        deferred.hold(object())
    runtime.engine.on_event(parse_line(update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20})), 0.0)
    assert runtime.engine.pending == 1
    assert runtime._release() == 100 and len(deferred) == 100  # pending: the excess over the limit only
    runtime.engine.step(0.0)
    deferred.limit = 10 * RELEASE_CHUNK
    for _ in range(RELEASE_CHUNK):
        deferred.hold(object())
    assert runtime._release() == RELEASE_CHUNK and len(deferred) == 100  # nothing pending: a chunk, no more
    assert runtime._release() == 100 and not deferred


def test_the_loop_keeps_turning_until_everything_held_is_released() -> None:
    """Held objects are released a chunk per turn without waiting for an input to wake the loop."""
    async def go() -> RouterRuntime:
        lines = [(0.0, update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})),
                 (0.3, "")]
        runtime = RouterRuntime(parse(CONFIG % {"hold": 0}), lines=feed(lines), dataplane=CheckingDataplane())
        for _ in range(10 * RELEASE_CHUNK):
            runtime.deferred.hold(object())
        await asyncio.wait_for(runtime.run(), timeout=30)
        return runtime

    runtime = asyncio.run(go())
    assert not runtime.deferred and runtime.deferred.released >= 10 * RELEASE_CHUNK
