"""Issue 7 item 6: the `skewed` case at small scale on labs/three-site with real traffic.

In three-site both client sites are nearest to site1, the smallest (4 workers,
40 requests/s): "most clients near the smallest site". The same client load
(Poisson sessions from both client sites) runs twice, each time on a fresh
copy of the lab:

- ``anycast``: plain nearest anycast. The ingresses run no dyncast router; each
  has one static route for the service address to the nearest site (SRv6 to
  site1's instance), which is what BGP shortest-path anycast would choose.
- ``weighted``: the lab as shipped: ExaBGP + `dyncast router`, policy weighted.

It reports, per mode, the clients' p50/p99 response time (successful requests),
failed requests and the share of new sessions per site over the measured
window, and whether the ordering matches the simulator's `skewed` scenario
(docs/evaluation.md: dyncast weighted far below nearest anycast at p99).

Run as root: ``.venv/bin/python benchmarks/lab_crosscheck.py [--seconds 60] [--rate 6]``
(about 4 minutes). Results: benchmarks/results/lab-crosscheck.md and .json.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.demo.actions import SERVICE_PORT
from dyncast_bgp.lab.demo.routers import RouterSampler
from dyncast_bgp.lab.demo.story import three_site_story
from dyncast_bgp.lab.demo.tail import EventTail
from dyncast_bgp.lab.loadgen import RequestEvent, session_facts, window_stats
from dyncast_bgp.lab.runner import LabRun

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "labs" / "three-site"
NAME = "xcheck"
ADDRESS = "203.0.113.10"
NEAREST_SID = "fc00:1::1"  # site1's instance: the lowest-RTT site from both ingresses
RESULTS = ROOT / "benchmarks" / "results"
WARMUP = 5.0


def prepare(directory: Path, mode: str) -> Path:
    """A copy of three-site named ``xcheck``; for ``anycast`` the ingresses get a static route, no router."""
    lab = directory / mode
    shutil.copytree(SOURCE, lab)
    for config in lab.glob("*.yml"):
        config.write_text(config.read_text().replace("/run/dyncast-lab/three-site", f"/run/dyncast-lab/{NAME}"))
    clab = lab / "three-site.clab.yml"
    data = yaml.safe_load(clab.read_text())
    data["name"] = NAME
    if mode == "anycast":
        for ingress in ("ingress1", "ingress2"):
            node = data["topology"]["nodes"][ingress]
            node["cmd"] = "sleep infinity"
            node["exec"].append(f"ip route add {ADDRESS}/32 encap seg6 mode encap segs {NEAREST_SID} dev eth2")
    target = lab / f"{NAME}.clab.yml"
    target.write_text(yaml.safe_dump(data, sort_keys=False))
    clab.unlink()
    return target


def wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"lab_crosscheck: not within {timeout:g} s: {what}")
        time.sleep(0.25)


def measure(mode: str, directory: Path, *, seconds: float, rate: float) -> dict[str, Any]:
    story = three_site_story()
    story = dataclasses.replace(story, status_files={
        router: path.replace("/three-site/", f"/{NAME}/") for router, path in story.status_files.items()})
    names = {address: name for name, address in story.instance_address.items()}
    sites = {instance: site.name for site in story.sites for instance in site.instances}
    topology = load_topology(prepare(directory, mode))
    out = directory / f"events-{mode}"
    out.mkdir()
    tails = {client: EventTail(out / f"{client}.jsonl", client) for client in story.clients}
    started = time.monotonic()
    with LabRun(topology) as lab:
        if mode == "weighted":
            sampler = RouterSampler(story.status_files, names, since=time.time())
            wait(lambda: bool(sampler.sample(time.time())) and sampler.ready(len(names)), 90,
                 "both routers programmed with every instance")

        def answers() -> bool:
            return all(lab.exec(client, ["curl", "-s", "-m", "2", "-o", "/dev/null", "-w", "%{http_code}",
                                         f"http://{ADDRESS}:{SERVICE_PORT}/"], check=False).stdout == "200"
                       for client in story.clients)

        wait(answers, 60, "a request from every client site is answered")
        up = time.monotonic() - started
        dyncast = str(Path(sys.executable).with_name("dyncast"))
        loads = [lab.spawn(client, f"load-{client}", [
            dyncast, "lab", "load", "--target", f"{ADDRESS}:{SERVICE_PORT}", "--rate", f"{rate:g}",
            "--requests-per-session", "6", "--think-ms", "200", "--timeout", "10", "--seed", str(seed),
            "--client", client, "--out", str(tails[client].path), "--log-level", "warning"])
            for seed, client in enumerate(story.clients, start=1)]
        begin = time.time() + WARMUP
        time.sleep(WARMUP + seconds)
        end = time.time()
        lab.stop(*loads)
    events: list[RequestEvent] = []
    for tail in tails.values():
        events.extend(tail.read())
    stats = window_stats(events, begin, end, session_facts(events))
    failed_by = dict(sorted(stats.errors.items()))
    return {"mode": mode, "lab_up_s": round(up, 1), "window_s": round(end - begin, 1), "requests": stats.requests,
            "failed": stats.failures, "errors": failed_by, "new_sessions": stats.sessions,
            "p50_ms": None if stats.p50_ms is None else round(stats.p50_ms, 1),
            "p99_ms": None if stats.p99_ms is None else round(stats.p99_ms, 1),
            "site_share": {site: round(share, 3) for site, share in stats.grouped(sites).shares.items()}}


def markdown(report: dict[str, Any]) -> str:
    rows = report["modes"]
    lines = ["# Lab cross-check of the simulator's `skewed` case (issue 7 item 6)", "",
             f"Command: `.venv/bin/python benchmarks/lab_crosscheck.py --seconds {report['seconds']:g} "
             f"--rate {report['rate']:g}` (root)  ",
             f"Date: {report['date']}  ", f"Machine: {report['machine']}", "",
             "labs/three-site with real traffic: both client sites are nearest to site1, the smallest (4 workers, "
             "40 requests/s); offered load about 72 requests/s (two client sites, "
             f"{report['rate']:g} sessions/s each, 6 requests per session). `anycast`: the ingresses run no dyncast "
             "router and send the service address to the nearest site (a static SRv6 route to site1); "
             "`weighted`: the lab as shipped. Request timeout 10 s; latency over successful requests.", "",
             "| mode | requests | failed | p50 ms | p99 ms | share site1 | share site2 | share site3 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        share = row["site_share"]
        lines.append(f"| {row['mode']} | {row['requests']} | {row['failed']} | {row['p50_ms']} | {row['p99_ms']} | "
                     f"{share.get('site1', 0):.1%} | {share.get('site2', 0):.1%} | {share.get('site3', 0):.1%} |")
    lines += ["", report["verdict"], ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per mode (after 5 s warm-up)")
    parser.add_argument("--rate", type=float, default=6.0, help="new sessions per second per client site")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("lab_crosscheck: needs root (network namespaces)", file=sys.stderr)
        return 2
    modes = []
    with tempfile.TemporaryDirectory(prefix="dyncast-xcheck-") as temporary:
        for mode in ("anycast", "weighted"):
            print(f"{mode}: bringing the lab up and measuring {args.seconds:g} s ...", flush=True)
            modes.append(measure(mode, Path(temporary), seconds=args.seconds, rate=args.rate))
            print(json.dumps(modes[-1]), flush=True)
    shutil.rmtree(f"/run/dyncast-lab/{NAME}", ignore_errors=True)
    anycast, weighted = modes
    same = (weighted["p99_ms"] or 0) < (anycast["p99_ms"] or 0) and weighted["failed"] <= anycast["failed"]
    verdict = (f"Ordering {'matches' if same else 'DOES NOT match'} the simulator's `skewed` scenario "
               f"(docs/evaluation.md: weighted p99 112 ms vs nearest anycast 291 s): here weighted p99 "
               f"{weighted['p99_ms']} ms with {weighted['failed']} failed requests, anycast p99 {anycast['p99_ms']} ms "
               f"with {anycast['failed']} failed.")
    report = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, load average "
                         f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end",
              "seconds": args.seconds, "rate": args.rate, "modes": modes, "ordering_matches": same,
              "verdict": verdict}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lab-crosscheck.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "lab-crosscheck.md").write_text(markdown(report))
    print(verdict)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
