"""Convergence: a change at an agent to the ingress kernel, against ExaBGP alone (issue 5 item 5).

Question: how long from a state change of one instance at its agent until the
ingress router's nftables show the new weights; p50/p99 over 100 changes,
against the floor of ExaBGP alone (an API command at one speaker until the
route arrives at a receiver across the same route reflector) in the same run.
Goal: p50 <= 2x the floor's p50.

The lab is ``labs/three-site``, copied to a temporary directory with another
``name:`` (namespaces ``clab-convbench-...``, sockets and status files under
``/run/dyncast-lab/convbench/``; the lead's demo can run beside it) and four
additions, none on the dyncast path's processes:

- ``edge1`` gets a second address 10.0.31.2 on ``lo``, ``ingress1`` gets
  10.0.32.2; the transit routes both (two static routes);
- the route reflector gets the floor speaker (10.0.31.2) and the floor
  receiver (10.0.32.2) as clients in peer groups of their own, with the
  same timers; outbound prefix lists keep the floor prefix 198.18.0.1/32 away
  from the real ingresses and every dyncast route away from the floor
  receiver, so neither receiver parses the other's updates.

The path measured (dyncast): ``dyncast ctl drain|undrain web/s1a`` on edge1's
control socket (t0 = just before the request is sent) -> agent -> edge1's
ExaBGP -> 5 ms netem on edge1's uplink -> transit -> FRR route reflector ->
ingress1's ExaBGP -> ``dyncast router`` (RIB, decision, coalescing
``apply_interval``, ``nft -f`` in a worker thread) -> the kernel. t1 = the
first nftables transaction after t0 on the service's chain in ingress1's
namespace in which s1a's pick rule is gone (drain) or back (undrain), stamped
by ``python -m dyncast_bgp.lab.nftwatch`` in that namespace (``nft -a
monitor``: event driven, the kernel notifies at commit).

The floor: a plain ExaBGP in edge1's namespace (same uplink, same netem)
with the lab's FIFO relay (:mod:`dyncast_bgp.lab.announcer`) sends ``announce
route 198.18.0.1/32 ...`` / ``withdraw route ...`` (t0 = just before the line
is written to the relay's FIFO); a plain ExaBGP in ingress1's namespace
receives it, its API process (:mod:`dyncast_bgp.lab.exabgp_sink`) writes
every JSON line into a FIFO that a thread of this process reads and stamps
(t1 = the first update for that prefix of the expected kind after t0).

Changes alternate dyncast/floor (which goes first flips every pair), each
waited for, with at least ``--spacing`` s between any two changes (so the
agent's ``publish.min_interval`` of 0.2 s never holds one: the same route
changes at most every 2 x spacing). Timestamps are ``time.time()``
everywhere (CLOCK_REALTIME is not per namespace).

Decomposition (from the daemons' own JSON logs, info level, no extra
logging): ``instance_admin_changed`` (agent took the request),
``decision_changed`` and ``dataplane_applied`` (router decided, ``nft -f``
done, with its duration).

Run as root from the repository root::

    .venv/bin/python benchmarks/bench_convergence.py [--changes 100] [--spacing 1.0]

Writes ``benchmarks/results/convergence.json`` and ``.md``. Everything it
starts (namespaces, daemons, the watcher) is removed on every exit path.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dyncast_bgp.ctl.client import call
from dyncast_bgp.ctl.protocol import Request
from dyncast_bgp.lab.announcer import Announcer
from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.daemons.base import Local, Peer, wait_established
from dyncast_bgp.lab.daemons.exabgp import ApiProcess, ExaBgp
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.runner import LabRun

ROOT = Path(__file__).resolve().parent.parent
SOURCE_LAB = ROOT / "labs" / "three-site"
RESULTS = ROOT / "benchmarks" / "results"
NAME = "convbench"
RR = "10.0.9.2"
ASN = 65000
AGENT_NODE, INGRESS_NODE = "edge1", "ingress1"
INSTANCE, BINDING = "web/s1a", "10.1.1.2"
SPEAKER, RECEIVER = "10.0.31.2", "10.0.32.2"  # the floor's ExaBGPs (second addresses of edge1 / ingress1)
FLOOR_PREFIX = "198.18.0.1/32"
# the same extended communities an agent sends (state, two metrics): a comparable UPDATE size
FLOOR_COMMUNITIES = "extended-community [ 0x8301228042160000 0x8304048000000078 0x8330000000000000 ]"
OBSERVE_TIMEOUT = 10.0
QUIET = 1.0  # a dyncast change waits until the ingress weights have not moved for this long (> min_dwell 0.5 s)
QUIET_TIMEOUT = 8.0
APPLY_INTERVAL = 0.05  # router.apply_interval of labs/three-site/ingress*.yml (for the explanation only)
READY_TIMEOUT = 120.0

RR_FLOOR = f"""\
 neighbor floortx peer-group
 neighbor floortx remote-as {ASN}
 neighbor floortx update-source {RR}
 neighbor floortx timers 3 9
 neighbor floortx timers connect 1
 neighbor floorrx peer-group
 neighbor floorrx remote-as {ASN}
 neighbor floorrx update-source {RR}
 neighbor floorrx timers 3 9
 neighbor floorrx timers connect 1
 neighbor {SPEAKER} peer-group floortx
 neighbor {RECEIVER} peer-group floorrx
"""
RR_FLOOR_AF = """\
  neighbor floortx activate
  neighbor floortx route-reflector-client
  neighbor floortx prefix-list none out
  neighbor floorrx activate
  neighbor floorrx route-reflector-client
  neighbor floorrx addpath-tx-all-paths
  neighbor floorrx prefix-list floor out
  neighbor ingress prefix-list no-floor out
"""
RR_LISTS = """\
ip prefix-list floor seq 5 permit 198.18.0.0/15 le 32
ip prefix-list no-floor seq 5 deny 198.18.0.0/15 le 32
ip prefix-list no-floor seq 10 permit 0.0.0.0/0 le 32
ip prefix-list none seq 5 deny 0.0.0.0/0 le 32
!
"""


# ------------------------------------------------------------------ the lab copy


def prepare_lab(directory: Path) -> Path:
    """Copy labs/three-site into ``directory`` with the benchmark's name, paths and floor peers."""
    lab = directory / "three-site"
    shutil.copytree(SOURCE_LAB, lab)
    for config in lab.glob("*.yml"):
        config.write_text(config.read_text().replace("/run/dyncast-lab/three-site", f"/run/dyncast-lab/{NAME}"))
    clab = lab / "three-site.clab.yml"
    data = yaml.safe_load(clab.read_text())
    data["name"] = NAME
    nodes = data["topology"]["nodes"]
    nodes[AGENT_NODE]["exec"].append(f"ip addr add {SPEAKER}/32 dev lo")
    nodes[INGRESS_NODE]["exec"].append(f"ip addr add {RECEIVER}/32 dev lo")
    (lab / "convbench.clab.yml").write_text(yaml.safe_dump(data, sort_keys=False))
    clab.unlink()
    transit = lab / "frr" / "transit.conf"
    transit.write_text(transit.read_text() + f"ip route {SPEAKER}/32 10.0.21.2\nip route {RECEIVER}/32 10.0.11.2\n!\n")
    rr = lab / "frr" / "rr.conf"
    text = rr.read_text()
    text = text.replace(" !\n address-family ipv4 unicast\n", RR_FLOOR + " !\n address-family ipv4 unicast\n", 1)
    text = text.replace(" exit-address-family\n", RR_FLOOR_AF + " exit-address-family\n", 1)
    if RR_FLOOR not in text or RR_FLOOR_AF not in text:
        raise LabError(f"{rr}: the layout changed; cannot add the floor peers")
    rr.write_text(text + RR_LISTS)
    return lab / "convbench.clab.yml"


# ------------------------------------------------------------------ observers


@dataclass
class Tail:
    """Reads the complete lines appended to a file since the last call."""

    path: Path
    offset: int = 0

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self.offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        return complete.decode(errors="replace").splitlines()


@dataclass
class KernelWatch:
    """The nftwatch output: every commit on the service's chain, with s1a's buckets after it."""

    tail: Tail
    mark: int | None = None
    commits: list[tuple[float, dict[int, int]]] = field(default_factory=list)  # (t, mark -> buckets)
    seeded: bool = False

    def poll(self) -> None:
        for line in self.tail.lines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if not isinstance(item, dict) or "t" not in item:
                continue
            self.seeded = self.seeded or "seeded" in item
            for chain, picks in (item.get("chains") or item.get("seeded") or {}).items():
                if chain.startswith("dc_s_"):  # service chains (one service in this lab)
                    self.commits.append((float(item["t"]), {int(mark, 16): int(b) for mark, b in picks.items()}))

    def ready(self) -> bool:
        self.poll()
        return self.seeded

    def quiet_for(self, seconds: float) -> float | None:
        """Now, if no commit touched the chain for ``seconds``, else None."""
        self.poll()
        now = time.time()
        return now if not self.commits or now - self.commits[-1][0] >= seconds else None

    def latest(self) -> dict[int, int]:
        self.poll()
        return self.commits[-1][1] if self.commits else {}

    def first_after(self, t0: float, present: bool) -> float | None:
        self.poll()
        for t, picks in self.commits:
            if t >= t0 and (picks.get(self.mark or -1, 0) > 0) == present:
                return t
        return None


class FloorReceiver:
    """Reads the floor receiver's FIFO in a thread; stamps each update for the floor prefix."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        os.mkfifo(fifo, 0o600)
        self.events: list[tuple[float, str]] = []  # (t, "announce" | "withdraw")
        self.lines = 0
        self._thread = threading.Thread(target=self._run, name="floor-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with open(self.fifo, "rb", buffering=0) as stream:
            pending = b""
            while chunk := stream.read(65536):
                now = time.time()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.lines += 1
                    if b'"update"' in line and FLOOR_PREFIX.encode() in line:
                        self.events.append((now, "withdraw" if b'"withdraw"' in line else "announce"))

    def first_after(self, t0: float, kind: str) -> float | None:
        return next((t for t, k in list(self.events) if t >= t0 and k == kind), None)


# ------------------------------------------------------------------ the run


@dataclass
class Sample:
    kind: str  # drain | undrain | announce | withdraw
    t0: float
    t1: float | None
    status: str | None = None  # dyncast: see decompose()

    @property
    def seconds(self) -> float | None:
        return None if self.t1 is None else self.t1 - self.t0


def wait_for(check: Callable[[], float | None], timeout: float = OBSERVE_TIMEOUT) -> float | None:
    deadline = time.monotonic() + timeout
    while (found := check()) is None and time.monotonic() < deadline:
        time.sleep(0.005)
    return found


def s1a_mark(run: LabRun) -> int:
    listing = run.exec(INGRESS_NODE, ["nft", "-j", "list", "set", "inet", "dyncast", "dc_instances"])
    for item in json.loads(listing.stdout)["nftables"]:
        for element in item.get("set", {}).get("elem", []):
            inner = element.get("elem", {}) if isinstance(element, dict) else {}
            key = str(inner.get("comment", "")).split(" ")[0]  # <D-SID>@<D-BID>[#<path id>] [<name>]
            if key.partition("@")[2].partition("#")[0] == BINDING:
                return int(inner["val"])
    raise LabError(f"no registry element for {BINDING} in ingress1's dc_instances: {listing.stdout[:500]}")


@contextlib.contextmanager
def floor_daemons(run: LabRun, directory: Path) -> Iterator[tuple[Announcer, FloorReceiver]]:
    speaker_dir, receiver_dir = directory / "floor-speaker", directory / "floor-receiver"
    speaker_dir.mkdir()
    receiver_dir.mkdir()
    announcer = Announcer(speaker_dir, name="floor")
    receiver = FloorReceiver(receiver_dir / "updates.fifo")
    rr = Peer(RR, ASN, families=("ipv4",), add_path_receive=False, add_path_send=True)
    speaker = ExaBgp(run.lab, run.namespace(AGENT_NODE), name="floor-speaker",
                     local=Local(ASN, SPEAKER, (SPEAKER,)), peers=[rr], processes=[announcer.process()],
                     receive_updates=False)
    sink = ApiProcess("floorsink", (sys.executable, "-m", "dyncast_bgp.lab.exabgp_sink", str(receiver.fifo)),
                      receive_updates=True)
    listener = ExaBgp(run.lab, run.namespace(INGRESS_NODE), name="floor-receiver",
                      local=Local(ASN, RECEIVER, (RECEIVER,)),
                      peers=[Peer(RR, ASN, families=("ipv4",), add_path_receive=True)], processes=[sink],
                      receive_updates=False)
    listener.start()
    speaker.start()
    wait_established([(speaker, RR), (listener, RR)], timeout=60.0)
    yield announcer, receiver


def run_changes(run: LabRun, kernel: KernelWatch, announcer: Announcer, receiver: FloorReceiver, *,
                changes: int, spacing: float, socket: str, progress: Callable[[str], None]) -> list[Sample]:
    samples: list[Sample] = []
    last = 0.0

    def space() -> None:
        nonlocal last
        delay = last + spacing - time.time()
        if delay > 0:
            time.sleep(delay)
        last = time.time()

    def dyncast(index: int) -> None:
        verb = "drain" if index % 2 == 0 else "undrain"
        space()
        wait_for(lambda: kernel.quiet_for(QUIET), timeout=QUIET_TIMEOUT)  # no dwell hold (see the docstring)
        t0 = time.time()
        answer = call(socket, Request(verb, {"instance": INSTANCE}))
        if not answer.get("ok") or not answer.get("changed"):
            raise LabError(f"{verb} {INSTANCE}: {answer}")
        samples.append(Sample(verb, t0, wait_for(lambda: kernel.first_after(t0, present=verb == "undrain"))))

    def floor(index: int) -> None:
        kind = "announce" if index % 2 == 0 else "withdraw"
        command = (f"announce route {FLOOR_PREFIX} next-hop {SPEAKER} path-information 1 {FLOOR_COMMUNITIES}"
                   if kind == "announce" else f"withdraw route {FLOOR_PREFIX} next-hop {SPEAKER} path-information 1")
        space()
        t0 = time.time()
        announcer.send(command)
        samples.append(Sample(kind, t0, wait_for(lambda: receiver.first_after(t0, kind))))

    for index in range(changes):
        for step in ((dyncast, floor) if index % 2 == 0 else (floor, dyncast)):
            step(index)
        if (index + 1) % 10 == 0:
            medians = {path: statistics.median([s.seconds for s in samples if s.kind in kinds and s.seconds is not None]
                                               or [0.0]) * 1000
                       for path, kinds in (("dyncast", ("drain", "undrain")), ("floor", ("announce", "withdraw")))}
            progress(f"{index + 1}/{changes} pairs, medians so far: " + ", ".join(f"{k} {v:.1f} ms"
                                                                               for k, v in medians.items()))
    return samples


# ------------------------------------------------------------------ decomposition from the daemons' logs


def log_events(path: Path, names: set[str]) -> list[tuple[float, str, dict[str, Any]]]:
    found: list[tuple[float, str, dict[str, Any]]] = []
    if not path.exists():
        return found
    for line in path.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            item = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("event") in names:
            stamp = item.get("timestamp") or item.get("ts") or item.get("time")
            t = _epoch(stamp)
            if t is not None:
                found.append((t, str(item["event"]), item))
    return found


def _epoch(stamp: Any) -> float | None:
    if isinstance(stamp, int | float):
        return float(stamp)
    if isinstance(stamp, str):
        with contextlib.suppress(ValueError):
            return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    return None


def decompose(samples: Sequence[Sample], agent_log: Path, router_log: Path) -> dict[str, Any]:
    """Per dyncast sample: agent took it (instance_admin_changed), router decided (the first
    decision_changed with s1a's weight at 0 / above 0), nft applied (dataplane_applied, with its duration).
    Sets ``sample.status``: the router's status when it first knew of the change (``held (...)`` when an
    undrain was known but kept at weight 0 by the control law)."""
    agent = [t for t, _, _ in log_events(agent_log, {"instance_admin_changed"})]
    router = log_events(router_log, {"decision_changed", "dataplane_applied"})
    parts: dict[str, list[float]] = {"ctl_to_agent": [], "agent_to_decision": [], "decision_to_applied": [],
                                     "nft_seconds": [], "applied_to_kernel_event": []}
    for sample in samples:
        if sample.kind not in ("drain", "undrain") or sample.t1 is None:
            continue
        took = next((t for t in agent if sample.t0 <= t <= sample.t1), None)
        # the router's first decision after t0 that knows of the change: s1a excluded (drain) / not (undrain)
        knows = next(((t, item) for t, name, item in router if name == "decision_changed" and t >= sample.t0
                      and (BINDING in (item.get("excluded") or {})) == (sample.kind == "drain")), None)
        sample.status = None if knows is None else str(knows[1].get("status"))
        if sample.kind == "undrain" and knows is not None and not (knows[1].get("weights") or {}).get(BINDING):
            sample.status = f"held ({sample.status})"  # known, but the control law keeps it at 0 for now
        decided = next((t for t, name, item in router if name == "decision_changed" and t >= sample.t0
                        and ((item.get("weights") or {}).get(BINDING, 0) > 0) == (sample.kind == "undrain")), None)
        applied = next(((t, item) for t, name, item in router if name == "dataplane_applied"
                        and decided is not None and t >= decided), None)
        if took is None or decided is None or applied is None:
            continue
        parts["ctl_to_agent"].append(took - sample.t0)
        parts["agent_to_decision"].append(decided - took)
        parts["decision_to_applied"].append(applied[0] - decided)
        parts["nft_seconds"].append(float(applied[1].get("seconds", 0.0)))
        parts["applied_to_kernel_event"].append(sample.t1 - applied[0])
    return {name: summary(values) for name, values in parts.items()}


# ------------------------------------------------------------------ figures


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # nearest rank
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50_ms": round(percentile(values, 50) * 1000, 2),
            "p90_ms": round(percentile(values, 90) * 1000, 2), "p99_ms": round(percentile(values, 99) * 1000, 2),
            "max_ms": round(max(values) * 1000, 2), "min_ms": round(min(values) * 1000, 2),
            "mean_ms": round(statistics.fmean(values) * 1000, 2)}


def figures(samples: Sequence[Sample]) -> dict[str, Any]:
    def of(*kinds: str) -> list[float]:
        return [s.seconds for s in samples if s.kind in kinds and s.seconds is not None]

    dyncast, floor = summary(of("drain", "undrain")), summary(of("announce", "withdraw"))
    # an exclusion (drain) is applied at once even in a dwell; an undrain whose first decision is a hold waits
    held = [s for s in samples if s.kind == "undrain" and s.status and s.status.startswith("held")]
    unheld = [s.seconds for s in samples if s.kind in ("drain", "undrain") and s.seconds is not None
              and s not in held]
    result: dict[str, Any] = {"dyncast": dyncast, "floor": floor,
                              "by_kind": {kind: summary(of(kind)) for kind in ("drain", "undrain", "announce",
                                                                               "withdraw")},
                              "missed": {kind: sum(1 for s in samples if s.kind == kind and s.t1 is None)
                                         for kind in ("drain", "undrain", "announce", "withdraw")},
                              "dyncast_held_by_control_law": len(held), "dyncast_not_held": summary(unheld)}
    if dyncast.get("n") and floor.get("n"):
        result["ratio_p50"] = round(float(dyncast["p50_ms"]) / float(floor["p50_ms"]), 2)
        result["ratio_p99"] = round(float(dyncast["p99_ms"]) / float(floor["p99_ms"]), 2)
        result["goal_met"] = result["ratio_p50"] <= 2.0
    return result


def machine() -> str:
    load = os.getloadavg()
    return (f"{platform.node()}: {os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
            f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other work running)")


def row(name: str, s: dict[str, Any]) -> str:
    if not s.get("n"):
        return f"| {name} | 0 | - | - | - | - | - |"
    return (f"| {name} | {s['n']} | {s['p50_ms']:.1f} | {s['p90_ms']:.1f} | {s['p99_ms']:.1f} | {s['max_ms']:.1f} "
            f"| {s['min_ms']:.1f} |")


def markdown(report: dict[str, Any]) -> str:
    f = report["figures"]
    lines = ["# Convergence: agent change to ingress kernel, against ExaBGP alone", "",
             f"Command: `{report['command']}`  ", f"Date: {report['date']}  ", f"Machine: {report['machine']}", "",
             "| path | n | p50 ms | p90 ms | p99 ms | max ms | min ms |", "|---|---|---|---|---|---|---|",
             row("dyncast: ctl drain/undrain -> ingress nftables", f["dyncast"]),
             row("floor: ExaBGP API -> receiver ExaBGP JSON", f["floor"]),
             row("dyncast without undrains held by the dwell", f["dyncast_not_held"]),
             *(row(f"  {kind}", f["by_kind"][kind]) for kind in ("drain", "undrain", "announce", "withdraw")), ""]
    if "ratio_p50" in f:
        lines += [f"Ratio of p50s: **{f['ratio_p50']}x** (goal <= 2x: {'met' if f['goal_met'] else 'NOT met'}); "
                  f"ratio of p99s: {f['ratio_p99']}x. Missed (no kernel/receiver change within "
                  f"{OBSERVE_TIMEOUT:g} s): {f['missed']}.", ""]
    parts = report.get("decomposition", {})
    if parts:
        lines += ["Where the dyncast time goes (from the daemons' info-level logs; log timestamps, per change):", "",
                  "| segment | n | p50 ms | p90 ms | p99 ms | max ms | min ms |", "|---|---|---|---|---|---|---|",
                  *(row(name, value) for name, value in parts.items()), ""]
    if parts.get("decision_to_applied", {}).get("n") and "ratio_p50" in f:
        gap = float(f["dyncast"]["p50_ms"]) - float(f["floor"]["p50_ms"])
        lines += ["What dominates: the dyncast p50 is the floor's p50 plus "
                  f"{gap:.0f} ms. Agent to router decision ({parts['agent_to_decision']['p50_ms']:.0f} ms) is the "
                  "floor's path plus the router's intake. Decision to `dataplane_applied` "
                  f"({parts['decision_to_applied']['p50_ms']:.0f} ms) is the applier's 5 ms leading-edge "
                  f"debounce (an isolated change does not wait `apply_interval`, {APPLY_INTERVAL * 1000:.0f} ms "
                  f"in the lab; only changes right after an apply do) plus `nft -f` "
                  f"({parts['nft_seconds']['p50_ms']:.0f} ms). "
                  "The tail (p99) is undrains held by the control law's `min_dwell` (flagged in the JSON, "
                  "`status`), and `nft -f` calls stalled by the machine's load.", ""]
    lines += [f"Polling granularity: none (nftwatch follows `nft -a monitor`; the kernel notifies at commit). "
              f"Calibration in the same run: {report.get('calibration', {})}.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ calibration of the kernel observer


def calibrate(run: LabRun, rounds: int = 20) -> dict[str, Any]:
    """Rewrite a scratch chain (its own table) in the ingress namespace, followed by a second nftwatch;
    how far the watcher's stamp lies from the ``nft -f`` call (its start and its return as seen here)."""
    ns = run.namespace(INGRESS_NODE)
    ns.run(["nft", "-f", "-"], input="table inet dcbench {\n chain dc_s_bench { }\n}\n")
    watcher = run.spawn(INGRESS_NODE, "nftwatch-calibration", [sys.executable, "-m", "dyncast_bgp.lab.nftwatch",
                                                               "--table", "dcbench"])
    kernel = KernelWatch(Tail(watcher.log_path))
    expect(kernel.ready, bool, what="the calibration watcher", timeout=10.0)
    after_start: list[float] = []
    before_end: list[float] = []

    def seen(t0: float, buckets: int) -> float | None:
        kernel.poll()
        return next((t for t, picks in kernel.commits if t >= t0 and picks.get(1) == buckets), None)

    try:
        for index in range(rounds):
            t0 = time.time()
            ns.run(["nft", "-f", "-"], input=f"flush chain inet dcbench dc_s_bench\nadd rule inet dcbench dc_s_bench "
                   f'meta mark set 1 comment "dc pick 0x1 0-{index}"\n')
            t_end = time.time()
            found = wait_for(functools.partial(seen, t0, index + 1), timeout=2.0)
            if found is not None:
                after_start.append(found - t0)
                before_end.append(t_end - found)
    finally:
        run.stop(watcher)
        ns.run(["nft", "delete", "table", "inet", "dcbench"], check=False)
    return {"rounds": rounds, "seen": len(after_start),
            "stamp_after_call_start_ms": summary(after_start), "call_end_after_stamp_ms": summary(before_end)}


# ------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=100, help="changes of each kind (dyncast and floor)")
    parser.add_argument("--spacing", type=float, default=1.0, help="seconds at least between any two changes")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--keep", action="store_true", help="keep the temporary lab copy and logs")
    parser.add_argument("--render", type=Path, help="only rewrite the Markdown from this JSON result")
    args = parser.parse_args(argv)
    if args.render is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "convergence.md").write_text(markdown(json.loads(args.render.read_text())))
        return 0
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    host = machine()
    temporary = Path(tempfile.mkdtemp(prefix="dyncast-convbench-"))
    try:
        topology = load_topology(prepare_lab(temporary))
        socket = f"/run/dyncast-lab/{NAME}/{AGENT_NODE}.sock"
        with LabRun(topology, progress=progress) as run:
            watcher = run.spawn(INGRESS_NODE, "nftwatch", [sys.executable, "-m", "dyncast_bgp.lab.nftwatch"])
            kernel = KernelWatch(Tail(watcher.log_path))
            progress("waiting for ingress1 to program all four instances")
            expect(kernel.latest, lambda picks: len(picks) == 4, what="ingress1's chain with four weighted instances",
                   timeout=READY_TIMEOUT, wait=0.25, diagnose=lambda: f"lab logs: {run.workdir}")
            kernel.mark = s1a_mark(run)
            progress(f"s1a is mark {kernel.mark:#010x}; starting the floor's ExaBGP speaker and receiver")
            with floor_daemons(run, temporary) as (announcer, receiver):
                calibration = calibrate(run)
                progress(f"observer calibration: {calibration}")
                time.sleep(3.0)  # let the first decisions' slew and dwell play out
                samples = run_changes(run, kernel, announcer, receiver, changes=args.changes, spacing=args.spacing,
                                      socket=socket, progress=progress)
            workdir = run.workdir
            agent_log = next(iter(sorted(workdir.glob(f"**/{AGENT_NODE}-cmd.log"))), workdir / "missing")
            router_log = next(iter(sorted(workdir.glob(f"**/{INGRESS_NODE}-cmd.log"))), workdir / "missing")
            parts = decompose(samples, agent_log, router_log)
            if args.keep:
                shutil.copytree(workdir, temporary / "logs", dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("*.sock", "*.vty", "*.api"))
    finally:
        shutil.rmtree(f"/run/dyncast-lab/{NAME}", ignore_errors=True)  # the routers' status files
        if not args.keep:
            shutil.rmtree(temporary, ignore_errors=True)
    report = {"command": "sudo .venv/bin/python benchmarks/bench_convergence.py " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "date": date, "machine": host, "changes": args.changes, "spacing_s": args.spacing,
              "figures": figures(samples), "decomposition": parts, "calibration": calibration,
              "samples": [asdict(s) | {"seconds": s.seconds} for s in samples]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "convergence.json").write_text(json.dumps(report, indent=1) + "\n")
    (args.out / "convergence.md").write_text(markdown(report))
    print(markdown(report))
    if args.keep:
        print(f"lab copy and logs kept in {temporary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
