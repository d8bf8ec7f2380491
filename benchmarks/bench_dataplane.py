"""Linux dataplane costs against bare-kernel floors measured in the same run (issue 4).

Everything runs inside network namespaces created (and removed) by the lab
harness; the backend uses the same ``ip netns exec`` runner as the floors.

1. **Weight change** of 1, 100 and 10,000 services (of 10,000 installed, two
   instances each): ``LinuxDataplane.apply`` against the floor of a bare
   ``nft -f`` of exactly the transaction the backend sent (recorded), in both
   directions (A->B, B->A), several rounds; medians. Two inputs: the desired
   state rebuilt from fresh objects (what ``engine.owner.desired()`` does
   today) and one that reuses the unchanged services' ``ServiceTarget``
   objects (then unchanged services cost an identity check).
2. **Route install** of 1,000 and 10,000 instances (two per service) into an
   empty namespace: the backend's whole first apply and its route phase (the
   ``ip -batch`` calls) against the floor of a bare ``ip -batch`` / ``ip -6
   -batch`` of the same lines in a cleaned namespace.
3. **New-connection rate** client -> ingress -> instance (one LAN hop): the
   same D-SID plainly routed by the ingress's main table vs. steered by the
   dataplane (nftables + policy routing, no main-table route), alternating
   rounds; ``python -m dyncast_bgp.dataplane.traffic rate``.

Run: ``.venv/bin/python benchmarks/bench_dataplane.py [--services 10000] [--rounds 5] [--seconds 3]``
(root). Results: benchmarks/results/dataplane.md and .json.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import ipaddress
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dyncast_bgp.dataplane.desired import DesiredState, Encap, Forwarding, InstanceTarget, ServiceTarget
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.dataplane.runner import Completed, NetnsRunner
from dyncast_bgp.lab.netns import Lab, LanPort, Namespace
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.model import InstanceKey, ServiceId

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
HOPS = ("10.255.0.2", "10.255.0.3")


@dataclass
class Recorder:
    """A NetnsRunner that remembers every command with its input and duration."""

    inner: NetnsRunner
    calls: list[tuple[tuple[str, ...], str | None, float]] = field(default_factory=list)

    def run(self, argv: Sequence[str], *, input: str | None = None) -> Completed:
        started = time.perf_counter()
        done = self.inner.run(argv, input=input)
        self.calls.append((tuple(argv), input, time.perf_counter() - started))
        return done

    def take(self) -> list[tuple[tuple[str, ...], str | None, float]]:
        calls, self.calls = self.calls, []
        return calls


def service_id(i: int) -> ServiceId:
    return ServiceId(ipaddress.ip_network(f"10.{100 + i // 65536}.{(i // 256) % 256}.{i % 256}/32"))


def target(i: int, weight: float) -> ServiceTarget:
    sid = service_id(i)
    return ServiceTarget(sid, tuple(
        InstanceTarget(InstanceKey(sid, ipaddress.ip_address(hop)), w,
                       Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address(hop)))
        for hop, w in zip(HOPS, (weight, 1 - weight), strict=True)))


def state(n: int, flipped: int, *, base: DesiredState | None = None, weight: float = 0.7,
          mode: str = "fresh") -> DesiredState:
    """``n`` services at ``weight``/1-weight, the first ``flipped`` reversed.

    ``mode``: ``fresh`` builds every object anew; ``rebuilt`` builds new
    targets and forwardings around ``base``'s service ids and instance keys; ``reused``
    passes ``base``'s unchanged targets again and new ones for the flipped services (what
    ``engine.owner.desired()`` does: it caches a service's target until its decision changes).
    """
    if mode == "fresh" or base is None:
        return DesiredState(tuple(target(i, 1 - weight if i < flipped else weight) for i in range(n)))
    if mode == "reused":
        return DesiredState(tuple(target(i, 1 - weight) if i < flipped else base.services[i] for i in range(n)))
    services = []
    for i, old in enumerate(base.services):
        w = 1 - weight if i < flipped else weight
        services.append(ServiceTarget(old.service, tuple(
            InstanceTarget(instance.key, share, Forwarding(Encap.DIRECT, next_hop=instance.key.binding))
            for instance, share in zip(old.instances, (w, 1 - w), strict=True))))
    return DesiredState(tuple(services))


def timed(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def bare(runner: NetnsRunner, argv: Sequence[str], text: str) -> float:
    started = time.perf_counter()
    done = runner.run(argv, input=text)
    elapsed = time.perf_counter() - started
    if not done.ok:
        raise RuntimeError(done.describe())
    return elapsed


def ingress_with_nexthops(lab: Lab, role: str) -> Namespace:
    ns = lab.namespace(role)
    ns.ip_batch(["link add b0 type veth peer name b1", "link set b0 up", "link set b1 up",
                 "address add 10.255.0.1/16 dev b0"])
    return ns


# -- 1. weight changes ---------------------------------------------------------------------------------


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (user + system): robust to a busy machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def bench_weights(lab: Lab, services: int, rounds: int) -> dict[str, Any]:
    """Each round: the backend applies A->B and B->A, then the floor replays both texts right away.

    Backend and floor samples of one round are taken seconds apart, so a
    change in machine load hits both; each sample also records CPU time
    (this process plus the ``nft`` child), which other work on the machine
    does not inflate the way it inflates wall time.
    """
    ns = ingress_with_nexthops(lab, "bw")
    recorder = Recorder(NetnsRunner(ns.name))
    dp = LinuxDataplane(runner=recorder)
    base = state(services, 0)
    install = timed(lambda: dp.apply(base))
    recorder.take()
    out: dict[str, Any] = {"services": services, "instances": 2 * services, "first_install_s": install,
                           "rounds": rounds, "cases": []}
    for mode in ("fresh", "rebuilt", "reused"):
        for flipped in (1, 100, services):
            backend: list[float] = []
            backend_nft: list[float] = []  # the backend's own nft -f call, within its apply
            backend_cpu: list[float] = []
            floors: list[float] = []
            floor_cpu: list[float] = []
            for _ in range(rounds):
                changed = state(services, flipped, base=base, mode=mode)
                back = base if mode == "reused" else state(services, 0, base=base, mode=mode)
                texts = []
                for desired in (changed, back):
                    gc.collect()
                    cpu = cpu_seconds()
                    result = dp.apply(desired)
                    backend_cpu.append(cpu_seconds() - cpu)
                    if not result.changed:
                        raise RuntimeError("a weight change changed nothing")
                    calls = recorder.take()
                    nft = [(argv, text, seconds) for argv, text, seconds in calls if argv[-3:] == ("nft", "-f", "-")]
                    if len(calls) != 1 or len(nft) != 1:
                        raise RuntimeError(f"a weight change ran {len(calls)} commands, expected one nft -f")
                    backend.append(result.seconds)
                    backend_nft.append(nft[0][2])
                    texts.append(nft[0][1] or "")
                base = back
                # the floor: the very same transactions, bare, in the same order (A->B, B->A: state stays consistent)
                for text in texts:
                    gc.collect()
                    cpu = cpu_seconds()
                    floors.append(bare(recorder.inner, ["nft", "-f", "-"], text))
                    floor_cpu.append(cpu_seconds() - cpu)
            case: dict[str, Any] = {"flipped": flipped, "objects": mode, "samples": len(backend),
                    "backend_s": statistics.median(backend), "floor_s": statistics.median(floors),
                    "backend_best_s": min(backend), "floor_best_s": min(floors),
                    "backend_cpu_s": statistics.median(backend_cpu), "floor_cpu_s": statistics.median(floor_cpu),
                    "backend_nft_s": statistics.median(backend_nft),
                    "backend_python_s": statistics.median(b - n for b, n in zip(backend, backend_nft, strict=True)),
                    "text_bytes": len(texts[0]),
                    "backend_all_s": backend, "floor_all_s": floors}
            case["ratio"] = case["backend_s"] / case["floor_s"]
            case["ratio_best"] = case["backend_best_s"] / case["floor_best_s"]
            case["ratio_cpu"] = case["backend_cpu_s"] / case["floor_cpu_s"]
            case["ratio_pairs"] = statistics.median(b / f for b, f in zip(backend, floors, strict=True))
            out["cases"].append(case)
            print(f"weights: {flipped:>6} of {services} services ({case['objects']:>6} objects): "
                  f"backend {case['backend_s'] * 1000:8.1f} ms (best {case['backend_best_s'] * 1000:.1f}), "
                  f"bare nft -f {case['floor_s'] * 1000:8.1f} ms (best {case['floor_best_s'] * 1000:.1f}), "
                  f"ratio median {case['ratio']:.2f}, best {case['ratio_best']:.2f}, cpu {case['ratio_cpu']:.2f}; "
                  f"in the apply: nft -f {case['backend_nft_s'] * 1000:.1f} ms, "
                  f"Python {case['backend_python_s'] * 1000:.1f} ms",
                  flush=True)
    return out


# -- 2. route install ----------------------------------------------------------------------------------


def bench_routes(lab: Lab, sizes: Sequence[int], rounds: int) -> list[dict[str, Any]]:
    ns = ingress_with_nexthops(lab, "br")
    recorder = Recorder(NetnsRunner(ns.name))
    results = []
    for instances in sizes:
        desired = state(instances // 2, 0)
        totals, route_phases, floors = [], [], []
        for _ in range(rounds):
            dp = LinuxDataplane(runner=recorder)
            gc.collect()
            totals.append(dp.apply(desired).seconds)
            calls = recorder.take()
            batches = [(argv, text or "") for argv, text, _ in calls if "-batch" in argv and "-j" not in argv]
            route_phases.append(sum(seconds for argv, _, seconds in calls if "-batch" in argv and "-j" not in argv))
            lines = sum(text.count("\n") for _, text in batches)
            dp.cleanup()
            recorder.take()
            floor = sum(bare(recorder.inner, argv, text) for argv, text in batches)
            floors.append(floor)
            LinuxDataplane(runner=recorder.inner).cleanup()
        case = {"instances": instances, "lines": lines, "apply_s": statistics.median(totals),
                "route_phase_s": statistics.median(route_phases), "floor_s": statistics.median(floors)}
        case["ratio_apply"] = case["apply_s"] / case["floor_s"]
        case["ratio_routes"] = case["route_phase_s"] / case["floor_s"]
        results.append(case)
        print(f"routes: {instances:>6} instances ({lines} batch lines): apply {case['apply_s'] * 1000:8.1f} ms "
              f"(route phase {case['route_phase_s'] * 1000:8.1f} ms), bare ip -batch {case['floor_s'] * 1000:8.1f} ms, "
              f"ratio {case['ratio_apply']:.2f} (routes {case['ratio_routes']:.2f})", flush=True)
    return results


# -- 3. connection rate --------------------------------------------------------------------------------


def bench_rate(lab: Lab, seconds: float, rounds: int, concurrency: int) -> dict[str, Any]:
    client, ingress = lab.namespaces("rc", "ri")
    lab.veth(client, "c0", ingress, "i0")
    client.add_addresses("c0", ["10.0.0.2/24"])
    client.ip_batch(["route add default via 10.0.0.1"])
    # tens of thousands of short connections to one address: reuse TIME_WAIT ports, use every port
    client.set_sysctls({"net.ipv4.tcp_tw_reuse": 1, "net.ipv4.ip_local_port_range": "1024 65535"})
    ingress.add_addresses("i0", ["10.0.0.1/24"])
    instance = lab.namespace("rs")
    lab.lan("rt", [LanPort(ingress, ("10.2.0.1/24",), "i1"), LanPort(instance, ("10.2.0.11/24",), "eth0")])
    ingress.enable_forwarding()
    instance.add_addresses("lo", ["203.0.113.10/32"])
    instance.ip_batch(["route add default via 10.2.0.1"])
    lab.spawn(instance, "serve", [sys.executable, "-m", "dyncast_bgp.dataplane.traffic", "serve", "--name", "a"])
    expect(lambda: instance.run(["ss", "-ltn"]).stdout, lambda out: ":9000" in out, what="server listening")
    dp = LinuxDataplane(runner=NetnsRunner(ingress.name))
    steered = DesiredState.of([ServiceTarget(ServiceId.parse("203.0.113.10/32"), (InstanceTarget(
        InstanceKey(ServiceId.parse("203.0.113.10/32"), ipaddress.ip_address("10.2.0.11")), 1.0,
        Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("10.2.0.11"))),))])

    def measure() -> float:
        done = client.run([sys.executable, "-m", "dyncast_bgp.dataplane.traffic", "rate", "--target",
                           "203.0.113.10", "--seconds", str(seconds), "--concurrency", str(concurrency)],
                          timeout=seconds + 60)
        result = json.loads(done.stdout)
        if result["errors"]:
            raise RuntimeError(f"connection errors: {result['errors']}")
        return float(result["rate"])

    plain, with_dataplane = [], []
    for _ in range(rounds):
        ingress.ip_batch(["route replace 203.0.113.10/32 via 10.2.0.11"])
        plain.append(measure())
        ingress.ip_batch(["route del 203.0.113.10/32"])
        dp.apply(steered)
        with_dataplane.append(measure())
        dp.cleanup()
    out: dict[str, Any] = {
        "plain_per_s": statistics.median(plain), "dataplane_per_s": statistics.median(with_dataplane),
        "rounds": rounds, "seconds": seconds, "concurrency": concurrency, "plain_all": plain,
        "dataplane_all": with_dataplane}
    out["ratio"] = out["dataplane_per_s"] / out["plain_per_s"]
    print(f"rate: plain {out['plain_per_s']:.0f}/s, dataplane {out['dataplane_per_s']:.0f}/s, "
          f"ratio {out['ratio']:.2f}", flush=True)
    return out


# -- report ----------------------------------------------------------------------------------------------


def report(results: dict[str, Any]) -> str:
    weights = results["weights"]
    lines = [
        "# Dataplane benchmark (issue 4)",
        "",
        f"Run {results['when']} on {results['host']} ({os.cpu_count()} CPUs, kernel {platform.release()}, "
        f"nftables 1.0.6, iproute2 6.1): `{results.get('command', 'benchmarks/bench_dataplane.py')}`. Every "
        "floor is measured in the same run through the same `ip netns exec` runner. The machine is shared "
        "(other benchmarks and tests ran meanwhile; load average (1 min) before/after: "
        f"{results['load_before'][0]:.2f}/{results['load_after'][0]:.2f}), so wall times swing by up to 2x "
        "between minutes; read the ratios, not the absolute times.",
        "",
        f"## 1. Weight change ({weights['services']} services installed, {weights['instances']} instances)",
        "",
        f"First install of all of them: {weights['first_install_s']:.2f} s. Each round the backend applies "
        "A->B and B->A and the floor then replays both recorded texts at once, so both see the same load; "
        f"{weights.get('rounds', '?')} rounds, {2 * weights.get('rounds', 0)} samples per row.",
        "",
        "| services changed | desired-state objects | backend apply (median / best) "
        "| bare `nft -f` of the same transaction (median / best) | ratio of medians | ratio of bests "
        "| median per-round ratio | CPU ratio | in the apply: `nft -f` / Python |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for case in weights["cases"]:
        if "backend_best_s" not in case:  # a run from before best-of and CPU were recorded
            lines.append(f"| {case['flipped']} | {case['objects']} | {case['backend_s'] * 1000:.1f} ms "
                         f"| {case['floor_s'] * 1000:.1f} ms | {case['ratio']:.2f} | | | | |")
            continue
        lines.append(
            f"| {case['flipped']} | {case['objects']} "
            f"| {case['backend_s'] * 1000:.1f} / {case['backend_best_s'] * 1000:.1f} ms "
            f"| {case['floor_s'] * 1000:.1f} / {case['floor_best_s'] * 1000:.1f} ms "
            f"| {case['ratio']:.2f} | {case['ratio_best']:.2f} | {case['ratio_pairs']:.2f} | {case['ratio_cpu']:.2f} "
            f"| {case['backend_nft_s'] * 1000:.0f} / {case['backend_python_s'] * 1000:.0f} ms |")
    worst = {mode: max(c["ratio"] for c in weights["cases"] if c["objects"] == mode)
             for mode in sorted({c["objects"] for c in weights["cases"]})}
    big = [c for c in weights["cases"] if c["flipped"] == weights["services"]]
    lines += ["", "Goal: within 1.5x of the floor. Worst ratio of medians per input: "
              + ", ".join(f"{mode} {ratio:.2f}" for mode, ratio in worst.items())
              + f"; for {weights['services']} services changed: "
              + ", ".join(f"{c['objects']} {c['ratio']:.2f} (best {c.get('ratio_best', c['ratio']):.2f})" for c in big)
              + ". A weight change is exactly one `nft -f` (checked by the "
              "benchmark); the rest is Python: comparing every service with its previous target, then, per "
              "changed service, buckets and rules (the last column splits the backend's apply into its own "
              "`nft -f` call and the Python around it). CPU ratio: CPU seconds (this process plus the `nft` "
              "child) of the apply over those of the floor, which other work inflates less than wall time. "
              "Desired-state objects: `fresh` = every object new (worst "
              "case); `rebuilt` = new targets and forwardings around the same service ids and instance keys; "
              "`reused` = unchanged `ServiceTarget` objects passed again (an identity check each), new ones "
              "only for the changed services: what `engine.owner.desired()` produces (it caches each "
              "service's target until its decision changes).", "",
              "## 2. Route install into an empty namespace", "",
              "| instances | batch lines | backend apply (all) | of which `ip -batch` | bare `ip -batch` | ratio apply "
              "| ratio route phase |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for case in results["routes"]:
        lines.append(f"| {case['instances']} | {case['lines']} | {case['apply_s'] * 1000:.0f} ms "
                     f"| {case['route_phase_s'] * 1000:.0f} ms | {case['floor_s'] * 1000:.0f} ms "
                     f"| {case['ratio_apply']:.2f} | {case['ratio_routes']:.2f} |")
    rate = results["rate"]
    lines += ["", "Goal: within 3x. The route phase is the very same `ip -batch` lines (one `route replace` and one "
              "`ip rule` per instance, guards), so it runs at the floor: the 3x goal holds for route "
              "programming at both sizes. The whole first apply adds reading the kernel (nft, rules, links, "
              "sysctl: about 40 ms of process starts), the nftables transaction that creates the table, one "
              "chain per service and the registry, and Python (~130 us per new instance, idle machine); at 1,000 "
              "instances that is a few times the batch itself, so the whole apply is not within 3x there. Inserting N "
              "rules costs O(N^2) in the kernel (the rule list is walked), for the floor too.", "",
              "## 3. New connections through the ingress", "",
              "| routing of the D-SID | connections/s |", "|---|---:|",
              f"| plain main-table route | {rate['plain_per_s']:.0f} |",
              f"| dataplane (nftables pick + ct mark + fwmark rule + table) | {rate['dataplane_per_s']:.0f} |",
              f"| ratio | {rate['ratio']:.2f} |", "",
              f"Goal: >= 0.8. {rate['rounds']} alternating rounds of {rate['seconds']:g} s, "
              f"{rate['concurrency']} concurrent connections from one asyncio client "
              "(connect, read the server's name, close). The client and server are Python on the same 2 CPUs, so "
              "the rate is bounded by them; the ratio shows what the ruleset costs relative to that.", ""]
    history = results.get("history", [])
    if history:
        lines += ["## Earlier runs (weight change, ratio of medians backend / bare `nft -f`)", "",
                  "| run | load before/after | 1 | 100 | all | note |", "|---|---|---|---|---|---|"]
        for run in history:
            cells = []
            for size in ("1", "100", "all"):
                found = run["ratios"].get(size, {})
                cells.append(", ".join(f"{mode} {ratio:.2f}" for mode, ratio in sorted(found.items())))
            lines.append(f"| {run['when']} | {run['load']} | {' | '.join(cells)} | {run.get('note', '')} |")
        lines.append("")
    return "\n".join(lines)


def summary(results: dict[str, Any], note: str) -> dict[str, Any]:
    """One line of history for a run: its weight-change ratios by size and input."""
    weights = results["weights"]
    ratios: dict[str, dict[str, float]] = {}
    for case in weights["cases"]:
        size = "all" if case["flipped"] == weights["services"] else str(case["flipped"])
        ratios.setdefault(size, {})[case["objects"]] = round(case["ratio"], 2)
    return {"when": results["when"], "load": f"{results['load_before'][0]:.2f}/{results['load_after'][0]:.2f}",
            "ratios": ratios, "note": note}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--route-sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-write", action="store_true", help="print only, do not write benchmarks/results")
    parser.add_argument("--report-only", action="store_true", help="re-render dataplane.md from dataplane.json")
    parser.add_argument("--note", default="", help="what changed since the previous run (kept in its history)")
    args = parser.parse_args(argv)
    if args.report_only:
        (RESULTS / "dataplane.md").write_text(report(json.loads((RESULTS / "dataplane.json").read_text())))
        return 0
    if os.geteuid() != 0:
        print("bench_dataplane: needs root (network namespaces)", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"when": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                               "host": platform.node(), "load_before": os.getloadavg(),
                               "command": shlex.join([".venv/bin/python", "benchmarks/bench_dataplane.py",
                                                    *(argv if argv is not None else sys.argv[1:])])}
    previous = RESULTS / "dataplane.json"
    if previous.exists() and not args.no_write:  # the previous run joins the history
        before = json.loads(previous.read_text())
        results["history"] = [*before.get("history", []), summary(before, before.get("note", ""))]
    results["note"] = args.note
    with Lab(prefix="dcb") as lab:
        results["weights"] = bench_weights(lab, args.services, args.rounds)
        results["routes"] = bench_routes(lab, args.route_sizes, max(2, args.rounds // 2))
        results["rate"] = bench_rate(lab, args.seconds, max(2, args.rounds // 2 + 1), args.concurrency)
    results["load_after"] = os.getloadavg()
    text = report(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "dataplane.md").write_text(text)
        (RESULTS / "dataplane.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
