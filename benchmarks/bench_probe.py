"""Prober cost for thousands of targets on one core, against a bare asyncio UDP loop (issue 3).

Question: what does probing N targets once a second cost the router, and how
much of that is the prober's own work rather than the unavoidable cost of
sending and receiving N packets a second from Python?

Setup (all on loopback, nothing leaves the host):

- **Responder**: one ``python -m dyncast_bgp.probe echo`` subprocess bound to
  N loopback addresses 127.1.x.y (one socket each, port ``--port``), rate
  limits raised to 4 N/s (all probes come from 127.0.0.1). Its CPU is
  reported too, for information.
- **Prober** (a subprocess of this script, ``--worker prober``): the real
  :class:`~dyncast_bgp.probe.Prober` (UDP, interval 1 s, timeout 1 s,
  window 10) probing all N addresses. After a warm-up (every target probed
  at least once) its CPU time (``time.process_time``) is measured over the
  window; sent, matched and lost probes come from its counters; the RTTs of
  every window (the last 10 probes of every target) give p50/p99.
- **Baseline** (``--worker baseline``), measured in the same run: a bare
  asyncio UDP loop with no bookkeeping, one socket, sending the same request
  bytes to the same N addresses at the same rate (N/s, in the prober's ticks of 5 ms)
  and draining replies with ``add_reader``. The ratio prober/baseline says
  what the scheduling, matching and statistics add.

Every loop is bounded in count and time: workers stop at their deadline and
never send more than the scheduled count; the parent kills any subprocess
that outlives its deadline by 30 s.

Run: ``.venv/bin/python benchmarks/bench_probe.py [--targets 1000,5000]
[--seconds 10] [--loops uvloop,asyncio] [--no-write] [--json FILE]``. The table
goes to benchmarks/results/probe.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import uvloop

from dyncast_bgp.config.schema import Probes
from dyncast_bgp.model import IPAddress
from dyncast_bgp.probe.packet import request
from dyncast_bgp.probe.prober import Prober, default_tick

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INTERVAL = 1.0
WINDOW = 10
WARMUP = 2.5
FIRST_ADDRESS = int(ipaddress.ip_address("127.1.0.1"))


def targets(count: int) -> list[IPAddress]:
    return [ipaddress.ip_address(FIRST_ADDRESS + i) for i in range(count)]


def run_loop(loop_name: str, main: Callable[[], Coroutine[Any, Any, dict[str, Any]]]) -> dict[str, Any]:
    return uvloop.run(main()) if loop_name == "uvloop" else asyncio.run(main())


# ---------------------------------------------------------------- workers (subprocesses)


async def prober_worker(count: int, port: int, seconds: float) -> dict[str, Any]:
    config = Probes(port=port, interval=INTERVAL, timeout=INTERVAL, window=WINDOW, unreachable_after=3)
    addresses = targets(count)
    async with Prober(config) as prober:
        prober.set_targets(addresses)
        await asyncio.sleep(WARMUP)
        lost0 = sum(s.lost for a in addresses if (s := prober.status(a)) is not None)
        await asyncio.sleep(0.1)  # that loop blocked the prober for tens of ms: let it send what fell due
        sent0, matched0 = prober.counters.sent, prober.counters.matched
        cpu0, wall0 = time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        counters = prober.counters
        sent, matched = counters.sent - sent0, counters.matched - matched0
        lost = sum(s.lost for a in addresses if (s := prober.status(a)) is not None) - lost0
        samples = [rtt for a in addresses if (w := prober.schedule.window(a)) is not None
                   for rtt in w.samples() if rtt is not None]
        unreachable = sum(1 for m in prober.snapshot().values() if not m.reachable)
    quantiles = statistics.quantiles(samples, n=100) if len(samples) >= 100 else [float("nan")] * 99
    return {"cpu_s": cpu, "wall_s": wall, "sent": sent, "matched": matched, "lost": lost, "late": counters.late,
            "unknown": counters.unknown, "skipped": counters.skipped_slots,
            "send_errors": counters.send_errors, "unreachable": unreachable,
            "rtt_p50_us": quantiles[49] / 1000, "rtt_p99_us": quantiles[98] / 1000, "rtt_samples": len(samples),
            "max_rss_kb": _max_rss_kb()}


async def baseline_worker(count: int, port: int, seconds: float) -> dict[str, Any]:
    """Bare asyncio UDP: the same packets at the same rate, no scheduling structures, no matching."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("0.0.0.0", 0))
    received = [0]

    def readable() -> None:
        for _ in range(512):
            try:
                sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            received[0] += 1

    loop.add_reader(sock.fileno(), readable)
    sockaddrs = [(str(a), port) for a in targets(count)]
    payload = request(1, 1, 1)
    rate = count / INTERVAL
    tick = default_tick(INTERVAL)  # the prober's own batching, for a like-for-like floor
    sent = index = 0
    try:
        start = time.monotonic()
        deadline = start + WARMUP + seconds
        limit = int(rate * (WARMUP + seconds)) + count  # never more than scheduled
        cpu0 = wall0 = received0 = sent0 = None
        while (now := time.monotonic()) < deadline and sent < limit:
            if cpu0 is None and now >= start + WARMUP:
                cpu0, wall0, received0, sent0 = time.process_time(), now, received[0], sent
            due = int((now - start) * rate) - sent
            for _ in range(max(0, min(due, limit - sent))):
                with contextlib.suppress(OSError):
                    sock.sendto(payload, sockaddrs[index])
                index = (index + 1) % count
                sent += 1
            await asyncio.sleep(tick)
        cpu, wall = time.process_time() - (cpu0 or 0.0), time.monotonic() - (wall0 or start)
    finally:
        loop.remove_reader(sock.fileno())
        sock.close()
    return {"cpu_s": cpu, "wall_s": wall, "sent": sent - (sent0 or 0), "matched": received[0] - (received0 or 0),
            "max_rss_kb": _max_rss_kb()}


def _max_rss_kb() -> int:
    import resource  # noqa: PLC0415 (only the workers need it)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker_main(args: argparse.Namespace) -> int:
    if args.worker == "prober":
        result = run_loop(args.loop, lambda: prober_worker(args.count, args.port, args.seconds))
    else:
        result = run_loop(args.loop, lambda: baseline_worker(args.count, args.port, args.seconds))
    print(json.dumps(result))
    return 0


# ---------------------------------------------------------------- parent


def process_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def host_busy_s() -> float:
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(v) for v in handle.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def start_responder(count: int, port: int, duration: float) -> subprocess.Popen[str]:
    listen = [arg for a in targets(count) for arg in ("--listen", str(a))]
    rate = str(4.0 * count / INTERVAL)
    argv = [sys.executable, "-m", "dyncast_bgp.probe", "echo", *listen, "--port", str(port),
            "--rate-per-source", rate, "--burst-per-source", rate, "--rate-total", rate, "--burst-total", rate,
            "--duration", str(duration)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # {"echo": "listening", ...} once every socket is bound
    if '"listening"' not in line:
        process.kill()
        process.wait()
        raise RuntimeError(f"echo responder did not start: {line!r}")
    return process


def run_worker(kind: str, count: int, port: int, seconds: float, loop_name: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--worker", kind, "--count", str(count), "--port", str(port),
            "--seconds", str(seconds), "--loop", loop_name]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=WARMUP + seconds + 30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} worker failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure(count: int, seconds: float, loop_name: str) -> dict[str, Any]:
    port = free_port()
    responder = start_responder(count, port, duration=2 * (WARMUP + seconds) + 60)
    try:
        busy0, wall0, echo0 = host_busy_s(), time.monotonic(), process_cpu_s(responder.pid)
        prober = run_worker("prober", count, port, seconds, loop_name)
        echo_cpu = process_cpu_s(responder.pid) - echo0
        host = (host_busy_s() - busy0) / (time.monotonic() - wall0)
        baseline = run_worker("baseline", count, port, seconds, loop_name)
    finally:
        responder.send_signal(signal.SIGTERM)
        try:
            responder.wait(timeout=10)
        except subprocess.TimeoutExpired:
            responder.kill()
            responder.wait()
    scheduled = count / INTERVAL
    prober_pct = 100 * prober["cpu_s"] / prober["wall_s"]
    baseline_pct = 100 * baseline["cpu_s"] / baseline["wall_s"]
    return {
        "targets": count, "loop": loop_name, "seconds": seconds,
        "scheduled_rate": scheduled, "achieved_rate": prober["sent"] / prober["wall_s"],
        "reply_ratio": prober["matched"] / max(1, prober["matched"] + prober["lost"]),
        "prober_cpu_pct": prober_pct, "prober_cpu_pct_per_1000": prober_pct / (count / 1000),
        "baseline_cpu_pct": baseline_pct, "baseline_rate": baseline["sent"] / baseline["wall_s"],
        "baseline_reply_ratio": baseline["matched"] / max(1, baseline["sent"]),
        "ratio": prober_pct / baseline_pct if baseline_pct > 0 else float("inf"),
        "prober_us_per_probe": 1e6 * prober["cpu_s"] / max(1, prober["sent"]),
        "baseline_us_per_probe": 1e6 * baseline["cpu_s"] / max(1, baseline["sent"]),
        "rtt_p50_us": prober["rtt_p50_us"], "rtt_p99_us": prober["rtt_p99_us"],
        "responder_cpu_pct_during_prober": 100 * echo_cpu / (prober["wall_s"] + WARMUP),
        "host_busy_cores_during_prober": host,
        "prober": prober, "baseline": baseline,
    }


def render_markdown(results: list[dict[str, Any]], seconds: float) -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    rows = [
        "| targets | loop | scheduled probes/s | achieved/s | replies | prober CPU % | per 1,000 targets | "
        "baseline CPU % (same rate) | prober / baseline | CPU µs per probe (prober / baseline) | RTT p50 µs | "
        "RTT p99 µs | responder CPU % | prober RSS MB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        rows.append(
            f"| {r['targets']:,} | {r['loop']} | {r['scheduled_rate']:,.0f} | {r['achieved_rate']:,.0f} | "
            f"{r['reply_ratio']:.2%} | {r['prober_cpu_pct']:.1f} | {r['prober_cpu_pct_per_1000']:.2f} | "
            f"{r['baseline_cpu_pct']:.1f} | {r['ratio']:.2f}x | "
            f"{r['prober_us_per_probe']:.0f} / {r['baseline_us_per_probe']:.0f} | "
            f"{r['rtt_p50_us']:.0f} | {r['rtt_p99_us']:.0f} | "
            f"{r['responder_cpu_pct_during_prober']:.0f} | {r['prober']['max_rss_kb'] / 1024:.0f} |")
    busy = ", ".join(f"{r['host_busy_cores_during_prober']:.2f}" for r in results)
    return "\n".join([
        "# Path probes: cost on one core (benchmarks/bench_probe.py)",
        "",
        f"Run {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC on {cpu}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, kernel {platform.release()}.",
        "",
        f"UDP probes over loopback to N addresses 127.1.x.y (one echo responder process, one socket per "
        f"address), interval {INTERVAL:g} s, timeout {INTERVAL:g} s, window {WINDOW}; {WARMUP:g} s warm-up, then "
        f"{seconds:g} s measured. Prober and baseline each run alone in their own process; CPU is "
        "`time.process_time()` of that process over the measured window, in % of one core.",
        "",
        *rows,
        "",
        "- *replies*: answered / completed (answered + lost) probes in the window (loopback: anything below "
        "100 % is the responder or a socket buffer dropping).",
        "- *baseline*: a bare asyncio loop sending the same request bytes to the same addresses at the same "
        "rate in the prober's 5 ms ticks and draining replies, with no schedule, matching or statistics: the floor of "
        "doing this I/O from Python on this loop. *prober / baseline* is what the prober adds on top.",
        "- *RTT*: the loopback floor as the prober sees it (send timestamp to reply read, through two "
        "Python event loops); p50/p99 over every target's last 10 probes.",
        f"- host busy cores while the prober ran (all processes, this host has {os.cpu_count()} CPUs, other "
        f"work may share it): {busy}. On a shared host, repeated runs differ by about 20 % in CPU and much "
        "more in RTT p99; compare the ratios of one run, not single figures across runs.",
        "",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--targets", default="1000,5000")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--loops", default="uvloop,asyncio")
    parser.add_argument("--no-write", action="store_true", help="print only; do not write benchmarks/results")
    parser.add_argument("--json", help="also write every figure as JSON to this file")
    parser.add_argument("--worker", choices=("prober", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--loop", default="uvloop", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args)
    random.seed(1)
    results = []
    for loop_name in args.loops.split(","):
        for count in (int(c) for c in args.targets.split(",")):
            result = measure(count, args.seconds, loop_name)
            results.append(result)
            print(f"{count:>6} targets {loop_name:>7}: {result['achieved_rate']:,.0f}/{result['scheduled_rate']:,.0f}"
                  f" probes/s, replies {result['reply_ratio']:.2%}, prober CPU {result['prober_cpu_pct']:.1f}% "
                  f"({result['prober_cpu_pct_per_1000']:.2f}% per 1,000), baseline {result['baseline_cpu_pct']:.1f}%"
                  f" -> {result['ratio']:.2f}x; RTT p50 {result['rtt_p50_us']:.0f} us p99 "
                  f"{result['rtt_p99_us']:.0f} us", flush=True)
    markdown = render_markdown(results, args.seconds)
    print(markdown)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "probe.md").write_text(markdown)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
