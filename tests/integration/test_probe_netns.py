"""Path probes across real links: a prober and two echo responders in namespaces, impairments in between.

Topology (one lab for the module)::

    prb (prober) to-a --- pa0 [imp: bridge a] pa1 --- eth0 ra (echo 10.31.1.2, fd00:31:1::2)
                 to-b --- pb0 [imp: bridge b] pb1 --- eth0 rb (echo 10.31.2.2, fd00:31:2::2)

Path A gets 20 ms of delay, path B 100 % loss (then none, then 30 %), both on
the prober's egress (requests are delayed or dropped, replies are not). Where
the kernel has netem, ``tc qdisc ... netem`` on ``to-a``/``to-b`` does that and
the bridges only pass frames; where it does not (CONFIG_NET_SCH_NETEM unset,
as on the Firecracker kernel this was written on) the bridges impose the same
delay and loss themselves: :data:`BRIDGE` is a small userspace L2 forwarder on
AF_PACKET sockets. The test prints which one it used.

The prober and the responders are the real tools (``python -m
dyncast_bgp.probe probe|echo``) started with the Lab harness; the prober
prints JSON lines (changes with their monotonic time and counters, periodic
snapshots) that the tests read. Neighbour entries are permanent so that lost
ARP/ND packets do not add to the loss. Intervals are 0.1 s.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest

from dyncast_bgp.lab.netns import Lab, Namespace
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.process import Process

pytestmark = [pytest.mark.netns, pytest.mark.slow]

INTERVAL = 0.1
TIMEOUT = 0.08
WINDOW = 20
UNREACHABLE_AFTER = 3
DELAY_MS = 20.0
A4, A6, B4, B6 = "10.31.1.2", "fd00:31:1::2", "10.31.2.2", "fd00:31:2::2"
PORT = 9950

BRIDGE = r'''
"""Userspace L2 impairment bridge between two interfaces: delay and loss from LEFT to RIGHT (like netem on egress)."""
import heapq, json, os, random, select, socket, struct, sys, time

left_if, right_if, control = sys.argv[1], sys.argv[2], sys.argv[3]
ETH_P_ALL, PACKET_OUTGOING = 0x0003, 4


def open_port(ifname):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((ifname, 0))
    sock.setblocking(False)
    return sock


def fold(total):
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def csum(data):
    if len(data) % 2:
        data += b"\0"
    return sum(struct.unpack(f"!{len(data) // 2}H", data))


def fix_udp(frame):
    """Recompute the UDP checksum (veth leaves it to an offload that a packet socket never performs)."""
    ethertype = frame[12:14]
    if ethertype == b"\x08\x00" and frame[23] == 17:
        ihl = (frame[14] & 0x0F) * 4
        start = 14 + ihl
        length = struct.unpack("!H", frame[start + 4:start + 6])[0]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, 17, length)
    elif ethertype == b"\x86\xdd" and frame[20] == 17:
        start = 54
        length = struct.unpack("!H", frame[start + 4:start + 6])[0]
        pseudo = frame[22:54] + struct.pack("!IxxxB", length, 17)
    else:
        return frame
    segment = bytearray(frame[start:start + length])
    segment[6:8] = b"\0\0"
    value = fold(csum(pseudo) + csum(bytes(segment))) or 0xFFFF
    return frame[:start + 6] + struct.pack("!H", value) + frame[start + 8:]


ports = {"left": open_port(left_if), "right": open_port(right_if)}
settings = {"delay_ms": 0.0, "loss": 0.0}
mtime = None
queue = []  # (due, order, out port, frame)
order = 0
passed = dropped = 0
print(json.dumps({"bridge": "ready", "time": time.monotonic()}), flush=True)
while True:
    try:
        info = os.stat(control)
        stat = (info.st_ino, info.st_mtime_ns)  # a replaced file is a new inode even within one mtime tick
    except FileNotFoundError:
        stat = None
    if stat != mtime and stat is not None:
        mtime = stat
        with open(control) as handle:
            settings = json.load(handle)
        print(json.dumps({"bridge": "applied", "settings": settings, "time": time.monotonic(),
                          "passed": passed, "dropped": dropped}), flush=True)
    now = time.monotonic()
    while queue and queue[0][0] <= now:
        _, _, out, frame = heapq.heappop(queue)
        ports[out].send(frame)
    timeout = 0.01 if not queue else max(0.0, min(0.01, queue[0][0] - now))
    readable, _, _ = select.select(list(ports.values()), [], [], timeout)
    for sock in readable:
        side = "left" if sock is ports["left"] else "right"
        while True:
            try:
                frame, address = sock.recvfrom(65535)
            except BlockingIOError:
                break
            if address[2] == PACKET_OUTGOING:
                continue
            frame = fix_udp(frame)
            if side == "left":
                if random.random() < settings["loss"]:
                    dropped += 1
                    continue
                passed += 1
                order += 1
                heapq.heappush(queue, (time.monotonic() + settings["delay_ms"] / 1000.0, order, "right", frame))
            else:
                ports["left"].send(frame)
'''


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, e.g. in CI)"
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else None


def probe_tool(*args: str) -> list[str]:
    return [sys.executable, "-m", "dyncast_bgp.probe", *args]


def records(log: Path, key: str, kind: str) -> list[dict[str, Any]]:
    """JSON lines whose ``key`` is ``kind`` (log files also hold structlog lines, which have neither)."""
    found = []
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get(key) == kind:
                found.append(record)
    return found


class Impairer(Protocol):
    name: str

    def set(self, path: str, *, delay_ms: float = 0.0, loss: float = 0.0) -> float:
        """Impair the prober's egress on ``path`` ("a" or "b"); returns the monotonic time it took effect."""


@dataclass
class Netem:
    prober_ns: Namespace
    name: str = "tc netem"

    def set(self, path: str, *, delay_ms: float = 0.0, loss: float = 0.0) -> float:
        before = time.monotonic()
        if delay_ms == 0.0 and loss == 0.0:
            self.prober_ns.run(["tc", "qdisc", "del", "dev", f"to-{path}", "root"], check=False)
        else:
            self.prober_ns.run(["tc", "qdisc", "replace", "dev", f"to-{path}", "root", "netem",
                                "delay", f"{delay_ms:g}ms", "loss", f"{loss * 100:g}%"])
        return before


@dataclass
class Bridges:
    controls: dict[str, Path]
    logs: dict[str, Path]
    name: str = "userspace bridge (no netem in this kernel)"

    def set(self, path: str, *, delay_ms: float = 0.0, loss: float = 0.0) -> float:
        settings = {"delay_ms": delay_ms, "loss": loss}
        before = time.monotonic()
        temporary = self.controls[path].with_suffix(".tmp")
        temporary.write_text(json.dumps(settings))
        temporary.replace(self.controls[path])

        def applied() -> list[dict[str, Any]]:
            return [r for r in records(self.logs[path], "bridge", "applied")
                    if r["settings"] == settings and r["time"] >= before]

        seen = expect(applied, bool, what=f"bridge {path} applying {settings}", timeout=5.0)
        return float(seen[-1]["time"])


@dataclass
class ProbeLab:
    lab: Lab
    prober_ns: Namespace
    prober: Process
    impair: Impairer

    def changes(self, target: str, after: float = 0.0) -> list[dict[str, Any]]:
        return [r for r in records(self.prober.log_path, "probe", "change")
                if r["target"] == target and r["time"] > after]

    def flips(self, target: str, after: float, *, reachable: bool) -> Callable[[], list[dict[str, Any]]]:
        """A check for :func:`expect`: the changes of ``target`` after ``after`` with that ``reachable``."""
        return lambda: [c for c in self.changes(target, after) if c["metrics"]["reachable"] is reachable]

    def last_snapshot(self) -> dict[str, Any]:
        snapshots = records(self.prober.log_path, "probe", "snapshot")
        return snapshots[-1] if snapshots else {"targets": {}, "status": {}, "time": 0.0}

    def diagnose(self) -> str:
        return f"prober log tail:\n{self.prober.log_tail(15)}"


def _has_netem(ns: Namespace) -> bool:
    done = ns.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"], check=False)
    ns.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    return done.returncode == 0


def _path(lab: Lab, prober: Namespace, imp: Namespace, responder: Namespace, *, path: str,
          v4: str, v6: str) -> None:
    """prober to-X --- pX0 [imp] pX1 --- eth0 responder, addresses on both ends, permanent neighbours."""
    lab.veth(prober, f"to-{path}", imp, f"p{path}0")
    lab.veth(imp, f"p{path}1", responder, "eth0")
    imp.ip_batch([f"link set p{path}0 promisc on", f"link set p{path}1 promisc on"])
    near4, near6 = v4.rsplit(".", 1)[0] + ".1", v6.rsplit(":", 1)[0] + ":1"
    prober.add_addresses(f"to-{path}", [f"{near4}/24", f"{near6}/64"])
    responder.add_addresses("eth0", [f"{v4}/24", f"{v6}/64"])
    far = json.loads(responder.ip("-j", "link", "show", "eth0"))[0]["address"]
    near = json.loads(prober.ip("-j", "link", "show", f"to-{path}"))[0]["address"]
    prober.ip_batch([f"neigh replace {v4} lladdr {far} dev to-{path} nud permanent",
                     f"neigh replace {v6} lladdr {far} dev to-{path} nud permanent"])
    responder.ip_batch([f"neigh replace {near4} lladdr {near} dev eth0 nud permanent",
                        f"neigh replace {near6} lladdr {near} dev eth0 nud permanent"])


@pytest.fixture(scope="module")
def probe_lab() -> Iterator[ProbeLab]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with Lab(stop_grace=2.0) as lab:
        prb, imp, ra, rb = lab.namespaces("prb", "imp", "ra", "rb")
        imp.set_sysctls({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        _path(lab, prb, imp, ra, path="a", v4=A4, v6=A6)
        _path(lab, prb, imp, rb, path="b", v4=B4, v6=B6)
        script = lab.workdir / "bridge.py"
        script.write_text(BRIDGE)
        controls = {path: lab.workdir / f"bridge-{path}.json" for path in ("a", "b")}
        bridges = {path: lab.spawn(imp, f"bridge-{path}", [sys.executable, str(script), f"p{path}0",
                                                            f"p{path}1", str(controls[path])])
                   for path in ("a", "b")}
        impair: Impairer = Netem(prb) if _has_netem(prb) else \
            Bridges(controls, {path: process.log_path for path, process in bridges.items()})
        for path in ("a", "b"):
            controls[path].write_text(json.dumps({"delay_ms": 0.0, "loss": 0.0}))
        impair.set("a", delay_ms=DELAY_MS)
        for ns, addresses in ((ra, (A4, A6)), (rb, (B4, B6))):
            listen = [arg for address in addresses for arg in ("--listen", address)]
            lab.spawn(ns, f"echo-{ns.name[-2:]}", probe_tool("echo", *listen, "--port", str(PORT)))
        prober = lab.spawn(prb, "prober", probe_tool(
            "probe", A4, A6, B4, B6, "--port", str(PORT), "--interval", str(INTERVAL), "--timeout", str(TIMEOUT),
            "--window", str(WINDOW), "--unreachable-after", str(UNREACHABLE_AFTER), "--report", "0.2"))
        print(f"\nimpairments by {impair.name}")
        yield ProbeLab(lab, prb, prober, impair)


def completed(snapshot: dict[str, Any], target: str) -> int:
    status = snapshot["status"].get(target) or {"replies": 0, "lost": 0}
    return int(status["replies"] + status["lost"])


def test_delay_is_measured_and_clean_paths_lose_nothing(probe_lab: ProbeLab) -> None:
    snapshot = expect(probe_lab.last_snapshot,
                      lambda s: all(completed(s, t) >= WINDOW + 2 for t in (A4, A6, B4, B6)),
                      what="a full window for every target", timeout=15.0, diagnose=probe_lab.diagnose)
    metrics = snapshot["targets"]
    base_us = max(metrics[B4]["rtt_mean_us"], metrics[B6]["rtt_mean_us"])
    for target in (A4, A6, B4, B6):
        assert metrics[target]["loss_mean"] == 0.0 and metrics[target]["reachable"], (target, metrics[target])
    for target in (A4, A6):
        delayed = metrics[target]["rtt_mean_us"]
        print(f"{target}: mean RTT {delayed / 1000:.2f} ms (20 ms delay), undelayed path {base_us / 1000:.3f} ms")
        assert DELAY_MS * 1000 <= delayed <= DELAY_MS * 1000 + base_us + 2_000, (target, delayed, base_us)
        assert delayed <= metrics[target]["rtt_peak_us"] < TIMEOUT * 1e6  # a peak is an answered probe


def test_total_loss_is_detected_within_three_intervals_and_clears(probe_lab: ProbeLab) -> None:
    started = probe_lab.impair.set("b", loss=1.0)
    marked: dict[str, dict[str, Any]] = {}
    try:
        for target in (B4, B6):
            marked[target] = expect(probe_lab.flips(target, started, reachable=False), bool,
                                    what=f"{target} marked unreachable", timeout=5.0,
                                    diagnose=probe_lab.diagnose)[0]
    finally:
        cleared = probe_lab.impair.set("b")
    for target, change in marked.items():
        from_failure = change["time"] - started
        from_first_loss = change["time"] - change["status"]["streak_started_at"]
        print(f"{target}: unreachable {from_failure * 1000:.0f} ms after the loss began, "
              f"{from_first_loss * 1000:.0f} ms after its first unanswered probe")
        assert change["status"]["consecutive_losses"] == UNREACHABLE_AFTER
        assert from_first_loss <= UNREACHABLE_AFTER * INTERVAL + 0.03
        assert from_failure <= UNREACHABLE_AFTER * INTERVAL + TIMEOUT + 0.05
    for target in (B4, B6):
        back = expect(probe_lab.flips(target, cleared, reachable=True), bool, what=f"{target} reachable again",
                      timeout=5.0, diagnose=probe_lab.diagnose)[0]
        print(f"{target}: reachable again {(back['time'] - cleared) * 1000:.0f} ms after the loss ended")
        assert back["time"] - cleared <= INTERVAL + TIMEOUT + 0.05


def test_partial_loss_is_estimated(probe_lab: ProbeLab) -> None:
    applied = probe_lab.impair.set("b", loss=0.3)
    try:
        first = expect(probe_lab.last_snapshot, lambda s: s["time"] > applied + TIMEOUT + 0.05,
                       what="a snapshot after the first probes under loss completed", timeout=3.0)
        last = expect(probe_lab.last_snapshot, lambda s: s["time"] >= first["time"] + 8.0,
                      what="8 s of probes under 30% loss", timeout=15.0, diagnose=probe_lab.diagnose)
    finally:
        probe_lab.impair.set("b")
    lost = sum(last["status"][t]["lost"] - first["status"][t]["lost"] for t in (B4, B6))
    done = sum(completed(last, t) - completed(first, t) for t in (B4, B6))
    print(f"30% loss: {lost}/{done} probes lost = {lost / done:.3f}; window loss_mean "
          f"{last['targets'][B4]['loss_mean']:.2f} / {last['targets'][B6]['loss_mean']:.2f}")
    assert done >= 140
    assert abs(lost / done - 0.30) <= 0.12  # 3.3 standard deviations of a binomial with n = 140
    for target in (B4, B6):
        window = last["targets"][target]
        assert 0.0 <= window["loss_mean"] <= window["loss_peak"] <= 1.0


@pytest.mark.parametrize(("ping_group_range", "kind"), [("1 0", "icmp-raw"), ("0 2147483647", "icmp-dgram")])
def test_icmp_probes_with_raw_and_ping_sockets(probe_lab: ProbeLab, ping_group_range: str, kind: str) -> None:
    probe_lab.prober_ns.set_sysctls({"net.ipv4.ping_group_range": ping_group_range})
    pinger = probe_lab.lab.spawn(probe_lab.prober_ns, f"icmp-{kind}", probe_tool(
        "probe", A4, A6, "--method", "icmp", "--interval", str(INTERVAL), "--timeout", str(TIMEOUT),
        "--window", "10", "--report", "0.2", "--duration", "10"))
    try:
        started = expect(lambda: records(pinger.log_path, "probe", "started"), bool, what="the ICMP prober",
                         timeout=10.0, diagnose=lambda: pinger.log_tail(10))[0]
        assert started["sockets"] == {"4": kind, "6": kind}
        snapshot = expect(lambda: records(pinger.log_path, "probe", "snapshot")[-1:],
                          lambda s: bool(s) and all(completed(s[0], t) >= 10 for t in (A4, A6)),
                          what="10 ICMP probes per target", timeout=10.0, diagnose=lambda: pinger.log_tail(10))[0]
    finally:
        probe_lab.lab.stop(pinger)
    for target in (A4, A6):
        metrics = snapshot["targets"][target]
        assert metrics["loss_mean"] == 0.0
        assert DELAY_MS * 1000 <= metrics["rtt_mean_us"] <= DELAY_MS * 1000 + 3_000, (target, metrics)
