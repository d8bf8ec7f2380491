#!/usr/bin/env python3
"""How fast the simulator runs (issue 7 goal: 1,000,000 simulated requests in under 60 s on one core).

Runs the ``balanced`` scenario stretched to ``--requests`` requests under
``--policies`` (default ``anycast`` and ``weighted``: the cheapest policy and the
one that calls the real decision engine every second per ingress), best of
``--repeat`` (the machine is shared; CPU time of this process alongside wall time).

With ``--simpy`` it also times the same M/M/c-per-site core written with SimPy
(if installed) against this simulator's loop, both without policies' decisions:
the measurement behind docs/decisions/0003-simulator.md.

``--what-if SCENARIO`` runs ``weighted`` on a scenario with the utilisation the
engine sees clamped at 94.9 % (the ceiling never fires): the experiment of
docs/evaluation.md that located the ceiling cascade, before the ceiling became a
soft limit (docs/decisions/0004-soft-utilisation-ceiling.md); it now bounds what
the soft limit can give. Not the engine's behaviour.

    .venv/bin/python benchmarks/bench_sim.py [--requests 1000000] [--repeat 3] [--simpy] [--what-if NAME]
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import time

from dyncast_bgp.sim.information import View
from dyncast_bgp.sim.scenario import load
from dyncast_bgp.sim.stats import summarise
from dyncast_bgp.sim.world import simulate


def clamp_ceiling(view: View) -> View:
    """The view with every reported utilisation clamped just below the default 95 % ceiling."""
    return dataclasses.replace(view, sites=tuple(
        dataclasses.replace(site, utilisation=min(site.utilisation, 94.9)) if site.utilisation is not None
        else site for site in view.sites))


def bench_sim(requests: int, policies: list[str], repeat: int) -> None:
    base = load("balanced")
    offered = sum(ingress.rate * ingress.count for ingress in base.ingresses)
    scenario = base.with_changes(duration_s=requests * 1.01 / offered)  # Poisson: aim 1 % above
    for policy in policies:
        best_wall, best_cpu, made = float("inf"), float("inf"), 0
        for _ in range(repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            result = simulate(scenario, policy)
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
            made = result.requests
        print(f"{policy:10s} {made:>9,} requests  {result.events:>9,} events  best wall {best_wall:6.2f} s  "
              f"best CPU {best_cpu:6.2f} s  ({made / best_cpu / 1000:.0f} k requests per CPU second)")


def bench_core(requests: int) -> float:
    """This simulator's loop on one M/M/8 site, random placement only: the core the SimPy version matches."""
    scenario = load("balanced").with_changes(duration_s=requests / 720.0)
    started = time.process_time()
    simulate(scenario, "random")
    return time.process_time() - started


def bench_simpy(requests: int) -> float | None:
    """Three M/M/8 sites fed by three Poisson sources with random placement, in SimPy (processes + Resource)."""
    try:
        import simpy  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - optional
    except ImportError:
        return None
    rng = random.Random(1)
    env = simpy.Environment()
    sites = [simpy.Resource(env, capacity=8) for _ in range(3)]
    times: list[float] = []

    def request(site: object) -> object:
        arrived = env.now
        with site.request() as slot:  # type: ignore[attr-defined]
            yield slot
            yield env.timeout(rng.expovariate(50.0))
        times.append(env.now - arrived)

    def source(rate: float) -> object:
        while True:
            yield env.timeout(rng.expovariate(rate))
            env.process(request(sites[rng.randrange(3)]))

    for _ in range(3):
        env.process(source(240.0))
    started = time.process_time()
    env.run(until=requests / 720.0)
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--policies", nargs="+", default=["anycast", "weighted"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--simpy", action="store_true")
    parser.add_argument("--what-if", metavar="SCENARIO", default=None)
    args = parser.parse_args()
    if args.what_if:
        print(summarise(simulate(load(args.what_if), "weighted", view_hook=clamp_ceiling)))
        return
    bench_sim(args.requests, args.policies, args.repeat)
    if args.simpy:
        ours = min(bench_core(args.requests) for _ in range(args.repeat))
        theirs = [bench_simpy(args.requests) for _ in range(args.repeat)]
        print(f"core loop, {args.requests:,} requests: this simulator {ours:.2f} s CPU", end="")
        if None in theirs:
            print("; SimPy not installed")
        else:
            print(f"; SimPy {min(t for t in theirs if t is not None):.2f} s CPU (best of {args.repeat})")


if __name__ == "__main__":
    main()
