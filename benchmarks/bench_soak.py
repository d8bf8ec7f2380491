#!/usr/bin/env python3
"""Soak (issue 8, item 6): the router under a flapping feed for minutes, on a real kernel.

``RouterRuntime`` runs in this process, fed ExaBGP 5.0 JSON lines by an async
generator, with the real :class:`LinuxDataplane` programming a network
namespace this benchmark creates (``ip netns add dyncast-soak-<pid>``) and
deletes at the end, also on failure. Time is **not** compressed: the runtime
uses its default clock (``time.monotonic``), so damping half-lives, dwell,
slew, the affinity linger and the apply cap all play out in wall time.

The feed: ``--services`` D-SIDs x 4 sites. Each site is one BGP peer
(10.0.9.1-4) whose next hop (D-BID 10.255.0.11-14) is directly connected in
the namespace. After the initial table (4 x services paths, End-of-RIB per
peer), at ``--rate`` lines a second:

- metric changes (cpu, sessions, delay) of random instances (~70 %);
- withdrawals of random instances, re-announced 2-20 s later (~8 %);
- draining and overloaded flags toggled (~5 % each);
- implausible metric sets (capacity 0 with sessions, ~1 %) and malformed
  lines (~1 %), which the router must count and survive;
- 25 "flappers" (site 3, the first 25 services) withdrawn and re-announced
  every second during 60 s, then stable for 60 s, alternately (flap damping);
- site 4's peer goes down every 150 s (its paths go at once: no graceful
  restart) and comes back 15 s later with its whole table and End-of-RIB.

Every ``--every`` seconds a row: RSS, CPU seconds (this process; and the
``nft``/``ip`` children), lines, decisions changed, engine steps that changed
something (each asks for an apply) vs applies done (the difference was
coalesced), rejections by reason, flaps, instances currently flap-damped.
After the churn the feed waits (bounded) until the router is quiet
(installed == engine.desired(), nothing due within 2 s), ends the input, and
the kernel is read back with ``dyncast dataplane --netns NS show --json`` and
compared with ``engine.desired()``: the same services and instance keys, and
every instance's buckets exactly the largest-remainder split of the weights
(so within one bucket, 1/resolution, of its weight).

    sudo .venv/bin/python benchmarks/bench_soak.py [--seconds 570] [--rate 500] [--every 30]

Results: benchmarks/results/soak.md and soak.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import heapq
import json
import math
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dyncast_bgp.config.loader import parse
from dyncast_bgp.dataplane.buckets import split
from dyncast_bgp.dataplane.desired import ApplyResult, DesiredState
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.dataplane.runner import NetnsRunner
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.model import InstanceKey, ServiceId, StateFlag
from dyncast_bgp.obs.log import configure
from dyncast_bgp.router.runtime import RouterRuntime

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the ExaBGP line builders the router's tests use
from tests.unit.exabgp_lines import end_of_rib, peer_down, peer_up, update, withdraw  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
SITES = 4
PEERS = tuple(f"10.0.9.{site + 1}" for site in range(SITES))
DBIDS = tuple(f"10.255.0.{11 + site}" for site in range(SITES))
FLAPPER_SITE, FLAPPERS, FLAP_PHASE = 2, 25, 60.0
DOWN_SITE, DOWN_EVERY, DOWN_FOR, DOWN_FIRST = 3, 150.0, 15.0, 60.0
TICK = 0.05
CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.1
  startup_hold: 30
  probes: {enabled: false}
  defaults: {affinity_timeout: 30}
"""


def service_prefix(index: int) -> str:
    return f"10.{100 + index // 65536}.{(index // 256) % 256}.{index % 256}/32"


# -- the dataplane: the real one, wrapped to check what it is given and time it ---------------------


@dataclass
class SoakDataplane:
    """Delegates to :class:`LinuxDataplane`; fails on an invalid desired state; records apply times."""

    inner: LinuxDataplane
    seconds: list[float] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    def apply(self, desired: DesiredState) -> ApplyResult:
        for service in desired.services:
            weights = [target.weight for target in service.instances]
            total = sum(weights)
            if min(weights) < 0 or not (math.isclose(total, 1.0) or total == 0.0):
                self.violations.append(f"{service.service}: weights {weights}")
        result = self.inner.apply(desired)
        self.seconds.append(result.seconds)
        return result

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        return self.inner.flow_counts()

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        return self.inner.evict(keys)


# -- the feed ---------------------------------------------------------------------------------------


@dataclass
class Instance:
    announced: bool = True
    draining: bool = False
    overloaded: bool = False


class Feed:
    """Lines of the flapping workload, generated tick by tick from a seeded RNG."""

    def __init__(self, services: int, seed: int) -> None:
        self.services = services
        self.rng = random.Random(seed)
        self.state = {(site, svc): Instance() for site in range(SITES) for svc in range(services)}
        self.returns: list[tuple[float, int, int]] = []  # (due, site, service): withdrawn, to come back
        self.site_up = [True] * SITES
        self.next_down = DOWN_FIRST
        self.events: dict[str, int] = {}

    def _count(self, what: str, n: int = 1) -> None:
        self.events[what] = self.events.get(what, 0) + n

    def announce(self, t: float, site: int, svc: int, *, implausible: bool = False) -> str:
        inst = self.state[(site, svc)]
        flags = (StateFlag.DRAINING if inst.draining else StateFlag.NONE) | \
                (StateFlag.OVERLOADED if inst.overloaded else StateFlag.NONE)
        rng = self.rng
        metrics: dict[str, float] = {"capacity": 0, "active_sessions": 50} if implausible else {
            "cpu_utilization": rng.uniform(5, 95), "active_sessions": rng.randrange(0, 5000),
            "capacity": 5000, "service_delay": rng.randrange(100, 20000)}
        return update(t, PEERS[site], service_prefix(svc), DBIDS[site], 1, metrics=metrics, flags=int(flags))

    def initial(self, t: float) -> list[str]:
        lines = [peer_up(t, peer) for peer in PEERS]
        for site in range(SITES):
            lines += [self.announce(t, site, svc) for svc in range(self.services)]
            lines.append(end_of_rib(t, PEERS[site]))
        return lines

    def tick(self, t: float, count: int) -> list[str]:
        lines = self._scheduled(t)
        rng = self.rng
        for _ in range(count):
            site, svc = rng.randrange(SITES), rng.randrange(self.services)
            if not self.site_up[site] or (site == FLAPPER_SITE and svc < FLAPPERS):
                continue
            inst = self.state[(site, svc)]
            roll = rng.random()
            if roll < 0.01:
                lines.append('{"exabgp": "5.0.0", "type": "update", "neighbor": ' + str(rng.random()))
                self._count("malformed line")
            elif not inst.announced:
                continue
            elif roll < 0.02:
                lines.append(self.announce(t, site, svc, implausible=True))
                self._count("implausible metrics")
            elif roll < 0.10:
                inst.announced = False
                lines.append(withdraw(t, PEERS[site], service_prefix(svc), 1))
                heapq.heappush(self.returns, (t + rng.uniform(2, 20), site, svc))
                self._count("withdraw")
            elif roll < 0.15:
                inst.draining = not inst.draining
                lines.append(self.announce(t, site, svc))
                self._count("draining toggled")
            elif roll < 0.20:
                inst.overloaded = not inst.overloaded
                lines.append(self.announce(t, site, svc))
                self._count("overloaded toggled")
            else:
                lines.append(self.announce(t, site, svc))
                self._count("metric change")
        return lines

    def _scheduled(self, t: float) -> list[str]:
        lines: list[str] = []
        while self.returns and self.returns[0][0] <= t:
            _, site, svc = heapq.heappop(self.returns)
            self.state[(site, svc)].announced = True
            if self.site_up[site]:
                lines.append(self.announce(t, site, svc))
                self._count("re-announce")
        # flappers: toggled once a second during the flapping phase, announced during the stable one
        second = math.floor(t)
        if math.floor(t - TICK) != second:
            flapping = (t // FLAP_PHASE) % 2 == 1
            for svc in range(FLAPPERS):
                inst = self.state[(FLAPPER_SITE, svc)]
                if flapping or not inst.announced:
                    inst.announced = not inst.announced
                    lines.append(self.announce(t, FLAPPER_SITE, svc) if inst.announced
                                 else withdraw(t, PEERS[FLAPPER_SITE], service_prefix(svc), 1))
                    self._count("flapper toggled")
        if self.site_up[DOWN_SITE] and t >= self.next_down:
            self.site_up[DOWN_SITE] = False
            lines.append(peer_down(t, PEERS[DOWN_SITE]))
            self._count("peer down")
        elif not self.site_up[DOWN_SITE] and t >= self.next_down + DOWN_FOR:
            self.site_up[DOWN_SITE] = True
            self.next_down += DOWN_EVERY
            lines.append(peer_up(t, PEERS[DOWN_SITE]))
            lines += [self.announce(t, DOWN_SITE, svc) for svc in range(self.services)
                      if self.state[(DOWN_SITE, svc)].announced]
            lines.append(end_of_rib(t, PEERS[DOWN_SITE]))
            self._count("peer up (full table)")
        return lines


# -- sampling ---------------------------------------------------------------------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def damped(outcomes: Iterable[Outcome]) -> int:
    return sum(1 for o in outcomes for reason in o.decision.excluded.values() if reason.startswith("flap-damped"))


class Clock:
    """``time.monotonic`` until :meth:`freeze`, then the time it was frozen at."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return time.monotonic() if self.frozen is None else self.frozen

    def freeze(self) -> None:
        self.frozen = time.monotonic()


@dataclass
class Soak:
    runtime: RouterRuntime
    clock: Clock
    dataplane: SoakDataplane
    feed: Feed
    seconds: float
    rate: int
    every: float
    rows: list[dict[str, Any]] = field(default_factory=list)
    steps_changed: int = 0
    quiet_after: float | None = None
    unsettled: dict[str, Any] | None = None
    began: float = 0.0

    def count_steps(self) -> None:
        """Count engine steps that changed a decision: each asks the applier for an apply."""
        engine = self.runtime.engine
        step = engine.step

        def counted(now: float, *, limit: int | None = None, first: Iterable[ServiceId] = ()) -> list[Outcome]:
            changed = step(now, limit=limit, first=first)
            if changed:
                self.steps_changed += 1
            return changed
        engine.step = counted  # type: ignore[method-assign]

    def sample(self) -> None:
        c, engine = self.runtime.counters, self.runtime.engine
        applied = len(self.dataplane.seconds)
        previous = self.rows[-1]["applies"] if self.rows else 0
        window = self.dataplane.seconds[previous:applied]
        self.rows.append({
            "t": round(time.monotonic() - self.began, 1), "rss_mb": round(rss_mb(), 1),
            "cpu_s": round(time.process_time(), 1), "children_cpu_s": round(children_cpu(), 1),
            "lines": c.lines, "decisions_changed": engine.decisions_changed,
            "apply_requests": self.steps_changed, "applies": c.applies,
            "coalesced": self.steps_changed - c.applies, "apply_errors": c.apply_errors,
            "apply_median_ms": round(statistics.median(window) * 1000, 1) if window else None,
            "apply_max_ms": round(max(window) * 1000, 1) if window else None,
            "rejections": dict(sorted(c.rejections.items())), "flaps": c.flaps,
            "flap_damped_now": damped(engine.outcomes()),
            "load1": round(os.getloadavg()[0], 2)})
        row = self.rows[-1]
        print(f"t={row['t']:>6}s rss={row['rss_mb']:>6} MB cpu={row['cpu_s']:>6}+{row['children_cpu_s']} s "
              f"lines={row['lines']:>7} decisions={row['decisions_changed']:>7} "
              f"requests={row['apply_requests']:>6} applies={row['applies']:>5} "
              f"damped={row['flap_damped_now']:>3} rej={row['rejections']} load={row['load1']}", flush=True)

    async def lines(self) -> AsyncIterator[str]:
        self.began = time.monotonic()
        for line in self.feed.initial(0.0):
            yield line
        self.sample()
        ticks, next_sample = 0, self.every
        while (t := time.monotonic() - self.began) < self.seconds:
            for line in self.feed.tick(t, round(self.rate * TICK)):
                yield line
            if t >= next_sample:
                self.sample()
                next_sample += self.every
            ticks += 1
            await asyncio.sleep(max(0.0, self.began + ticks * TICK - time.monotonic()))
        await self.settle()
        self.sample()

    async def settle(self, bound: float = 30.0) -> None:
        """Freeze the router's clock, then wait (bounded) until the kernel holds the engine's decision.

        With the clock frozen no review falls due, so services still converging (slew, dwell: reviewed
        about once a second) stop moving; the decision the kernel must hold is then fixed.
        """
        runtime, started = self.runtime, time.monotonic()
        self.unsettled = {"due_at_end_of_churn": due_soon(runtime, within=5.0)}
        self.clock.freeze()
        while time.monotonic() - started < bound:
            if runtime.installed == runtime.engine.desired():
                self.quiet_after = time.monotonic() - started
                break
            await asyncio.sleep(0.01)
        self.unsettled |= {"installed_is_desired": runtime.installed == runtime.engine.desired(),
                           "differing": differing(runtime.installed, runtime.engine.desired())}


def due_soon(runtime: RouterRuntime, within: float = 2.0, limit: int = 5) -> list[str]:
    """Services the engine will review within ``within`` seconds, with their status (for the report)."""
    now, engine = time.monotonic(), runtime.engine
    due = sorted((at, service) for service, at in engine._review_at.items() if at - now < within)
    out = []
    for at, service in due[:limit]:
        o = engine.outcome(service)
        out.append(f"{service} in {at - now:.2f}s: " + (f"status {o.status!r} fallback {o.fallback} converging "
                                                      f"{o.converging} {o.decision.excluded}" if o else "no outcome"))
    return [*out, f"... {len(due)} in all"]


def differing(installed: DesiredState | None, desired: DesiredState, limit: int = 5) -> list[str]:
    """Services whose installed target is not the desired one (a few, for the report)."""
    have = {s.service: s for s in installed.services} if installed is not None else {}
    out = []
    for target in desired.services:
        if have.get(target.service) != target:
            old = have.get(target.service)
            out.append(f"{target.service}: installed {old and [(str(i.key), i.weight) for i in old.instances]} "
                       f"desired {[(str(i.key), i.weight) for i in target.instances]}")
    return [*out[:limit], f"... {len(out)} in all"]


# -- the end check ----------------------------------------------------------------------------------


def compare(kernel: dict[str, Any], desired: DesiredState) -> list[str]:
    """Every service, every instance key, and buckets exactly the split of the weights."""
    problems: list[str] = []
    resolution = int(kernel["resolution"])
    installed = {s["service"]: {i["key"]: int(i["buckets"]) for i in s["instances"]} for s in kernel["services"]}
    wanted = {str(s.service): s for s in desired.services}
    for name in sorted(set(installed) ^ set(wanted)):
        problems.append(f"{name}: {'only in the kernel' if name in installed else 'missing from the kernel'}")
    for name in sorted(set(installed) & set(wanted)):
        target = wanted[name]
        keys = [str(i.key) for i in target.instances]
        if set(keys) != set(installed[name]):
            problems.append(f"{name}: instances {sorted(installed[name])} != {sorted(keys)}")
            continue
        buckets = split([i.weight for i in target.instances], resolution)
        for key, want, instance in zip(keys, buckets, target.instances, strict=True):
            got = installed[name][key]
            if got != want or abs(got / resolution - instance.weight) > 1 / resolution:
                problems.append(f"{key}: {got} buckets, weight {instance.weight} -> {want}")
    return problems


def netns(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


def run(args: argparse.Namespace, ns: str) -> dict[str, Any]:
    netns("netns", "add", ns)
    netns("-n", ns, "link", "set", "lo", "up")
    netns("-n", ns, "link", "add", "b0", "type", "veth", "peer", "name", "b1")
    netns("-n", ns, "link", "set", "b0", "up")
    netns("-n", ns, "link", "set", "b1", "up")
    netns("-n", ns, "address", "add", "10.255.0.1/16", "dev", "b0")
    dataplane = SoakDataplane(LinuxDataplane(runner=NetnsRunner(ns)))
    feed = Feed(args.services, args.seed)
    soak: Soak

    async def go() -> RouterRuntime:
        clock = Clock()
        runtime = RouterRuntime(parse(CONFIG), lines=soak_lines(), dataplane=dataplane, probes=False, clock=clock)
        nonlocal soak
        soak = Soak(runtime, clock, dataplane, feed, args.seconds, args.rate, args.every)
        soak.count_steps()
        await runtime.run()
        return runtime

    async def soak_lines() -> AsyncIterator[str]:
        async for line in soak.lines():
            yield line

    cpu0, children0 = time.process_time(), children_cpu()
    runtime = asyncio.run(go())
    desired = runtime.engine.desired()
    done = subprocess.run(["ip", "netns", "exec", ns, str(Path(sys.executable).parent / "dyncast"),
                           "dataplane", "show", "--json"], check=True, capture_output=True, text=True)
    kernel = json.loads(done.stdout)
    problems = compare(kernel, desired)
    rows = soak.rows
    warm = min(rows, key=lambda r: abs(r["t"] - 0.2 * args.seconds))
    growth = rows[-1]["rss_mb"] / warm["rss_mb"] - 1
    weights = sum(len(s.instances) for s in desired.services)
    return {
        "command": "sudo .venv/bin/python benchmarks/bench_soak.py " + shlex.join(sys.argv[1:]),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} ({os.cpu_count()} CPUs, kernel {platform.release()}, "
                   f"python {platform.python_version()})",
        "note": args.note, "services": args.services, "sites": SITES, "seconds": args.seconds, "rate": args.rate,
        "namespace": ns, "feed_events": dict(sorted(feed.events.items())), "rows": rows,
        "cpu_s_total": round(time.process_time() - cpu0, 1),
        "children_cpu_s_total": round(children_cpu() - children0, 1),
        "apply_violations": dataplane.violations[:20], "quiet_after_s": soak.quiet_after,
        "unsettled": soak.unsettled,
        "final": {"services": len(desired.services), "instances": weights,
                  "kernel_services": len(kernel["services"]), "resolution": kernel["resolution"],
                  "mismatches": len(problems), "examples": problems[:20],
                  "installed_is_desired": runtime.installed == desired},
        "memory": {"warm_t": warm["t"], "warm_rss_mb": warm["rss_mb"], "end_rss_mb": rows[-1]["rss_mb"],
                   "growth": round(growth, 4)},
        "verdicts": {"kernel_matches_decision": not problems and len(kernel["services"]) == len(desired.services),
                     "memory_growth_under_10pct": growth <= 0.10,
                     "no_invalid_desired_state": not dataplane.violations,
                     "no_apply_errors": runtime.counters.apply_errors == 0},
    }


def markdown(r: dict[str, Any]) -> str:
    """The report page (benchmarks/results/soak.md) from the JSON result."""
    final, memory, verdicts = r["final"], r["memory"], r["verdicts"]
    ok = {True: "pass", False: "FAIL"}
    lines = [
        "# Soak (issue 8, item 6)", "",
        f"Run {r['date']} on {r['machine']}: `{r['command']}`. {r['note']}", "",
        f"`RouterRuntime` in-process, fed ExaBGP 5.0 JSON lines: {r['services']:,} services x {r['sites']} sites "
        f"(one BGP peer per site, one instance per service per site: {r['services'] * r['sites']:,} instances), "
        f"{r['rate']} random events a second for {r['seconds']:.0f} s of wall time, on the real "
        f"`LinuxDataplane` programming network namespace `{r['namespace']}` (created and deleted by the run). "
        "**Time is not compressed**: the router's clock is `time.monotonic` for the whole churn, so flap "
        "damping, dwell, slew, the 30 s affinity linger and the 0.1 s apply cap all run in wall time. "
        "Only after the churn is the clock frozen (see the end check). The feed is described in the "
        "script's docstring (`benchmarks/bench_soak.py`).", "",
        "Feed events: " + ", ".join(f"{k} {v:,}" for k, v in r["feed_events"].items()) + ".", "",
        "## Over time", "",
        "CPU: seconds of this process (router, feed, the dataplane's Python) + of its finished children "
        "(`nft`, `ip`). Apply requests: engine steps that changed a decision (each asks for an apply); "
        "coalesced = requests - applies. Apply ms: median / max of the applies in the interval. "
        "Damped: instances currently excluded as `flap-damped`. Load: 1-minute load average.", "",
        "| t (s) | RSS MB | CPU s (self + children) | lines | decisions changed | apply requests | applies | "
        "coalesced | apply ms | rejected: malformed / implausible | flaps | damped | load |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        rej = row["rejections"]
        ms = f"{row['apply_median_ms']} / {row['apply_max_ms']}" if row["apply_median_ms"] is not None else "-"
        lines.append(
            f"| {row['t']:.0f} | {row['rss_mb']} | {row['cpu_s']} + {row['children_cpu_s']} | {row['lines']:,} | "
            f"{row['decisions_changed']:,} | {row['apply_requests']:,} | {row['applies']:,} | {row['coalesced']:,} | "
            f"{ms} | {rej.get('malformed-line', 0):,} / {rej.get('metrics-implausible', 0):,} | {row['flaps']:,} | "
            f"{row['flap_damped_now']} | {row['load1']} |")
    other = {k: v for k, v in r["rows"][-1]["rejections"].items() if k not in ("malformed-line", "metrics-implausible")}
    lines += ["", f"Other rejection reasons at the end: {other or 'none'}. Apply errors: "
              f"{r['rows'][-1]['apply_errors']}. CPU over the run: {r['cpu_s_total']} s in the process, "
              f"{r['children_cpu_s_total']} s in children.", "",
              "## End check", "",
              "After the churn the router's clock is frozen (no review falls due any more, so the services still "
              "converging under slew and dwell stop moving), the feed waits until the router has installed "
              "`engine.desired()`, and ends the input. The kernel is then read back with "
              f"`dyncast dataplane --netns {r['namespace']} show --json` and compared with `engine.desired()`: "
              "the same services, the same instance keys, and every instance's buckets exactly the "
              "largest-remainder split of its weights (so within one bucket, "
              f"1/{final['resolution']}, of its weight).", "",
              f"- services: {final['services']:,} decided, {final['kernel_services']:,} in the kernel; "
              f"instances (with weight-0 lingering ones): {final['instances']:,}; mismatches: {final['mismatches']}"
              + (f" (e.g. {final['examples'][:3]})" if final["examples"] else ""),
              f"- the router's last installed state equals `engine.desired()`: {final['installed_is_desired']}; "
              f"reached {r['quiet_after_s'] if r['quiet_after_s'] is None else round(r['quiet_after_s'], 2)} s "
              "after the freeze",
              f"- services still converging (a review due within 5 s) when the churn stopped: "
              f"{r['unsettled']['due_at_end_of_churn'][-1].removeprefix('... ').removesuffix(' in all')}",
              f"- memory: RSS {memory['warm_rss_mb']} MB at t = {memory['warm_t']:.0f} s (20 % of the run, after "
              f"warm-up), {memory['end_rss_mb']} MB at the end: growth {memory['growth'] * 100:.1f} %", "",
              "## Verdicts", "",
              f"- kernel state matches the final decision exactly: **{ok[verdicts['kernel_matches_decision']]}**",
              f"- memory growth after warm-up <= 10 %: **{ok[verdicts['memory_growth_under_10pct']]}**",
              f"- every desired state handed to the dataplane valid (weights >= 0 summing to 1 or 0): "
              f"**{ok[verdicts['no_invalid_desired_state']]}**",
              f"- no dataplane apply failed: **{ok[verdicts['no_apply_errors']]}**", ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=570.0, help="wall seconds of churn")
    parser.add_argument("--rate", type=int, default=500, help="random events a second (plus flappers, peer flaps)")
    parser.add_argument("--every", type=float, default=30.0, help="seconds between report rows")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--note", default="")
    parser.add_argument("--json", type=Path, default=RESULTS / "soak.json")
    parser.add_argument("--render", type=Path, default=None, help="only write the .md page from this JSON result")
    args = parser.parse_args(argv)
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    configure("error")  # the router logs every decision change; the rows are the report
    ns = f"dyncast-soak-{os.getpid()}"
    try:
        result = run(args, ns)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    args.json.with_suffix(".md").write_text(markdown(result))
    print(json.dumps({k: result[k] for k in ("final", "memory", "verdicts", "quiet_after_s")}, indent=2))
    return 0 if all(result["verdicts"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
