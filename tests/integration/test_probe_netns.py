"""Path probes across real links: a prober and two echo responders in namespaces, impairments in between.

Topology (one lab for the module)::

    prb (prober) to-a --- pa0 [imp: bridge a] pa1 --- eth0 ra (echo 10.31.1.2, fd00:31:1::2)
                 to-b --- pb0 [imp: bridge b] pb1 --- eth0 rb (echo 10.31.2.2, fd00:31:2::2)

Path A gets 20 ms of delay, path B 100 % loss (then none, then 30 %), both on
the prober's egress (requests are delayed or dropped, replies are not). Where
the kernel has netem, ``tc qdisc ... netem`` on ``to-a``/``to-b`` does that and
the bridges only pass frames; where it does not (CONFIG_NET_SCH_NETEM unset,
as on the Firecracker kernel this was written on) the bridges impose the same
delay and loss themselves: :mod:`dyncast_bgp.lab.impair` is a userspace L2
forwarder on AF_PACKET sockets. The test prints which one it used.

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
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest

from dyncast_bgp.lab.impair import ImpairControl, Impairment
from dyncast_bgp.lab.netns import Lab, Namespace
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.process import Process

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timing]

INTERVAL = 0.1
TIMEOUT = 0.08
WINDOW = 20
UNREACHABLE_AFTER = 3
DELAY_MS = 20.0
A4, A6, B4, B6 = "10.31.1.2", "fd00:31:1::2", "10.31.2.2", "fd00:31:2::2"
PORT = 9950

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
    controls: dict[str, ImpairControl]
    name: str = "userspace forwarder dyncast_bgp.lab.impair (no netem in this kernel)"

    def set(self, path: str, *, delay_ms: float = 0.0, loss: float = 0.0) -> float:
        return self.controls[path].set("ab", Impairment(delay_ms=delay_ms, loss=loss))


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
        sockets = {path: lab.workdir / f"impair-{path}.sock" for path in ("a", "b")}
        bridges = [lab.spawn(imp, f"impair-{path}", [sys.executable, "-m", "dyncast_bgp.lab.impair", "forward",
                                                      "--port-a", f"p{path}0", "--port-b", f"p{path}1",
                                                      "--control", str(sockets[path])])
                   for path in ("a", "b")]
        for bridge, sock in zip(bridges, sockets.values(), strict=True):
            expect(sock.exists, bool, what=f"{bridge.name} control socket", timeout=10.0,
                   diagnose=bridge.log_tail)
        impair: Impairer = Netem(prb) if _has_netem(prb) else \
            Bridges({path: ImpairControl(sock) for path, sock in sockets.items()})
        impair.set("a", delay_ms=DELAY_MS)
        echoes = []
        for ns, addresses in ((ra, (A4, A6)), (rb, (B4, B6))):
            listen = [arg for address in addresses for arg in ("--listen", address)]
            echoes.append(lab.spawn(ns, f"echo-{ns.name[-2:]}", probe_tool("echo", *listen, "--port", str(PORT))))
        # The prober starts only once both responders answer: a probe sent before a responder has
        # bound its socket is lost, and on a loaded machine the interpreter's start-up outlasts the
        # two probes the first test's window leaves out (CI once saw 1 lost of 20 on clean path B).
        for echo in echoes:
            expect(partial(records, echo.log_path, "echo", "listening"), bool,
                   what=f"{echo.name} listening", timeout=15.0, diagnose=echo.log_tail)
        prober = lab.spawn(prb, "prober", probe_tool(
            "probe", A4, A6, B4, B6, "--port", str(PORT), "--interval", str(INTERVAL), "--timeout", str(TIMEOUT),
            "--window", str(WINDOW), "--unreachable-after", str(UNREACHABLE_AFTER), "--report", "0.2", "--samples"))
        print(f"\nimpairments by {impair.name}")
        yield ProbeLab(lab, prb, prober, impair)


def completed(snapshot: dict[str, Any], target: str) -> int:
    status = snapshot["status"].get(target) or {"replies": 0, "lost": 0}
    return int(status["replies"] + status["lost"])


def delayed_window(snapshot: dict[str, Any], target: str, size: int) -> list[float]:
    """The RTTs (us) in ``target``'s full window of a ``--samples`` snapshot, checked against its metrics.

    Every probe of the window was answered, none faster than the path's delay,
    and the window's mean and peak are those of its samples. The caller bounds
    the median: the VM this runs on stalls a vCPU for 4-20 ms several times a
    second (a 1 ms sleep loop saw 129 such gaps in 20 s, idle), and a probe in
    flight then waits with it. That lifts a few samples, so the mean of a
    10-probe window drifts by 1-4 ms (CI: 20.2-20.4 ms probes and one of 45 ms)
    while the median stays on the delay.
    """
    metrics = snapshot["targets"][target]
    samples: list[float] = snapshot["samples"][target]
    assert len(samples) == size and None not in samples, (target, samples)
    assert metrics["loss_mean"] == 0.0 and metrics["reachable"], (target, metrics)
    assert all(DELAY_MS * 1000 <= rtt < TIMEOUT * 1e6 for rtt in samples), (target, samples)
    assert metrics["rtt_mean_us"] == pytest.approx(sum(samples) / size, abs=0.01), (target, metrics, samples)
    assert metrics["rtt_peak_us"] == pytest.approx(max(samples), abs=0.01), (target, metrics, samples)
    return samples


STALL_RETRIES = 3
"""Windows a clean path may be measured again in, when every probe it lost came back late (see below)."""


def clean_windows(probe_lab: ProbeLab) -> dict[str, Any]:
    """The first snapshot whose full windows lost nothing on any of the four clean paths.

    This VM sometimes stalls a vCPU for up to ~100 ms (CI saw a probe echo held 97 ms and, in the same run,
    two probes of one window answered after the 80 ms timeout, 47.6 ms for the slowest one on time). A
    probe that missed its timeout so still comes back, and the prober counts its reply as late. So a loss
    on a clean path is excused only when the prober has counted as many late replies as losses on that
    path since this call began (the counters are the prober's, kept across tests and across the host-stall
    guard's second attempt: CI failed a second attempt on the first attempt's loss), and then a fresh window
    is measured, at most ``STALL_RETRIES`` times. A probe lost and never answered fails the test.
    """
    targets = (A4, A6, B4, B6)
    before = probe_lab.last_snapshot()["status"]
    counted = {t: {key: int((before.get(t) or {}).get(key, 0)) for key in ("lost", "late")} for t in targets}
    snapshot = expect(probe_lab.last_snapshot,
                      lambda s: all(completed(s, t) >= WINDOW + 2 for t in targets),
                      what="a full window for every target", timeout=15.0, diagnose=probe_lab.diagnose)
    for _ in range(STALL_RETRIES):
        lossy = [t for t in targets if snapshot["targets"][t]["loss_mean"] != 0.0]
        if not lossy:
            return snapshot
        print(f"losses on clean paths {[(t, snapshot['status'][t]) for t in lossy]}: waiting for their late replies")
        snapshot = expect(probe_lab.last_snapshot,
                          partial(_all_late, targets=lossy, before=counted),
                          what=f"a late reply for every probe lost on a clean path {lossy}", timeout=3.0,
                          diagnose=probe_lab.diagnose)
        done = {t: completed(snapshot, t) for t in targets}
        snapshot = expect(probe_lab.last_snapshot,
                          partial(_windows_after, done=done),
                          what="a fresh full window for every target", timeout=15.0, diagnose=probe_lab.diagnose)
    return snapshot  # still lossy: the assertions below say where


def _all_late(snapshot: dict[str, Any], targets: list[str], before: dict[str, dict[str, int]]) -> bool:
    status = snapshot["status"]
    return all(status[t]["late"] - before[t]["late"] >= status[t]["lost"] - before[t]["lost"] for t in targets)


def _windows_after(snapshot: dict[str, Any], done: dict[str, int]) -> bool:
    return all(completed(snapshot, t) >= count + WINDOW for t, count in done.items())


def test_delay_is_measured_and_clean_paths_lose_nothing(probe_lab: ProbeLab) -> None:
    snapshot = clean_windows(probe_lab)
    metrics = snapshot["targets"]
    for target in (A4, A6, B4, B6):
        assert metrics[target]["loss_mean"] == 0.0 and metrics[target]["reachable"], (target, metrics[target])
    base_us = max(statistics.median(snapshot["samples"][target]) for target in (B4, B6))
    for target in (A4, A6):
        median = statistics.median(delayed_window(snapshot, target, WINDOW))
        print(f"{target}: median RTT {median / 1000:.2f} ms, mean {metrics[target]['rtt_mean_us'] / 1000:.2f} ms "
              f"(20 ms delay), undelayed path median {base_us / 1000:.3f} ms")
        assert median <= DELAY_MS * 1000 + base_us + 2_000, (target, median, base_us)


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
        "probe", A4, A6, B4, B6, "--method", "icmp", "--interval", str(INTERVAL), "--timeout", str(TIMEOUT),
        "--window", "10", "--report", "0.2", "--samples", "--duration", "10"))
    try:
        started = expect(lambda: records(pinger.log_path, "probe", "started"), bool, what="the ICMP prober",
                         timeout=10.0, diagnose=lambda: pinger.log_tail(10))[0]
        assert started["sockets"] == {"4": kind, "6": kind}
        snapshot = expect(lambda: records(pinger.log_path, "probe", "snapshot")[-1:],
                          lambda s: bool(s) and all(completed(s[0], t) >= 10 for t in (A4, A6, B4, B6)),
                          what="10 ICMP probes per target", timeout=10.0, diagnose=lambda: pinger.log_tail(10))[0]
    finally:
        probe_lab.lab.stop(pinger)
    # The undelayed paths cross the same userspace forwarder: their median is what it adds on this host at this
    # time, as in the UDP test above. The delayed path also waits on the forwarder's 20 ms timer, which a loaded
    # host wakes late: CI measured medians of 22.5-24.3 ms over undelayed medians of 0.4-1.9 ms, at 7-32 %
    # steal, so the allowance is 5 ms (a fixed 3 ms failed at 23.2 ms). Every sample is still >= the delay.
    base_us = max(statistics.median([rtt for rtt in snapshot["samples"][target] if rtt is not None] or [0.0])
                  for target in (B4, B6))
    for target in (A4, A6):
        median = statistics.median(delayed_window(snapshot, target, 10))
        print(f"{target} ({kind}): median RTT {median / 1000:.2f} ms, "
              f"mean {snapshot['targets'][target]['rtt_mean_us'] / 1000:.2f} ms, "
              f"undelayed path median {base_us / 1000:.3f} ms")
        assert median <= DELAY_MS * 1000 + base_us + 5_000, (target, median, base_us)
