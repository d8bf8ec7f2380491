"""The router's whole-state reads: a metrics scrape per ``router.metrics_instances`` value, and the status file.

The router (as in bench_engine.py: 16 instances per service, every metric new) decides every service, then each
read runs on its event loop beside a ticker task that measures how long the loop was held at a time. Figures: CPU
per read, the longest hold, the series (or bytes) it exports, and its ratio to the full recompute (step + desired)
just before, measured in the same process. The status file is read after the recompute and again with nothing
decided since (what the router's writer does every ``router.status_interval`` between recomputes), each
written to a temporary file in a worker thread as the router writes it.

    .venv/bin/python benchmarks/bench_reads.py [--services 1000] [--instances 16] [--rounds 3] [--json OUT]
"""

from __future__ import annotations

import argparse
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

from bench_engine import CONFIG, _no_lines, updates

from dyncast_bgp.config.loader import parse
from dyncast_bgp.obs import log as obs_log
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
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
        return time.process_time() - started

    for runtime in runtimes.values():
        recompute(runtime, 0)
    rows: dict[str, list[dict[str, float]]] = {name: [] for name in (*MODES, "status", "status again")}
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
                cpu, longest, size = asyncio.run(held(
                    lambda: _status(runtimes["none"], memo, Path(directory) / "status.json")))  # noqa: B023
                rows[name].append({"cpu_ms": cpu * 1e3, "longest_hold_ms": longest * 1e3, "bytes": size,
                                   "recompute_ms": decided * 1e3})
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
        print(f"{label}: CPU median {cpu:.0f} ms = {ratio:.2f}x the full recompute; loop held at most "
              f"{longest:.0f} ms; {size}")
        figures[name] = {"cpu_median_ms": cpu, "over_recompute": ratio, "longest_hold_ms": longest, "rounds": got}
    if args.json:
        args.json.write_text(json.dumps({"python": platform.python_version(), "services": args.services,
                                         "instances": args.instances, "load_at_start": load, **figures,
                                         "load_at_end": os.getloadavg()}, indent=2) + "\n", encoding="utf-8")
    return 0


async def _status(runtime: RouterRuntime, memo: StatusParts, path: Path) -> int:
    """What the runtime's status writer does: the parts a slice at a time on the loop, then the file written in
    a worker thread (its CPU is counted, it holds no loop); the file's size."""
    parts = await in_slices(list(runtime.engine.outcomes()), memo.part)
    memo.done()
    head, tail = status_frame(now=0.0, counters={}, synced=True)
    await asyncio.to_thread(write_parts, path, head, parts, tail)
    return path.stat().st_size


if __name__ == "__main__":
    sys.exit(main())
