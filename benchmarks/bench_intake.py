#!/usr/bin/env python3
"""The router's intake, end to end: ExaBGP JSON line -> event -> RIB, against bare json.loads.

Issue 3 goal: at least 50,000 updates/s on one core, and within 2x of a
baseline that only reads and json-parses the same lines in the same process.
That baseline is the standard library's ``json.loads``. Since decision 0012 the
router reads the usual UPDATE with msgspec's typed decoder, so a second bare
parse is shown beside it: msgspec's own generic decode (to dicts and lists),
the fastest bare parse in the process; the ratio to it is printed, not judged.

The feed imitates what an ingress sees from a route reflector with ADD-PATH:
``--services`` D-SIDs x ``--instances`` instances, each UPDATE one path with six
metric communities (cpu, sessions, capacity, delay, state, version), metrics
changing line by line, a withdrawal every 50 lines; half the lines in ExaBGP
5.0's shape (``"exabgp": "5.0.0"``, as-path object) and half in 4.2's
(``"4.0.1"``, as-path list), interleaved. Each figure is the best of
``--rounds``; the measurements alternate within a round. The RIB decodes a
path's metrics when a decision first reads it, so the last row adds that:
after every 1,000 lines (a coalescing window) the candidates of each service
those lines touched are built.

    .venv/bin/python benchmarks/bench_intake.py [--lines 200000] [--rounds 5] [--json OUT]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from dyncast_bgp.engine.rib import Rib
from dyncast_bgp.model import PathMetrics, ServiceId, StateFlag
from dyncast_bgp.wire.exabgp_json import parse_line
from dyncast_bgp.wire.metrics import encode_metrics


def feed(count: int, services: int, instances: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for index in range(count):
        service = index % services
        instance = (index // services) % instances
        prefix = str(ipaddress.IPv4Address(0x0AC80000 + service)) + "/32"
        next_hop = str(ipaddress.IPv4Address(0xC6336400 + instance + 1))
        v42 = index % 2 == 1
        header = {"exabgp": "4.0.1" if v42 else "5.0.0", "time": 1_700_000_000.0 + index / 1000.0,
                  "host": "ingress", "pid": 4242, "ppid": 1, "counter": index, "type": "update"}
        neighbor = {"address": {"local": "10.0.0.2", "peer": "10.0.0.3"}, "asn": {"local": 65000, "peer": 65000},
                    "direction": "receive"}
        if not v42:
            neighbor["router-id"] = "10.0.0.3"
        path_info = f"0.0.0.{instance + 1}"
        if index % 53 == 52:  # 53 is coprime with the service count, so withdrawals hit announced paths
            update: dict[str, object] = {"withdraw": {"ipv4 unicast": [{"nlri": prefix,
                                                                         "path-information": path_info}]}}
        else:
            communities = encode_metrics({"cpu_utilization": rng.uniform(0, 100),
                                          "active_sessions": rng.randrange(0, 5000), "capacity": 1000,
                                          "service_delay": rng.randrange(100, 20000)},
                                         flags=StateFlag.NONE, version=7)
            attribute: dict[str, object] = {
                "origin": "igp", "local-preference": 100,
                "extended-community": [{"value": int.from_bytes(c.pack(), "big"), "string": ""}
                                       for c in communities]}
            attribute["as-path"] = [65001] if v42 else {"0": {"element": "as-sequence", "value": [65001]}}
            update = {"attribute": attribute,
                      "announce": {"ipv4 unicast": {next_hop: [{"nlri": prefix, "path-information": path_info}]}}}
        neighbor["message"] = {"update": update}
        lines.append(json.dumps({**header, "neighbor": neighbor}))
    return lines


def bare(lines: Sequence[str]) -> None:
    loads = json.loads
    for line in lines:
        loads(line)


def bare_msgspec(lines: Sequence[str]) -> None:
    decode = msgspec.json.Decoder().decode
    for line in lines:
        decode(line)


def parse_only(lines: Sequence[str]) -> None:
    for line in lines:
        parse_line(line)


def parse_and_rib(lines: Sequence[str]) -> Rib:
    rib = Rib()
    apply = rib.apply
    for number, line in enumerate(lines):
        apply(parse_line(line), float(number))
    return rib


def parse_rib_and_candidates(lines: Sequence[str], batch: int = 1000) -> Rib:
    """The whole way to decision inputs: after each batch (a coalescing window), the candidates of
    every service the batch touched are built, which decodes each touched path's metrics once."""
    rib = Rib()
    apply = rib.apply
    touched: set[ServiceId] = set()
    for number, line in enumerate(lines):
        touched |= apply(parse_line(line), float(number))
        if number % batch == batch - 1:
            for service in touched:
                rib.candidates(service, float(number), path_of=_no_path)
            touched.clear()
    return rib


def _no_path(_: object) -> PathMetrics:
    return _EMPTY_PATH


_EMPTY_PATH = PathMetrics()


def best(fn: Callable[[Sequence[str]], object], lines: Sequence[str]) -> float:
    began = time.perf_counter()
    fn(lines)
    return time.perf_counter() - began


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    lines = feed(args.lines, args.services, args.instances)
    rib = parse_and_rib(lines)  # warm-up, and a check that the feed is what it claims
    assert len(rib) > 0 and rib.counters.withdrawn > 0
    rib.check_invariants()
    times: dict[str, list[float]] = {"json.loads": [], "msgspec decode (generic)": [], "parse_line": [],
                                     "parse_line + RIB": [], "+ candidates per 1,000 lines": []}
    for _ in range(args.rounds):
        times["json.loads"].append(best(bare, lines))
        times["msgspec decode (generic)"].append(best(bare_msgspec, lines))
        times["parse_line"].append(best(parse_only, lines))
        times["parse_line + RIB"].append(best(parse_and_rib, lines))
        times["+ candidates per 1,000 lines"].append(best(parse_rib_and_candidates, lines))
    floor, fastest = min(times["json.loads"]), min(times["msgspec decode (generic)"])
    rows = {name: {"seconds": min(values), "lines_per_s": len(lines) / min(values),
                   "ratio_to_json_loads": min(values) / floor, "ratio_to_msgspec": min(values) / fastest}
            for name, values in times.items()}
    print(f"intake: {len(lines):,} UPDATE lines ({args.services:,} services x {args.instances} instances, "
          f"5.0 and 4.2 shapes), best of {args.rounds}; python {platform.python_version()}")
    print(f"{'measurement':<30} {'lines/s':>12} {'/ json.loads':>13} {'/ msgspec':>10}")
    for name, row in rows.items():
        print(f"{name:<30} {row['lines_per_s']:>12,.0f} {row['ratio_to_json_loads']:>13.2f} "
              f"{row['ratio_to_msgspec']:>10.2f}")
    goal = rows["parse_line + RIB"]
    verdict = "met" if goal["lines_per_s"] >= 50_000 and goal["ratio_to_json_loads"] <= 2.0 else "MISSED"
    print(f"goal (>= 50,000/s and <= 2.0x json.loads): {verdict}; "
          f"{goal['ratio_to_msgspec']:.2f}x msgspec's generic decode (shown, not judged: decision 0012)")
    if args.json:
        args.json.write_text(json.dumps({"lines": len(lines), "rows": rows, "goal": verdict}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
