#!/usr/bin/env python3
"""How fast the router decides: 10,000 services x 16 instances (issue 3 goals: full < 500 ms, incremental < 1 ms,
RSS < 500 MB).

Everything runs in this process on synthetic instances (a seeded mix of loads,
capacities, paths, a few draining/down/overloaded ones), one default policy
(``weighted``) for every service unless ``--policy`` says otherwise:

- **full recompute**: every instance's metrics changed since the last decision
  (two pre-built candidate sets, alternated, so each round changes everything);
  one :func:`decide_many` over every service with its memory, the call
  ``RouterEngine.step`` makes for its dirty services; ``now`` advances past the
  dwell so that weights really move (the worst case). Best and median of
  ``--rounds``. Alongside, the same with one :func:`decide` per service (what
  the router ran before the batch path, and still the reference it must equal),
  and with every explanation read afterwards (the metrics endpoint, the audit log).
- **incremental**: one instance of one service changes; ``decide_many`` of that
  one service (the candidate list is built outside the timing, as the RIB
  would). Mean, median and p99 over ``--incremental`` services.
- **resident memory**: RSS holding every service's last outcome and memory,
  plus the two candidate sets the benchmark keeps.

In-run baselines, timed the same way in the same process:

- **build candidates**: making the 160,000 ``Candidate`` objects of one full
  recompute (what the RIB hands the decision anyway);
- **trivial split**: the least a decision can do with the same inputs and
  output: per service, weights in proportion to ``capacity * (1 - cpu/100)``
  read through the public API, and a validated ``Decision``.

The machine is shared: times are CPU times of this process (``time.process_time``)
with wall times alongside; ratios between measurements of the same run are the
robust figures. Garbage collection is left on (as in the router); ``--gc-freeze``
measures again after ``gc.freeze()`` of the loaded state, which a long-running
router could do after start-up.

    .venv/bin/python benchmarks/bench_decision.py [--services 10000] [--instances 16] [--rounds 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.batch import Request, decide_many
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.engine.memory import ServiceMemory
from dyncast_bgp.model import (
    ComputeMetrics,
    Decision,
    InstanceKey,
    InstanceState,
    MetricsView,
    PathMetrics,
    ServiceId,
    StateFlag,
)

Lists = list[list[Candidate]]
CAPACITIES = (100.0, 200.0, 400.0, 800.0)


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_keys(services: int, instances: int) -> tuple[list[ServiceId], list[list[InstanceKey]]]:
    dsids = [ServiceId(ipaddress.IPv4Network((0x0A000000 + n, 32))) for n in range(services)]
    bindings = [ipaddress.IPv4Address(0xC6336400 + n) for n in range(instances)]  # 198.51.100.0 + n
    return dsids, [[InstanceKey(dsid, binding) for binding in bindings] for dsid in dsids]


def make_candidate(key: InstanceKey, rng: random.Random) -> Candidate:
    """One instance with a plausible mix of metrics; about 2 % are not active and 1 % flagged overloaded."""
    capacity = rng.choice(CAPACITIES)
    cpu = rng.uniform(5.0, 92.0)
    values = {"cpu_utilization": cpu, "capacity": capacity,
              "active_sessions": float(int(capacity * cpu / 100.0 * rng.uniform(0.8, 1.2)))}
    if rng.random() < 0.3:
        values["memory_utilization"] = rng.uniform(10.0, 80.0)
    roll = rng.random()
    state = (InstanceState.DOWN if roll < 0.005 else InstanceState.DRAINING if roll < 0.02 else InstanceState.ACTIVE)
    flags = StateFlag.OVERLOADED if rng.random() < 0.01 else StateFlag.NONE
    path = PathMetrics(rtt_mean_us=rng.uniform(500.0, 30_000.0), loss_mean=rng.uniform(0.0, 0.01),
                       reachable=rng.random() > 0.002)
    return Candidate(key, state, ComputeMetrics(MetricsView(values), flags), path)


def build(keys: Sequence[Sequence[InstanceKey]], seed: int) -> Lists:
    rng = random.Random(seed)
    return [[make_candidate(key, rng) for key in service_keys] for service_keys in keys]


def trivial_split(dsids: Sequence[ServiceId], lists: Lists) -> list[Decision]:
    """The floor: weights proportional to capacity * (1 - cpu/100), public API, a validated Decision."""
    out = []
    for dsid, candidates in zip(dsids, lists, strict=True):
        raw = {}
        for candidate in candidates:
            metrics = candidate.metrics
            raw[candidate.key] = (metrics.get("capacity") or 1.0) * (1.0 - (metrics.get("cpu_utilization") or 50.0)
                                                                      / 100.0)
        total = sum(raw.values())
        out.append(Decision(dsid, {key: value / total for key, value in raw.items()}))
    return out


def decide_all(dsids: Sequence[ServiceId], lists: Lists, policy: ServicePolicy, *,
               memories: list[ServiceMemory | None], now: float, outcomes: list[Outcome | None],
               explain: bool = False, each: bool = False) -> None:
    """Every service's decision: ``decide_many`` over all of them, as ``RouterEngine.step`` runs it for its
    dirty services (or, ``each``, one ``decide`` per service: what the router ran before the batch path)."""
    if each:
        decided = [decide(dsid, candidates, policy, memory, now)
                   for dsid, candidates, memory in zip(dsids, lists, memories, strict=True)]
    else:
        decided = decide_many([Request(dsid, candidates, policy, memory)
                               for dsid, candidates, memory in zip(dsids, lists, memories, strict=True)], now)
    for index, outcome in enumerate(decided):
        if explain:
            outcome.explain  # noqa: B018 - what reading every explanation (metrics endpoint, audit log) adds
        memories[index] = outcome.memory
        outcomes[index] = outcome


def timed(func: Callable[[], object]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one call."""
    cpu, wall = time.process_time(), time.perf_counter()
    func()
    return time.process_time() - cpu, time.perf_counter() - wall


def summary(samples: Sequence[tuple[float, float]]) -> dict[str, float]:
    cpus = [cpu for cpu, _ in samples]
    walls = [wall for _, wall in samples]
    return {"cpu_best_ms": min(cpus) * 1e3, "cpu_median_ms": statistics.median(cpus) * 1e3,
            "wall_best_ms": min(walls) * 1e3, "wall_median_ms": statistics.median(walls) * 1e3}


def show(name: str, figures: dict[str, float], baseline: dict[str, float] | None = None) -> None:
    ratio = f"  = {figures['cpu_best_ms'] / baseline['cpu_best_ms']:.2f}x the baseline" if baseline else ""
    print(f"{name:<44} cpu best {figures['cpu_best_ms']:8.1f} ms  median {figures['cpu_median_ms']:8.1f} ms   "
          f"wall best {figures['wall_best_ms']:8.1f} ms{ratio}")


def show_incremental(name: str, figures: dict[str, float]) -> None:
    print(f"{name:<44} mean {figures['mean_us']:.1f} us  median {figures['median_us']:.1f} us"
          f"  p99 {figures['p99_us']:.1f} us  max {figures['max_us']:.1f} us over {figures['count']:,} services")


def full_recompute(dsids: Sequence[ServiceId], sets: Sequence[Lists], policy: ServicePolicy, *,
                   memories: list[ServiceMemory | None], outcomes: list[Outcome | None], rounds: int,
                   now: float, explain: bool = False, each: bool = False) -> tuple[dict[str, float], float]:
    samples = []
    moved = 0
    for round_ in range(rounds):
        lists = sets[round_ % len(sets)]
        now += 60.0  # past any dwell: the weights really move
        samples.append(timed(partial(decide_all, dsids, lists, policy, memories=memories, now=now, outcomes=outcomes,
                                     explain=explain, each=each)))
        moved = sum(1 for outcome in outcomes if outcome is not None and outcome.memory.moved_at == now)
    return summary(samples), moved / len(dsids)


def incremental(dsids: Sequence[ServiceId], lists: Lists, policy: ServicePolicy, *,
                memories: list[ServiceMemory | None], count: int, now: float, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    times = []
    for index in rng.sample(range(len(dsids)), min(count, len(dsids))):
        candidates = list(lists[index])
        changed = rng.randrange(len(candidates))
        candidates[changed] = make_candidate(candidates[changed].key, rng)  # one instance re-announced
        started = time.perf_counter_ns()
        outcome, = decide_many([Request(dsids[index], candidates, policy, memories[index])], now)
        times.append((time.perf_counter_ns() - started) / 1e3)
        memories[index] = outcome.memory
    times.sort()
    return {"mean_us": statistics.fmean(times), "median_us": statistics.median(times),
            "p99_us": times[int(0.99 * (len(times) - 1))], "max_us": times[-1], "count": len(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--incremental", type=int, default=2_000, help="services timed one by one")
    parser.add_argument("--policy", default="weighted", choices=["weighted", "best", "local-first", "consolidate"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gc-freeze", action="store_true", help="also measure after gc.freeze() of the loaded state")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    policy = ServicePolicy(policy=args.policy, local=(ipaddress.ip_network("198.51.100.0/29"),))
    load = os.getloadavg()
    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print(f"{args.services:,} services x {args.instances} instances = {args.services * args.instances:,} instances; "
          f"policy {args.policy}; {args.rounds} rounds")
    results: dict[str, object] = {"python": platform.python_version(), "services": args.services,
                                  "instances": args.instances, "policy": args.policy, "load_at_start": load}

    rss = {"start": rss_mib()}
    dsids, keys = make_keys(args.services, args.instances)
    builds = [timed(partial(build, keys, seed)) for seed in range(args.rounds)]
    build_figures = summary(builds)
    sets = [build(keys, args.seed), build(keys, args.seed + 1)]
    rss["two candidate sets"] = rss_mib()
    show("baseline: build candidates (one full set)", build_figures)
    trivial = summary([timed(partial(trivial_split, dsids, sets[n % 2])) for n in range(args.rounds)])
    show("baseline: trivial proportional split", trivial)

    memories: list[ServiceMemory | None] = [None] * len(dsids)
    outcomes: list[Outcome | None] = [None] * len(dsids)
    first = summary([timed(lambda: decide_all(dsids, sets[0], policy, memories=memories, now=0.0, outcomes=outcomes))])
    show("first decision of every service", first, trivial)
    rss["outcomes held"] = rss_mib()
    recompute = partial(full_recompute, dsids, sets, policy, memories=memories, outcomes=outcomes, rounds=args.rounds)
    full, moved = recompute(now=0.0)
    rss["after full recomputes"] = rss_mib()
    show("full recompute (every instance changed)", full, trivial)
    print(f"{'':<44} {moved:.0%} of the services moved their weights in the last round")
    print(f"{'':<44} = {full['cpu_best_ms'] / build_figures['cpu_best_ms']:.2f}x building the candidates")
    each, _ = recompute(now=5_000.0, each=True)
    show("  the same, one decide() per service", each, trivial)
    print(f"{'':<44} decide_many = {full['cpu_best_ms'] / each['cpu_best_ms']:.2f}x one decide() per service")
    with_explain, _ = recompute(now=10_000.0, explain=True)
    show("full recompute + every explanation read", with_explain, trivial)
    inc = incremental(dsids, sets[0], policy, memories=memories, count=args.incremental, now=100_000.0, seed=args.seed)
    show_incremental("incremental (one instance changed)", inc)
    results.update(build=build_figures, trivial=trivial, first=first, full=full, full_moved=moved,
                   full_each_decide=each, full_with_explain=with_explain, incremental=inc)

    gc_figures: dict[str, dict[str, float]] = {}
    gc.collect()
    gc.disable()
    gc_figures["gc disabled"], _ = recompute(now=20_000.0)
    gc.enable()
    show("full recompute, gc disabled", gc_figures["gc disabled"], trivial)
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
        gc_figures["gc frozen"], _ = recompute(now=30_000.0)
        show("full recompute, after gc.freeze()", gc_figures["gc frozen"], trivial)
        frozen_inc = incremental(dsids, sets[1], policy, memories=memories, count=args.incremental, now=200_000.0,
                                 seed=args.seed + 1)
        show_incremental("incremental, after gc.freeze()", frozen_inc)
        results["incremental_gc_frozen"] = frozen_inc
        gc.unfreeze()
    results["gc"] = gc_figures

    print("resident memory (VmRSS): " + ", ".join(f"{name} {value:.0f} MiB" for name, value in rss.items()))
    results["rss_mib"] = rss
    results["load_at_end"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
