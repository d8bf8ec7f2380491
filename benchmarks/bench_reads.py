"""The router's whole-state reads: a metrics scrape per ``router.metrics_instances`` value, and the status file.

The router (as in bench_engine.py: 16 instances per service, every metric new) decides every service, then each
read runs on its event loop beside a ticker task that measures how long the loop was held at a time. Figures: CPU
per read, the longest hold, the series (or bytes) it exports, and its ratio to the full recompute (step + desired)
just before, measured in the same process. The status file is read after the recompute and again with nothing
decided since (what the router's writer does every ``router.status_interval`` between recomputes), each
written to a temporary file in a worker thread as the router writes it. A scrape with ``all`` is also made
again through the endpoint's collector (``obs/metrics.py`` ``LoopCollector``, from a thread as the HTTP server
calls it), until the build it replaces is freed: freed a chunk at a time as the router does, and at once as
before (``REAP_CHUNK`` set above the samples' count), alternated in the same process.

    .venv/bin/python benchmarks/bench_reads.py [--services 1000] [--instances 16] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the router fed as bench_engine.py feeds it

from bench_engine import CONFIG, _no_lines, scale_arguments, updates

from dyncast_bgp.config.loader import parse
from dyncast_bgp.obs import log as obs_log
from dyncast_bgp.obs import metrics
from dyncast_bgp.obs.metrics import LoopCollector
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.router.slices import in_slices
from dyncast_bgp.router.status import StatusParts, status_frame, write_parts

MODES = ("all", "weights", "none")


async def held(read: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """CPU seconds of ``read()``, the longest time another task waited for the loop meanwhile, and the result."""
    longest = 0.0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.process_time()
    result = await read()
    cpu = time.process_time() - started
    done.set()
    await task
    return cpu, longest, result


def main(argv: list[str] | None = None) -> int:
    args = scale_arguments(__doc__, services=1000, rounds=3).parse_args(argv)
    load = os.getloadavg()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.2f}; "
          f"{args.services:,} services x {args.instances} instances, {args.rounds} rounds")
    obs_log.configure("info", stream=open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115  # as the router
    now = 0.0
    runtimes = {mode: RouterRuntime(parse(CONFIG.replace("router: {", f"router: {{metrics_instances: {mode}, ")),
                                    lines=_no_lines(), dataplane=None, probes=False, clock=lambda: now)
                for mode in MODES}

    def recompute(runtime: RouterRuntime, seed: int) -> float:
        """A full recompute (every instance's metrics new) as the router runs it: CPU seconds."""
        engine = runtime.engine
        for update in updates(args.services, args.instances, seed=seed):
            engine.on_event(update, now)
        started = time.process_time()
        runtime._after_inputs()
        while engine.pending:
            runtime._after_inputs()
        engine.desired()
        cpu = time.process_time() - started
        runtime.deferred.clear()  # what the router releases in its next turns (bench_engine.py times that)
        return cpu

    for runtime in runtimes.values():
        recompute(runtime, 0)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*MODES, "status", "status again")}
    again: dict[str, list[dict[str, float]]] = {"chunks": [], "at once": []}
    for seed in range(1, args.rounds + 1):
        for mode, runtime in runtimes.items():  # each reads freshly decided services (explanations: on first read)
            now += 60.0
            decided = recompute(runtime, seed)
            cpu, longest, families = asyncio.run(held(runtime._metric_families))
            series = sum(len(family.samples) for family in families)
            rows[mode].append({"cpu_ms": cpu * 1e3, "longest_hold_ms": longest * 1e3, "series": series,
                               "recompute_ms": decided * 1e3})
        now += 60.0
        decided = recompute(runtimes["none"], seed + 100)
        memo = StatusParts()
        with tempfile.TemporaryDirectory() as directory:
            for name in ("status", "status again"):  # after the recompute, then with nothing decided since
                _, longest, (size, loop_cpu, writer_cpu) = asyncio.run(held(
                    lambda: _status(runtimes["none"], memo, Path(directory) / "status.json")))  # noqa: B023
                rows[name].append({"cpu_ms": (loop_cpu + writer_cpu) * 1e3, "loop_cpu_ms": loop_cpu * 1e3,
                                   "writer_cpu_ms": writer_cpu * 1e3, "longest_hold_ms": longest * 1e3,
                                   "bytes": size, "recompute_ms": decided * 1e3})
        chunk = metrics.REAP_CHUNK
        for name, size in (("chunks", chunk), ("at once", 1 << 62)) if seed % 2 else (("at once", 1 << 62),
                                                                                       ("chunks", chunk)):
            metrics.REAP_CHUNK = size
            try:
                _, longest, _ = asyncio.run(held(lambda: _scrape_again(runtimes["all"])))
            finally:
                metrics.REAP_CHUNK = chunk
            again[name].append({"longest_hold_ms": longest * 1e3})
        print(f"round {seed}: all again, the previous build freed in chunks: loop held "
              f"{again['chunks'][-1]['longest_hold_ms']:.0f} ms; at once: "
              f"{again['at once'][-1]['longest_hold_ms']:.0f} ms")
        print(f"round {seed}: " + "; ".join(
            f"{name} {rows[name][-1]['cpu_ms']:.0f} ms (recompute {rows[name][-1]['recompute_ms']:.0f}, held "
            f"{rows[name][-1]['longest_hold_ms']:.0f})" for name in rows))
    figures: dict[str, Any] = {}
    for name, got in rows.items():
        cpu = statistics.median(row["cpu_ms"] for row in got)
        ratio = statistics.median(row["cpu_ms"] / row["recompute_ms"] for row in got)
        longest = max(row["longest_hold_ms"] for row in got)
        size = f"{int(got[-1]['series']):,} series" if "series" in got[-1] else f"{int(got[-1]['bytes']):,} bytes"
        label = f"metrics scrape, metrics_instances: {name}" if name in MODES else f"{name} file"
        if name == "status again":
            label = "status file again, nothing decided since (router/status.py StatusParts)"
        split = (f" (loop {statistics.median(row['loop_cpu_ms'] for row in got):.0f}, writer thread "
                 f"{statistics.median(row['writer_cpu_ms'] for row in got):.0f})" if "loop_cpu_ms" in got[-1] else "")
        print(f"{label}: CPU median {cpu:.0f} ms{split} = {ratio:.2f}x the full recompute; loop held at most "
              f"{longest:.0f} ms; {size}")
        figures[name] = {"cpu_median_ms": cpu, "over_recompute": ratio, "longest_hold_ms": longest, "rounds": got}
    for name, got in again.items():
        figures[f"all again, freed {name}"] = {"longest_hold_ms": max(row["longest_hold_ms"] for row in got),
                                               "rounds": got}
        print(f"metrics scrape with all again, through the endpoint's collector, the previous build freed {name}: "
              f"loop held at most {max(row['longest_hold_ms'] for row in got):.0f} ms")
    if args.json:
        args.json.write_text(json.dumps({"python": platform.python_version(), "services": args.services,
                                         "instances": args.instances, "load_at_start": load, **figures,
                                         "load_at_end": os.getloadavg()}, indent=2) + "\n", encoding="utf-8")
    return 0


async def _scrape_again(runtime: RouterRuntime) -> LoopCollector:
    """Two scrapes through a :class:`LoopCollector` from a thread, as the HTTP server makes them, the second until
    the first build is freed; the collector, returned so that the second build is freed after the measurement
    (freed with the collector on return, it was counted as a hold of its own: found in review). The hold
    measured (see :func:`held`) spans both scrapes: the first replaces nothing, so where the second frees the
    first build is what differs with ``REAP_CHUNK``. No CPU figure: the ticker spins while the thread waits."""
    collector = LoopCollector(asyncio.get_running_loop(), runtime._metric_families, timeout=3600.0)
    await asyncio.to_thread(collector.collect)
    while collector._reaping:  # nothing replaced yet: none
        await asyncio.sleep(0.01)
    await asyncio.to_thread(collector.collect)
    while collector._reaping:
        await asyncio.sleep(0)
    return collector


async def _status(runtime: RouterRuntime, memo: StatusParts, path: Path) -> tuple[int, float, float]:
    """What the runtime's status writer does: the parts a slice at a time on the loop, then the file written in
    a worker thread (it holds no loop); the file's size, the loop's CPU seconds and the writer thread's.

    Each is counted in its own thread (``time.thread_time``): the process's CPU over the whole read would also
    count the ticker of :func:`held`, which spins on the idle loop while the thread writes (at 10,000 services
    that made a 0.2 s write look like 1 s)."""
    started = time.thread_time()
    parts = await in_slices(list(runtime.engine.outcomes()), memo.part)
    memo.done()
    head, tail = status_frame(now=0.0, counters={}, synced=True)
    loop_cpu = time.thread_time() - started

    def write() -> float:
        began = time.thread_time()
        write_parts(path, head, parts, tail)
        return time.thread_time() - began

    writer_cpu = await asyncio.to_thread(write)
    return path.stat().st_size, loop_cpu, writer_cpu


if __name__ == "__main__":
    sys.exit(main())
