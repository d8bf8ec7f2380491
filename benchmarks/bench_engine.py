#!/usr/bin/env python3
"""The router's whole full recompute: every instance re-announced with new metrics, then ``RouterEngine.step``
and ``desired()`` (issue 3 goal for a full recompute: < 500 ms at 10,000 services x 16 instances).

``bench_decision.py`` times the decision function over candidates built beforehand; this times what the
router does between the last UPDATE of a burst and the dataplane's desired state, on the same scale:

- **step**: ``RouterEngine.step(now)`` with every service dirty: the RIB's candidates of each block of
  services (``Rib.rows``: the freshest path per D-BID, the metric communities decoded and screened as
  columns, the path metrics), flap and canary bookkeeping, the batch decision, and recording each outcome
  (lingering instances, reviews, whether the decision changed);
- **desired**: ``RouterEngine.desired()``, the whole dataplane target, rebuilt for the services whose
  decision changed (every one, here);
- the share of the step spent in the RIB's candidates (``Rib.rows`` and ``Rib.candidates``) and in
  ``decide_many`` (timed by wrapping them).

The UPDATEs (one path each, as ExaBGP hands them over: six metric communities, ADD-PATH path ids, one
route reflector) are built and applied outside the timing; applying them is the intake benchmark's
business (``bench_intake.py``). ``now`` advances past the dwell, so weights really move (the worst case).

Baseline, in the same process: ``decide_many`` over the candidates of the last round, built again beforehand
(what ``bench_decision.py`` measures). Times are CPU times of this process. Two kinds of rounds, alternated
(a shared host's speed drifts during a run; their ratio, round by round, is the figure to compare): with
Python's collector left as it is by default (the number of full, generation 2, collections during each step
is shown), and as the router runs (``router/collector.py``, decision 0008): the step a slice of
``STEP_SLICE`` services at a time (the longest slice is how long the router's loop is held) and ``desired()``,
each with the collector paused and what they leave alive frozen afterwards (the freeze is timed with them). The
router's periodic full collection, which the frozen state costs instead, is timed once at the end. What each
recompute replaced (outcomes, decision-book entries) the router releases in the turns of its loop after it
(``dyncast_bgp/deferred.py``, decision 0015); those turns are timed after each router round and shown apart.
A third kind of round, alternated with the router's in the same process, frees what each turn replaced before
the turn ends ("in place", as the router did before decision 0015): the ratio of the two is that decision's
figure.

    .venv/bin/python benchmarks/bench_engine.py [--services 10000] [--instances 16] [--rounds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from functools import cache, partial
from pathlib import Path
from typing import Any

from dyncast_bgp.config.loader import parse
from dyncast_bgp.deferred import LIMIT
from dyncast_bgp.engine import owner
from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.model import StateFlag
from dyncast_bgp.obs import log as obs_log
from dyncast_bgp.router.audit import AUDIT_SLICE, audit_record
from dyncast_bgp.router.runtime import RouterRuntime
from dyncast_bgp.wire.exabgp_json import Route, RouteUpdate
from dyncast_bgp.wire.metrics import encode_metrics

PEER = ipaddress.IPv4Address("192.0.2.1")
CONFIG = "bgp: {router_id: 192.0.2.1, local_as: 65000}\nrouter: {probes: {enabled: false}}\n"
"""The router's configuration here: the defaults, no probes (path metrics are the RIB's business here)."""
CAPACITIES = (100, 200, 400, 800)


@cache
def _hop(number: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(0xC6336400 + number)  # 198.51.100.0 + n


@cache
def _prefix(number: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((0x0A000000 + number, 32))


def updates(services: int, instances: int, seed: int) -> Iterator[RouteUpdate]:
    """One UPDATE per instance: new metrics for every instance of every service. Addresses and prefixes are
    one object per text across rounds, as the ExaBGP JSON parser hands them out (its memo)."""
    rng = random.Random(seed)
    hops = [_hop(n) for n in range(instances)]
    for number in range(services):
        prefix = _prefix(number)
        for index, hop in enumerate(hops):
            capacity = rng.choice(CAPACITIES)
            cpu = rng.uniform(5.0, 92.0)
            roll = rng.random()
            flags = (StateFlag.DRAINING if roll < 0.015 else StateFlag.OVERLOADED if roll < 0.025 else StateFlag.NONE)
            communities = encode_metrics(
                {"cpu_utilization": cpu, "capacity": capacity, "service_delay": rng.randrange(100, 20_000),
                 "active_sessions": int(capacity * cpu / 100.0 * rng.uniform(0.8, 1.2))}, flags=flags, version=7)
            route = Route(prefix, hop, index + 1, (65001,), ext_raw=b"".join(c.pack() for c in communities))
            yield RouteUpdate(PEER, (route,))


async def _no_lines() -> AsyncIterator[str]:  # the runtime here reads no ExaBGP: its engine is fed directly
    return
    yield


def cpu_timed(func: Callable[[], Any]) -> tuple[float, Any]:
    began = time.process_time()
    result = func()
    return time.process_time() - began, result


class Meter:
    """CPU seconds spent inside one function, while installed in place of it."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.seconds = 0.0

    def wrapper(self) -> Callable[..., Any]:
        """A plain function (so that, set on a class, it binds as a method) that times each call."""
        func = self.func

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.process_time()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - began
        return timed


def _audit_cost(engine: RouterEngine, args: argparse.Namespace, now: float, sample: int = 500) -> float:
    """CPU microseconds to build one audit record of a full recompute: ``sample`` services' records, each
    against the service's previous decision, whose explanation the previous record had read already."""
    services = engine.rib.services()[:sample]
    before = {service: engine.outcome(service) for service in services}
    for outcome in before.values():
        assert outcome is not None
        _ = outcome.explain
    for update in updates(args.services, args.instances, seed=10_000):
        engine.on_event(update, now)
    engine.step(now + 60.0)
    seconds, _ = cpu_timed(lambda: [audit_record(before[service], engine.outcome(service), now)  # type: ignore[arg-type]
                                    for service in services])
    return seconds / len(services) * 1e6


def cpu_ticks() -> tuple[int, int]:
    """(steal, total) ticks of all CPUs since boot, from /proc/stat's ``cpu`` line; (0, 0) where there is none.

    Steal is the time the hypervisor ran something else while this VM wanted its CPUs: a share of it during the
    rounds says the host was busy with other guests: one reason why the same code, and the baseline with it, runs
    at different speeds from one minute to the next on this project's VM."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return (fields[7], sum(fields)) if len(fields) == 8 else (0, 0)


def scale_arguments(doc: str | None, *, services: int, rounds: int) -> argparse.ArgumentParser:
    """The command line of a benchmark of a router fed as here (this one, bench_reads.py): its docstring's first
    paragraph, and --services, --instances, --rounds and --json OUT."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--services", type=int, default=services)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--json", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = scale_arguments(__doc__, services=10_000, rounds=5).parse_args(argv)
    load = os.getloadavg()
    steal_at_start = cpu_ticks()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.2f} / {load[1]:.2f}; "
          f"{args.services:,} services x {args.instances} instances, {args.rounds} rounds")

    obs_log.configure("info", stream=open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115  # as the router
    now = 0.0  # logs by default, to nowhere (what writing the lines costs depends on where they go)
    runtime = RouterRuntime(parse(CONFIG), lines=_no_lines(), dataplane=None, probes=False, clock=lambda: now)
    engine = runtime.engine
    step_meter = Meter(RouterEngine.step)
    RouterEngine.step = step_meter.wrapper()  # type: ignore[method-assign]
    candidates_meter = Meter(Rib.candidates)
    rows_meter = Meter(Rib.rows)
    decide_meter = Meter(decide_many)
    Rib.candidates = candidates_meter.wrapper()  # type: ignore[method-assign]
    Rib.rows = rows_meter.wrapper()  # type: ignore[method-assign]
    owner.decide_many = decide_meter.wrapper()  # type: ignore[attr-defined]
    full_collections: list[int] = []
    gc.callbacks.append(lambda phase, info: full_collections.append(1)
                        if phase == "start" and info["generation"] == 2 else None)

    for update in updates(args.services, args.instances, seed=0):  # learn every path; the first decisions
        engine.on_event(update, now)
    engine.step(now)
    engine.desired()

    collector = runtime.collector  # router.gc_full_interval: 300 s by default

    def paused(func: Callable[[], Any]) -> Any:
        with collector.paused():
            return func()

    def turn() -> None:  # a router round freeing in place: what each turn replaced, freed before its end
        runtime._after_inputs()
        runtime.deferred.trim()

    def rounds(seeds: range, *, router: bool, in_place: bool = False) -> list[dict[str, float]]:
        nonlocal now
        rows = []
        for seed in seeds:
            for update in updates(args.services, args.instances, seed=seed):
                engine.on_event(update, now)
            now += 60.0
            candidates_meter.seconds = rows_meter.seconds = decide_meter.seconds = 0.0
            full_collections.clear()
            longest = 0.0
            step_meter.seconds = 0.0
            before = engine.decisions_changed
            release_s = longest_release = 0.0
            if router:  # the runtime's owner turns (a slice of STEP_SLICE services and what follows it), as it
                step_s = 0.0  # goes, each with the collector paused
                runtime.deferred.limit = 0 if in_place else LIMIT
                while True:
                    slice_s, _ = cpu_timed(turn if in_place else runtime._after_inputs)
                    step_s, longest = step_s + slice_s, max(longest, slice_s)
                    if not engine.pending:
                        break
                collections = len(full_collections)
                desired_s, desired = cpu_timed(partial(paused, engine.desired))
                while runtime.deferred:  # the next turns: what the recompute replaced, a chunk per turn
                    chunk_s, _ = cpu_timed(partial(paused, runtime._release))
                    release_s, longest_release = release_s + chunk_s, max(longest_release, chunk_s)
            else:
                step_s, _ = cpu_timed(partial(engine.step, now))
                collections = len(full_collections)
                desired_s, desired = cpu_timed(engine.desired)
                runtime.deferred.clear()  # not timed: these rounds compare the collector's settings
            changed = engine.decisions_changed - before
            assert changed == args.services and len(desired.services) == args.services, "not a full recompute"
            rows.append({"step_ms": step_s * 1e3, "desired_ms": desired_s * 1e3,
                         "total_ms": (step_s + desired_s) * 1e3,
                         "candidates_ms": (candidates_meter.seconds + rows_meter.seconds) * 1e3,
                         "decide_many_ms": decide_meter.seconds * 1e3, "full_collections": collections,
                         "after_step_ms": (step_s - step_meter.seconds) * 1e3, "longest_slice_ms": longest * 1e3,
                         "released_after_ms": release_s * 1e3, "longest_release_ms": longest_release * 1e3})
            row = rows[-1]
            kind = ("in place" if in_place else "router  ") if router else "default "
            print(f"{kind} round {seed}: step {row['step_ms']:7.1f} ms (RIB candidates "
                  f"{row['candidates_ms']:6.1f}, decide_many {row['decide_many_ms']:6.1f}, {collections} full gc"
                  + (f", after the step {row['after_step_ms']:.1f}, longest turn {longest * 1e3:.1f}" if router
                     else "") + f") + desired {row['desired_ms']:6.1f} ms = {row['total_ms']:7.1f} ms"
                  + (f"; then released {release_s * 1e3:.1f} ms (longest turn {longest_release * 1e3:.1f})"
                     if router else ""))
        return rows

    with_gc: list[dict[str, float]] = []
    as_router: list[dict[str, float]] = []
    freed_in_place: list[dict[str, float]] = []
    for pair in range(args.rounds):  # alternated, so that a host whose speed drifts during the run (a shared VM)
        gc.unfreeze()  # drifts both alike; the default rounds walk everything, as without the router's freezes
        with_gc += rounds(range(3 * pair + 1, 3 * pair + 2), router=False)
        first, second = (False, True) if pair % 2 else (True, False)  # deferred and in place, alternated
        for seed, freeing in ((3 * pair + 2, first), (3 * pair + 3, second)):
            (freed_in_place if freeing else as_router).extend(rounds(range(seed, seed + 1), router=True,
                                                                     in_place=freeing))
    ratios = [r["total_ms"] / d["total_ms"] for d, r in zip(with_gc, as_router, strict=True)]
    full_s, full = cpu_timed(collector.full)
    print(f"the router's periodic full collection (every router.gc_full_interval, 300 s by default): "
          f"{full_s * 1e3:.1f} ms, {full.unreachable} unreachable objects found, {full.frozen:,} frozen again")
    gc.unfreeze()

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; before the baseline's copy
    audit_us = _audit_cost(engine, args, now)
    print(f"audit log (router.audit_log, off by default): one record {audit_us:.0f} us, so a full recompute's "
          f"{args.services:,} records take {audit_us * args.services / 1e6:.1f} s of the router's loop, built "
          f"{AUDIT_SLICE * 1e3:.0f} ms per turn (router/audit.py)")
    RouterEngine.step = step_meter.func  # type: ignore[method-assign]
    Rib.candidates = candidates_meter.func  # type: ignore[method-assign]
    Rib.rows = rows_meter.func  # type: ignore[method-assign]
    owner.decide_many = decide_meter.func  # type: ignore[attr-defined]
    services = engine.rib.services()
    lists = [engine.rib.candidates(service, now, path_of=engine.path_of) for service in services]
    policies = [engine.config.policy_for(service) for service in services]
    memories = [outcome.memory if (outcome := engine.outcome(service)) else None for service in services]
    baseline = min(cpu_timed(lambda: decide_many([Request(s, c, p, m) for s, c, p, m in
                                                   zip(services, lists, policies, memories, strict=True)], now))[0]
                   for _ in range(3)) * 1e3

    figures: dict[str, dict[str, Any]] = {}
    for name, rows in (("gc default", with_gc), ("as the router runs", as_router),
                       ("as the router runs, freeing in place", freed_in_place)):
        totals = [row["total_ms"] for row in rows]
        figures[name] = {"best_ms": min(totals), "median_ms": statistics.median(totals), "rounds": rows}
        print(f"full recompute (step + desired), {name}: best {min(totals):.1f} ms, median "
              f"{statistics.median(totals):.1f} ms = {min(totals) / baseline:.2f}x decide_many alone "
              f"({baseline:.1f} ms)")
    released = [row["released_after_ms"] for row in as_router]
    print(f"what each recompute replaced, released in the router's next turns (dyncast_bgp/deferred.py, not in the "
          f"figures above): median {statistics.median(released):.1f} ms of CPU, longest turn "
          f"{max(row['longest_release_ms'] for row in as_router):.1f} ms")
    deferral = [r["total_ms"] / f["total_ms"] for r, f in zip(as_router, freed_in_place, strict=True)]
    print(f"as the router runs / freeing in place (decision 0015), round by round: "
          f"{', '.join(f'{r:.2f}' for r in deferral)} (median {statistics.median(deferral):.2f})")
    print(f"as the router runs / gc default, round by round: {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f})")
    print(f"peak resident memory over the rounds (the RIB, every decision and desired state, the UPDATEs of a "
          f"round): {rss:.0f} MiB; after the baseline's second set of candidates: "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")
    steal, ticks = (end - start for end, start in zip(cpu_ticks(), steal_at_start, strict=True))
    steal_share = steal / ticks if ticks > 0 else None
    if steal_share is not None:
        print(f"CPU stolen by the hypervisor during the run (/proc/stat steal, all CPUs): {steal_share:.1%}")
    verdict = "met" if float(figures["as the router runs"]["best_ms"]) < 500.0 else "MISSED"
    print(f"goal (full recompute < 500 ms, as the router runs): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"python": platform.python_version(), "services": args.services,
                                         "instances": args.instances, "load_at_start": load,
                                         "steal_share": steal_share, **figures,
                                         "baseline_decide_many_ms": baseline, "goal": verdict, "rss_mib": rss,
                                         "router_over_default": ratios, "router_over_in_place": deferral,
                                         "full_collection_ms": full_s * 1e3, "full_collection_unreachable":
                                         full.unreachable,
                                         "load_at_end": os.getloadavg()}, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
