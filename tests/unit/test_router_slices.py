"""Long reads of the router's state (status file, metrics endpoint) a slice at a time: the loop keeps turning."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from dyncast_bgp.config.loader import parse
from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId
from dyncast_bgp.obs.metrics import Families, LoopCollector, scalar, serve_metrics
from dyncast_bgp.router import slices
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.router.slices import in_slices
from dyncast_bgp.router.status import (
    StatusParts,
    service_part,
    status_document,
    status_frame,
    status_text,
    write_parts,
)
from dyncast_bgp.wire.exabgp_json import Route, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics
from tests.unit.test_metrics import scrape, value

POLICY = ServicePolicy(max_step=1.0, min_dwell=0, smoothing=1.0)


def outcome(number: int) -> Outcome:
    service = ServiceId.parse(f"203.0.113.{number}/32")
    candidates = [Candidate(InstanceKey(service, ipaddress.ip_address(f"198.51.100.{n}")), InstanceState.ACTIVE,
                            ComputeMetrics(values=MetricsView({"cpu_utilization": 10.0 * n, "capacity": 1000.0})),
                            PathMetrics(rtt_mean_us=1000 * n, reachable=n != 3),
                            name="caché-ü" if n == 2 else None) for n in range(1, 5)]  # a name not in ASCII
    return decide(service, candidates, POLICY, None, 0.0)


async def ticking(read: Callable[[], Awaitable[Any]]) -> tuple[Any, int]:
    """``read()``'s result and how many times another task ran while it ran."""
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            await asyncio.sleep(0)
            ticks += 1

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    result = await read()
    done.set()
    await task
    return result, ticks - before


def test_in_slices_is_the_list_and_lets_the_loop_turn_between_slices() -> None:
    items = list(range(50))
    clock = iter(float(n) for n in range(1000))  # each item "takes" one second
    result, ticks = asyncio.run(ticking(lambda: in_slices(items, lambda n: n * n, seconds=4.5,
                                                          clock=lambda: next(clock))))
    assert result == [n * n for n in items]
    assert 9 <= ticks <= 11, ticks  # a turn after every 5 items (4.5 s), not after each and not never
    whole, ticks = asyncio.run(ticking(lambda: in_slices(items, str, seconds=3600.0)))
    assert whole == [str(n) for n in items] and ticks <= 1


def test_the_status_text_is_the_status_document() -> None:
    outcomes = [outcome(n) for n in range(1, 6)]
    counters = {"applies": 3, "lines": 7}
    document = status_document(outcomes, now=12.5, counters=counters, synced=True)
    text = status_text([service_part(o) for o in outcomes], now=12.5, counters=counters, synced=True)
    assert text.endswith("}\n") and json.loads(text) == document
    assert list(json.loads(text)["services"]) == [f"203.0.113.{n}/32" for n in range(1, 6)]
    assert json.loads(status_text([], now=1.0, counters={}, synced=False))["services"] == {}


def test_the_status_file_is_written_part_by_part_and_never_left_half_written(tmp_path: Path) -> None:
    outcomes = [outcome(n) for n in range(1, 6)]
    parts = [service_part(o) for o in outcomes]
    assert all(type(part) is bytes and part.isascii() for part in parts)  # json.dumps escapes the rest
    head, tail = status_frame(now=3.0, counters={"applies": 1}, synced=True)
    path = tmp_path / "status.json"
    write_parts(path, head, parts, tail)
    assert path.read_text() == status_text(parts, now=3.0, counters={"applies": 1}, synced=True)
    assert json.loads(path.read_text()) == status_document(outcomes, now=3.0, counters={"applies": 1}, synced=True)

    class Broken(list[bytes]):  # a write that fails half way (a full disk, say)
        def __iter__(self) -> Iterator[bytes]:
            yield self[0]
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_parts(path, head, Broken(parts), tail)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status.json"]  # the old file, no temporary left
    assert json.loads(path.read_text())["time"] == 3.0


def test_status_parts_are_made_again_only_for_new_outcomes() -> None:
    memo = StatusParts()
    first = [outcome(n) for n in range(1, 4)]
    assert [memo.part(o) for o in first] == [service_part(o) for o in first] and memo.made == 3
    memo.done()
    second = [first[0], outcome(2), first[2]]  # service 2 decided again (a new, equal outcome); 3 the same
    assert [memo.part(o) for o in second] == [service_part(o) for o in second] and memo.made == 4
    memo.done()
    assert [memo.part(o) for o in second[:1]] == [service_part(second[0])] and memo.made == 4
    memo.done()  # services 2 and 3 gone: forgotten, so their outcomes are not held
    assert memo.part(second[2]) == service_part(second[2]) and memo.made == 5


def test_the_gauges_are_to_dict_without_the_factors() -> None:
    for item in outcome(1).explain:
        whole, gauges = item.to_dict(), item.gauges()
        assert gauges == {name: whole[name] for name in gauges}
        assert set(gauges) == {"instance", "metrics", "metrics_age", "path", "scores", "weight", "eligible"}


class CountingLoop:
    """The event loop, counting the callbacks other threads schedule on it (a scrape's request to build)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.scheduled = 0

    def call_soon_threadsafe(self, callback: Callable[[], None]) -> None:
        self.loop.call_soon_threadsafe(callback)
        self.scheduled += 1


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait on the loop until ``check()`` (no fixed sleeps: a stalling VM delays threads by 100s of ms)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def test_a_build_in_slices_answers_scrapes_and_one_runs_at_a_time() -> None:
    async def go() -> list[float | int]:
        builds = {"started": 0, "finished": 0, "fail": False}
        gate = asyncio.Event()

        async def build() -> Families:
            builds["started"] += 1
            number = builds["started"]
            await gate.wait()
            builds["finished"] += 1
            if builds["fail"]:
                raise RuntimeError("bug in a slice")
            return [scalar("dyncast_test_value", "test", number)]

        loop = CountingLoop(asyncio.get_running_loop())
        registry = CollectorRegistry()
        collector = LoopCollector(loop, build, timeout=20.0)  # type: ignore[arg-type]  # the loop's one method used
        registry.register(collector)
        endpoint = serve_metrics("127.0.0.1:0", registry)
        try:
            first = asyncio.create_task(asyncio.to_thread(scrape, endpoint.port))
            second = asyncio.create_task(asyncio.to_thread(scrape, endpoint.port))  # while the first build runs
            await until(lambda: loop.scheduled == 2, "both scrapes asked for a build")
            await asyncio.sleep(0.01)  # their requests run on the loop
            started = builds["started"]
            gate.set()
            one, two = await first, await second
            gate.clear()
            collector.timeout = 0.3
            late = await asyncio.to_thread(scrape, endpoint.port)  # the build waits past the timeout: last ones
            collector.timeout = 20.0
            gate.set()
            await until(lambda: builds["finished"] == 2, "the late build finished")
            await asyncio.sleep(0.01)  # and what it built is kept (a done callback)
            after = await asyncio.to_thread(scrape, endpoint.port)  # the late build's, then a new one
            builds["fail"] = True
            failed = await asyncio.to_thread(scrape, endpoint.port)  # a build that raises: the previous ones
        finally:
            await asyncio.to_thread(endpoint.close)
        return [started] + [value(s, "dyncast_test_value") for s in (one, two, late, after, failed)] + [collector.late]

    started, one, two, late, after, failed, lates = asyncio.run(go())
    assert started == 1 and (one, two) == (1.0, 1.0), "the second scrape waited for the build under way"
    assert late == 1.0 and lates == 1
    assert after == 3.0, "the late build (2) finished and the next scrape built anew (3)"
    assert failed == 3.0


CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
"""


async def _nothing() -> AsyncIterator[str]:
    return
    yield


def test_the_router_s_metrics_and_status_reads_let_the_loop_turn_between_services(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slices, "SLICE_SECONDS", 0.0)
    runtime = RouterRuntime(parse(CONFIG), lines=_nothing(), dataplane=None, probes=False)
    peer = ipaddress.IPv4Address("192.0.2.1")
    for number in range(1, 31):
        prefix = ipaddress.IPv4Network(f"203.0.113.{number}/32")
        for n in (1, 2):
            community = encode_metrics({"cpu_utilization": 10.0 * n, "capacity": 1000.0})
            runtime.engine.on_event(RouteUpdate(peer, (Route(prefix, ipaddress.IPv4Address(f"198.51.100.{n}"), n,
                                                             (65001,), ext_raw=b"".join(c.pack() for c in community)),
                                                       )), 0.0)
    runtime.engine.step(0.0)

    families, ticks = asyncio.run(ticking(runtime._metric_families))
    weights = [s for f in families if f.name == "dyncast_router_weight" for s in f.samples]
    assert len(weights) == 60 and ticks >= 29, ticks
    parts, ticks = asyncio.run(ticking(lambda: in_slices(list(runtime.engine.outcomes()), service_part)))
    assert len(parts) == 30 and ticks >= 29


def test_each_slice_is_frozen_and_the_collector_runs_between_slices() -> None:
    import gc  # noqa: PLC0415

    from dyncast_bgp import gcpause  # noqa: PLC0415

    seen: list[tuple[bool, int, int]] = []

    async def go() -> list[list[dict[str, int]]]:
        done = asyncio.Event()

        async def between() -> None:  # what another task sees while the read waits between its slices
            while not done.is_set():
                seen.append((gc.isenabled(), gcpause.depth(), gc.get_count()[0]))
                await asyncio.sleep(0)

        task = asyncio.create_task(between())
        await asyncio.sleep(0)
        built = await in_slices(list(range(40)), lambda n: [{"n": n, "m": m} for m in range(500)], seconds=0.0)
        done.set()
        await task
        return built

    enabled = gc.isenabled()
    gc.enable()
    try:
        built = asyncio.run(go())
    finally:
        if not enabled:
            gc.disable()
    assert len(built) == 40 and built[39][499] == {"n": 39, "m": 499}
    assert len(seen) >= 39 and all(on and depth == 0 for on, depth, _ in seen), seen[:5]
    # what the slices built (20,000 dicts) is frozen: the young generation holds only what was made since
    assert max(young for _, _, young in seen) < 2_000, seen
