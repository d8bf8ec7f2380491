"""Agent publishing cost for many services with changing metrics, with and without damping (issue 2).

Question: for 1,000 services whose metrics keep changing, how much CPU does the
agent spend per published update, and how many BGP updates does it send per
minute, with and without damping (``agent.publish``)?

Two parts, both against a baseline measured in the same run (ratios, never
timed asserts):

1. **Real process** (the headline). A config with N services (D-SIDs
   10.200.x.y/32, one instance each) whose only metric source is a ``file``
   source (interval 1 s, timeout 0.5 s). A writer thread rewrites every file
   once a second with a seeded random walk. ``dyncast agent --config FILE``
   runs as a subprocess; a reader thread counts the commands it writes on
   stdout and answers each with ``done`` on stdin, as ExaBGP does with acks on.
   After a warm-up (every service announced once, plus a few seconds) the
   agent's CPU time (utime+stime of /proc/<pid>/stat, all threads) and the
   updates it sends are measured over a window. Modes differ only in
   ``agent.publish``; the in-run baseline is "no damping" (every changed
   reading announced). A "collect only" mode (nothing re-published during the
   window) shows what the metric collection alone costs, so that the part of
   the CPU that publishing costs can be told apart. After the window the writer
   stops, the agent gets time to settle, and the last announcement of every
   service is decoded and compared with its file: the values must be within
   the mode's threshold and the overloaded flag must match. Finally the agent
   gets SIGTERM and must withdraw every route and exit (``killed`` in the
   details table when it did not within :data:`EXIT_WAIT` seconds).

   Default real modes: no-damping, damping (defaults) and collect-only, which
   keeps the default run under about 4 minutes on 2 CPUs; add
   ``--modes no-damping,damping,damping-5s,collect-only`` for the 5 s
   min-interval mode. Metric files live on tmpfs (/dev/shm) when there is
   one: rewriting 1,000 files a second on ext4 takes about a second by itself.

2. **In-process microbenchmark** (deterministic). The same workload drives
   :class:`~dyncast_bgp.agent.state.AgentState` directly with simulated time
   (one reading per service per simulated second, phases spread over the
   second, no sleeps). ``record_metrics`` and ``next_due()`` + ``plan()`` +
   ``render_all`` are timed with ``time.process_time``; the floor is ``render_all`` alone on the
   same number of announce commands with precomputed communities, in the same
   batch sizes. Default: 2 simulated minutes of which the first is not measured
   (the first refresh cycle); ``--sim-minutes 10`` for the long run (about 4
   minutes by itself; damping then sends about 5 % fewer updates per minute as
   the random walk spreads from its start over the whole 2-98 % range).

Run: ``.venv/bin/python benchmarks/bench_agent_publish.py [--seconds N] [--services 1000]
[--json OUT] [--skip-real]``. Results go to benchmarks/results/agent_publish.md/.json
(``--json``/``--markdown`` to write elsewhere).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shlex
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from dyncast_bgp.agent.damping import Threshold
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import parse
from dyncast_bgp.config.schema import Config, Publish
from dyncast_bgp.config.schema import Threshold as ThresholdConfig
from dyncast_bgp.model import MetricsView, StateFlag
from dyncast_bgp.wire.community import decode, parse_hex
from dyncast_bgp.wire.exabgp_text import Announce, Command, render_all
from dyncast_bgp.wire.metrics import decode_metrics

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
AGENT = REPO / ".venv" / "bin" / "dyncast"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

READ_INTERVAL = 1.0  # metric source interval (s)
READ_TIMEOUT = 0.5
OVERLOAD_AT = 95.0  # agent.publish.overload_utilization default
JUMP_PROBABILITY = 1 / 120  # per service and second: a load jump every ~2 minutes per service
CPU_MIN, CPU_MAX = 2.0, 98.0
EXIT_WAIT = 10.0  # seconds the agent gets after SIGTERM (it normally withdraws and exits in well under 1 s)


# ---------------------------------------------------------------- modes


@dataclass(frozen=True, slots=True)
class Mode:
    key: str
    label: str
    min_interval: float
    refresh_interval: float
    relative: float | None
    absolute: float | None
    check: bool = True  # compare the last announcements with the files afterwards
    pinned: bool = True  # agent on AGENT_CPU when --pin is on (the default); False: free on every CPU

    def publish_yaml(self) -> str:
        def number(value: float | None) -> str:
            return "null" if value is None else repr(value)

        return (f"{{min_interval: {self.min_interval!r}, refresh_interval: {self.refresh_interval!r}, "
                f"threshold: {{relative: {number(self.relative)}, absolute: {number(self.absolute)}}}}}")

    @property
    def threshold(self) -> Threshold:
        return Threshold(relative=self.relative, absolute=self.absolute)

    def describe(self) -> str:
        parts = [f"min_interval {self.min_interval:g} s", f"refresh {self.refresh_interval:g} s"]
        if self.relative is not None:
            parts.append(f"relative {self.relative:.0%}")
        if self.absolute is not None:
            parts.append(f"absolute {self.absolute:g}")
        return ", ".join(parts)


NO_DAMPING = Mode("no-damping", "no damping", 0.05, 60.0, 0.0, 0.0)
DEFAULTS = Mode("damping", "damping (defaults)", 1.0, 60.0, 0.10, None)
SLOW = Mode("damping-5s", "damping, 5 s min interval", 5.0, 60.0, 0.10, None)
COLLECT_ONLY = Mode("collect-only", "collect only (nothing re-published)", 3600.0, 3600.0, 0.10, None, check=False)
UNPINNED = Mode("damping-unpinned", "damping (defaults), agent not pinned", 1.0, 60.0, 0.10, None, pinned=False)
MODES = {mode.key: mode for mode in (NO_DAMPING, DEFAULTS, SLOW, COLLECT_ONLY, UNPINNED)}
AGENT_CPU = 0
SIM_MODES = (NO_DAMPING, DEFAULTS, SLOW)


# ---------------------------------------------------------------- workload


class Workload:
    """Per-service load as a seeded random walk, stepped once per second.

    CPU utilisation moves by 0.5-3 points each second (either direction) and,
    with probability :data:`JUMP_PROBABILITY`, jumps by 20-40 points; it stays
    within 2-98 % by reflection. Active sessions follow CPU (a per-service
    number of sessions per CPU point) with 2 % Gaussian noise. Values are
    rounded as a service would print them (CPU to 0.01, sessions to integers).
    """

    def __init__(self, services: int, seed: int) -> None:
        self._rng = random.Random(seed)
        rng = self._rng
        self.cpu = [rng.uniform(10.0, 70.0) for _ in range(services)]
        self._per_point = [rng.uniform(5.0, 50.0) for _ in range(services)]
        self.sessions = [0] * services
        self.jumps = 0
        self._sessions_from_cpu()

    def _sessions_from_cpu(self) -> None:
        rng = self._rng
        self.sessions = [max(1, round(cpu * per_point * (1.0 + rng.gauss(0.0, 0.02))))
                         for cpu, per_point in zip(self.cpu, self._per_point, strict=True)]

    def step(self) -> None:
        rng = self._rng
        for index, previous in enumerate(self.cpu):
            cpu = previous + rng.uniform(0.5, 3.0) * (1.0 if rng.random() < 0.5 else -1.0)
            if rng.random() < JUMP_PROBABILITY:
                self.jumps += 1
                jump = rng.uniform(20.0, 40.0) * (1.0 if rng.random() < 0.5 else -1.0)
                cpu = cpu + jump if CPU_MIN <= cpu + jump <= CPU_MAX else cpu - jump
            if cpu < CPU_MIN:
                cpu = 2 * CPU_MIN - cpu
            elif cpu > CPU_MAX:
                cpu = 2 * CPU_MAX - cpu
            self.cpu[index] = cpu
        self._sessions_from_cpu()

    def values(self, index: int) -> dict[str, float]:
        return {"cpu_utilization": round(self.cpu[index], 2), "active_sessions": float(self.sessions[index])}

    def text(self, index: int) -> str:
        return f"cpu_utilization={self.cpu[index]:.2f}\nactive_sessions={self.sessions[index]}\n"


def service_name(index: int) -> str:
    return f"svc{index:05d}"


def dsid(index: int) -> str:
    return f"10.200.{index // 256}.{index % 256}/32"


def config_text(services: int, mode: Mode, metrics_dir: Path) -> str:
    lines = ["bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}",
             f"agent: {{log_level: info, publish: {mode.publish_yaml()}}}",
             "services:"]
    for index in range(services):
        source = (f"{{type: file, path: {metrics_dir / (service_name(index) + '.metrics')}, "
                  f"interval: {READ_INTERVAL:g}, timeout: {READ_TIMEOUT:g}}}")
        lines.append(f"  - {{name: {service_name(index)}, dsid: {dsid(index)}, instances: "
                     f"[{{name: i1, binding: 198.51.100.{1 + index % 250}, metrics: [{source}]}}]}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- decoding announcements


def float32(value: float) -> float:
    result: float = struct.unpack("!f", struct.pack("!f", value))[0]
    return result


def announced_metrics(line: str) -> tuple[dict[str, float], StateFlag]:
    """Metric values and state flags carried by one ``announce route`` line."""
    _, _, inside = line.partition("extended-community [")
    tokens = inside.partition("]")[0].split()
    decoded = decode_metrics([decode(parse_hex(token)) for token in tokens])
    return dict(decoded.metrics.values), StateFlag(decoded.metrics.flags)


@dataclass(slots=True)
class Check:
    services: int = 0
    checked: int = 0
    missing: int = 0
    value_mismatches: int = 0
    flag_mismatches: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.value_mismatches == 0 and self.flag_mismatches == 0

    def summary(self) -> str:
        if self.services == 0:
            return "n/a"
        if self.ok:
            return f"ok {self.checked}/{self.services}"
        return (f"FAIL {self.checked}/{self.services} (missing {self.missing}, values {self.value_mismatches}, "
                f"flags {self.flag_mismatches})")


def check_announcements(last: dict[str, str], workload: Workload, services: int, threshold: Threshold) -> Check:
    """Every service's last announcement against its file: within the threshold, same overloaded flag."""
    result = Check(services=services)
    for index in range(services):
        line = last.get(dsid(index))
        if line is None:
            result.missing += 1
            continue
        values, flags = announced_metrics(line)
        expected = workload.values(index)
        result.checked += 1
        for name, value in expected.items():
            quantised = float32(value) if name == "cpu_utilization" else float(round(value))
            got = values.get(name)
            if got is None or threshold.crossed(got, quantised):
                result.value_mismatches += 1
                if len(result.examples) < 5:
                    result.examples.append(f"{dsid(index)} {name}: announced {got}, file {value}")
        overloaded = expected["cpu_utilization"] >= OVERLOAD_AT
        if overloaded != bool(flags & StateFlag.OVERLOADED):
            result.flag_mismatches += 1
            if len(result.examples) < 5:
                result.examples.append(f"{dsid(index)}: flags {flags!r} with cpu {expected['cpu_utilization']}")
    return result


# ---------------------------------------------------------------- part 1: the real process


class FileWriter(threading.Thread):
    """Rewrites every metrics file once a second (atomically, by rename), stepping the workload first."""

    def __init__(self, workload: Workload, paths: list[Path]) -> None:
        super().__init__(name="metrics-writer", daemon=True)
        self.workload = workload
        self.paths = paths
        self.stop = threading.Event()
        self.late = 0  # rounds that took longer than a second

    def write_all(self) -> None:
        for index, path in enumerate(self.paths):
            temporary = path.with_suffix(".tmp")
            temporary.write_text(self.workload.text(index))
            os.replace(temporary, path)

    def run(self) -> None:
        deadline = time.monotonic()
        while True:
            deadline += READ_INTERVAL
            delay = deadline - time.monotonic()
            if delay < 0:
                self.late += 1
                deadline = time.monotonic()
            elif self.stop.wait(delay):
                return
            if self.stop.is_set():
                return
            self.workload.step()
            self.write_all()


class AckReader(threading.Thread):
    """Reads the agent's stdout, counts commands, answers each with ``done`` (ExaBGP with acks on)."""

    def __init__(self, stdout: IO[bytes], stdin: IO[bytes]) -> None:
        super().__init__(name="ack-reader", daemon=True)
        self._stdout = stdout
        self._stdin = stdin
        self.lock = threading.Lock()
        self.announces = 0
        self.withdraws = 0
        self.other = 0
        self.acks_lost = 0
        self.last: dict[str, str] = {}  # D-SID -> last announce line (withdrawn ones removed)

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.announces, self.withdraws

    def snapshot(self) -> dict[str, str]:
        with self.lock:
            return dict(self.last)

    def run(self) -> None:
        for raw in self._stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            words = line.split(" ", 3)
            with self.lock:
                if line.startswith("announce route ") and len(words) > 2:
                    self.announces += 1
                    self.last[words[2]] = line
                elif line.startswith("withdraw route ") and len(words) > 2:
                    self.withdraws += 1
                    self.last.pop(words[2], None)
                else:
                    self.other += 1
            try:
                self._stdin.write(b"done\n")
                self._stdin.flush()
            except (BrokenPipeError, ValueError, OSError):
                self.acks_lost += 1


def scratch_dir() -> str | None:
    """tmpfs when there is one: rewriting 1,000 files a second on ext4 takes about a second by itself."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (all its threads), in clock ticks."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rpartition(")")[2].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5), counted from "state" = 3


def host_busy_ticks() -> int:
    """Busy clock ticks of all CPUs together (the ``cpu`` line of /proc/stat, idle and iowait excluded)."""
    with open("/proc/stat", encoding="ascii") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    return sum(values[:8]) - values[3] - values[4]  # user..steal; guest time is already in user


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@dataclass(slots=True)
class RealResult:
    mode: str
    label: str
    policy: str
    agent_cpus: str  # the CPU the agent was pinned to, or "any"
    window_s: float
    startup_s: float
    announces: int
    withdraws: int
    agent_cpu_s: float
    harness_cpu_s: float
    other_cpu_s: float  # the rest of the machine during the window (other users' work, the kernel)
    rss_mib: float
    source_failures: int
    log_warnings: int
    exit_code: int | None  # None: did not exit within EXIT_WAIT s of SIGTERM (then killed)
    exit_withdraws: int
    acks_lost: int
    writer_late: int
    check: str
    check_examples: list[str]
    updates_per_min: float = 0.0
    cpu_s_per_min: float = 0.0
    cpu_ms_per_update: float | None = None
    core_pct: float = 0.0
    ratio_updates: float | None = None  # vs no damping, same run
    ratio_cpu: float | None = None
    publish_cpu_ms_per_update: float | None = None  # (CPU - collect-only CPU) / updates
    repeats_cpu_s_per_min: list[float] = field(default_factory=list)  # every repeat of this mode
    repeats_updates_per_min: list[float] = field(default_factory=list)
    exit_codes: list[int | None] = field(default_factory=list)

    def derive(self) -> None:
        minutes = self.window_s / 60
        updates = self.announces + self.withdraws
        self.updates_per_min = updates / minutes
        self.cpu_s_per_min = self.agent_cpu_s / minutes
        self.cpu_ms_per_update = 1000 * self.agent_cpu_s / updates if updates else None
        self.core_pct = 100 * self.agent_cpu_s / self.window_s


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise RuntimeError(f"agent exited (code {proc.returncode}) while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.05)


def log_events(path: Path) -> Counter[str]:
    events: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            events["<non-json>"] += 1
            continue
        if isinstance(record, dict):
            events[f"{record.get('level', '?')}:{record.get('event', '?')}"] += 1
    return events


def run_real(mode: Mode, services: int, seconds: float, warmup: float, seed: int, *, pin: bool) -> RealResult:
    with tempfile.TemporaryDirectory(prefix="bench-agent-", dir=scratch_dir()) as tmp:
        root = Path(tmp)
        metrics_dir = root / "metrics"
        metrics_dir.mkdir()
        config = root / "agent.yaml"
        config.write_text(config_text(services, mode, metrics_dir))
        workload = Workload(services, seed)
        writer = FileWriter(workload, [metrics_dir / f"{service_name(i)}.metrics" for i in range(services)])
        writer.write_all()
        stderr_path = root / "agent.log"
        with stderr_path.open("wb") as stderr:
            started = time.monotonic()
            proc = subprocess.Popen([str(AGENT), "agent", "--config", str(config)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=stderr)
        pinned = pin and mode.pinned
        if pinned:  # before the agent starts any thread (loading the config alone takes seconds): all inherit it
            os.sched_setaffinity(proc.pid, {AGENT_CPU})
        assert proc.stdin is not None and proc.stdout is not None
        reader = AckReader(proc.stdout, proc.stdin)
        reader.start()
        writer.start()
        try:
            wait_until(lambda: len(reader.last) >= services, 120.0, "the first announcement of every service", proc)
            startup = time.monotonic() - started
            time.sleep(warmup)
            announces0, withdraws0 = reader.counts()
            ticks0, harness0, t0 = cpu_ticks(proc.pid), time.process_time(), time.monotonic()
            host0 = host_busy_ticks()
            time.sleep(seconds)
            announces1, withdraws1 = reader.counts()
            ticks1, harness1, t1 = cpu_ticks(proc.pid), time.process_time(), time.monotonic()
            host1 = host_busy_ticks()
            rss = rss_mib(proc.pid)
            writer.stop.set()
            writer.join()
            settled = Check()
            if mode.check:
                time.sleep(READ_INTERVAL + READ_TIMEOUT + mode.min_interval + 1.0)
                settled = check_announcements(reader.snapshot(), workload, services, mode.threshold)
            _, before_exit = reader.counts()
            proc.send_signal(signal.SIGTERM)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=EXIT_WAIT)
            exit_code = proc.poll()
        finally:
            writer.stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
            with suppress(OSError):
                proc.stdin.close()
            proc.stdout.close()
        events = log_events(stderr_path)
    result = RealResult(
        mode=mode.key, label=mode.label, policy=mode.describe(),
        agent_cpus=str(AGENT_CPU) if pinned else "any", window_s=t1 - t0, startup_s=startup,
        announces=announces1 - announces0, withdraws=withdraws1 - withdraws0,
        agent_cpu_s=(ticks1 - ticks0) / CLOCK_TICKS, harness_cpu_s=harness1 - harness0, rss_mib=rss,
        other_cpu_s=max(0.0, (host1 - host0 - (ticks1 - ticks0)) / CLOCK_TICKS - (harness1 - harness0)),
        source_failures=events["warning:metric_source_failed"],
        log_warnings=sum(count for key, count in events.items() if not key.startswith(("info:", "debug:"))),
        exit_code=exit_code, exit_withdraws=reader.withdraws - before_exit, acks_lost=reader.acks_lost,
        writer_late=writer.late, check=settled.summary(), check_examples=settled.examples)
    result.derive()
    return result


def pick(repeats: list[RealResult]) -> RealResult:
    """The repeat with the median agent CPU per minute (lower middle for an even count); all repeats'
    CPU figures and exit codes are kept with it."""
    ranked = sorted(repeats, key=lambda r: r.cpu_s_per_min)
    chosen = ranked[(len(ranked) - 1) // 2]
    chosen.repeats_cpu_s_per_min = [r.cpu_s_per_min for r in repeats]
    chosen.repeats_updates_per_min = [r.updates_per_min for r in repeats]
    chosen.exit_codes = [r.exit_code for r in repeats]
    chosen.check = "; ".join(dict.fromkeys(r.check for r in repeats))
    chosen.check_examples = [example for r in repeats for example in r.check_examples]
    return chosen


def compare_real(results: list[RealResult]) -> None:
    base = next((r for r in results if r.mode == NO_DAMPING.key), None)
    collect = next((r for r in results if r.mode == COLLECT_ONLY.key), None)
    for result in results:
        if base is not None and base.updates_per_min:
            result.ratio_updates = result.updates_per_min / base.updates_per_min
            result.ratio_cpu = result.cpu_s_per_min / base.cpu_s_per_min
        if (collect is not None and result is not collect and result.updates_per_min
                and result.agent_cpus == collect.agent_cpus):
            result.publish_cpu_ms_per_update = (
                1000 * (result.cpu_s_per_min - collect.cpu_s_per_min) / result.updates_per_min)


# ---------------------------------------------------------------- part 2: in-process, simulated time


@dataclass(slots=True)
class SimResult:
    mode: str
    label: str
    policy: str
    simulated_s: float
    readings: int
    updates: int
    plans: int
    record_s: float
    publish_s: float  # plan() + render_all
    floor_s: float  # render_all alone, same commands count and batches
    updates_per_min: float = 0.0
    record_us_per_reading: float = 0.0
    publish_us_per_update: float = 0.0
    agent_us_per_update: float = 0.0  # (record + publish) / updates
    floor_us_per_update: float = 0.0
    ratio_to_floor: float = 0.0
    ratio_updates: float | None = None
    due_plans: int = 0  # plan() calls made because a queued due time was reached
    due_entries: int = 0  # entries in AgentState's due queue at the end
    due_distinct: int = 0  # distinct (time, service) entries among them

    def derive(self) -> None:
        self.updates_per_min = self.updates / (self.simulated_s / 60)
        self.record_us_per_reading = 1e6 * self.record_s / self.readings
        self.publish_us_per_update = 1e6 * self.publish_s / self.updates
        self.agent_us_per_update = 1e6 * (self.record_s + self.publish_s) / self.updates
        self.floor_us_per_update = 1e6 * self.floor_s / self.updates
        self.ratio_to_floor = self.publish_s / self.floor_s


def with_publish(config: Config, mode: Mode) -> Config:
    """``config`` with the mode's ``agent.publish`` (parsing 1,000 services again takes seconds)."""
    publish = Publish(min_interval=mode.min_interval, refresh_interval=mode.refresh_interval,
                      threshold=ThresholdConfig(relative=mode.relative, absolute=mode.absolute))
    return config.model_copy(update={"agent": config.agent.model_copy(update={"publish": publish})})


def simulate(config: Config, mode: Mode, minutes: float, warmup: float, seed: int) -> SimResult:
    """Drive AgentState with simulated time; time record_metrics and next_due()+plan()+render_all separately."""
    services = len(config.services)
    state = AgentState(with_publish(config, mode))
    workload = Workload(services, seed)
    phase_rng = random.Random(seed + 1)
    order = sorted(range(services), key=lambda _: phase_rng.random())
    phases = [(index, InstanceId(service_name(index), "i1"), position / services)
              for position, index in enumerate(order)]
    clock = time.process_time
    record_s = publish_s = 0.0
    readings = updates = plans = due_plans = 0
    batches: Counter[int] = Counter()
    batches_due: list[int] = []
    samples: dict[int, Command] = {}
    total = int(minutes * 60)
    for second in range(total):
        if second:
            workload.step()
        measuring = second >= warmup
        for index, iid, phase in phases:
            now = second + phase
            start = clock()
            due = state.next_due()  # held updates falling due before this reading (the owner loop's wake-ups)
            due_commands: list[Command] = []
            while due is not None and due <= now:
                commands = state.plan(due)
                text = render_all(commands)
                due_commands.extend(commands)
                batches_due.append(len(commands))
                due = state.next_due()
            ingest = clock()
            state.record_metrics(iid, 0, MetricsView(workload.values(index)), None, now)
            middle = clock()
            commands = state.plan(now)
            text = render_all(commands)
            end = clock()
            if measuring:
                readings += 1
                record_s += middle - ingest
                publish_s += (ingest - start) + (end - middle)
                plans += 1 + len(batches_due)
                due_plans += len(batches_due)
                updates += len(commands) + len(due_commands)
                batches[len(commands)] += 1
                batches.update(batches_due)
            batches_due.clear()
            if commands and index not in samples:
                samples[index] = commands[0]
    del text
    floor_s = render_floor(list(samples.values()), batches)
    queue = list(state._due)  # the queue itself: how many entries are duplicates
    result = SimResult(mode=mode.key, label=mode.label, policy=mode.describe(), simulated_s=total - warmup,
                       readings=readings, updates=updates, plans=plans, record_s=record_s, publish_s=publish_s,
                       floor_s=floor_s, due_plans=due_plans, due_entries=len(queue), due_distinct=len(set(queue)))
    result.derive()
    return result


def render_floor(samples: Sequence[Command], batches: Counter[int], repeats: int = 3) -> float:
    """render_all alone on announce commands built beforehand, in the same batch sizes as the mode.

    The fastest of ``repeats`` passes (the floor should not carry another process's noise).
    """
    announces = [command for command in samples if isinstance(command, Announce)]
    clock = time.process_time
    best = float("inf")
    for _ in range(repeats):
        elapsed = 0.0
        cursor = 0
        for size, count in sorted(batches.items()):
            if size == 0:
                continue
            for _ in range(count):
                batch = [announces[(cursor + offset) % len(announces)] for offset in range(size)]
                cursor += size
                start = clock()
                render_all(batch)
                elapsed += clock() - start
        best = min(best, elapsed)
    return best


# ---------------------------------------------------------------- output


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def publish_text(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value >= 0 else f"{value:.3f} (noise)"


def real_table(results: list[RealResult]) -> list[str]:
    rows = ["| mode | policy | updates/min | updates vs no damping | agent CPU s/min | CPU vs no damping "
            "| % of one core | CPU ms/update | publish CPU ms/update¹ | source failures | check² |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        rows.append(f"| {r.label} | {r.policy} | {r.updates_per_min:,.0f} | {fmt(r.ratio_updates, '.3f')} "
                    f"| {r.cpu_s_per_min:.2f} | {fmt(r.ratio_cpu, '.3f')} | {r.core_pct:.1f} % "
                    f"| {fmt(r.cpu_ms_per_update, '.3f')} "
                    f"| {publish_text(r.publish_cpu_ms_per_update)} | {r.source_failures} | {r.check} |")
    return rows


def real_summary(results: list[RealResult], services: int) -> list[str]:
    """The ratios in words (the in-run baseline is the no-damping mode)."""
    base = next((r for r in results if r.mode == NO_DAMPING.key), None)
    collect = next((r for r in results if r.mode == COLLECT_ONLY.key), None)
    lines = [f"- {r.label}: {r.ratio_updates:.2f}x the updates of no damping for {r.ratio_cpu:.2f}x its agent CPU."
             for r in results if r is not base and r is not collect
             and r.ratio_updates is not None and r.ratio_cpu is not None]
    damped = next((r for r in results if r.mode == DEFAULTS.key), None)
    unpinned = next((r for r in results if r.mode == UNPINNED.key), None)
    if damped is not None and unpinned is not None and damped.agent_cpus != unpinned.agent_cpus:
        lines.append(f"- Not pinned (free on every CPU), the damping agent used {unpinned.cpu_s_per_min:.2f} "
                     f"CPU s/min, {unpinned.cpu_s_per_min / damped.cpu_s_per_min:.2f}x the pinned one, for "
                     f"{unpinned.updates_per_min:,.0f} vs {damped.updates_per_min:,.0f} updates/min.")
    if collect is not None:
        readings = services * 60 / READ_INTERVAL
        share = f", {collect.ratio_cpu:.0%} of the no-damping agent's CPU" if collect.ratio_cpu is not None else ""
        lines.append(f"- Collecting alone ({services:,} file reads a second, nothing published) costs "
                     f"{collect.cpu_s_per_min:.2f} CPU s/min{share}, about "
                     f"{1000 * collect.cpu_s_per_min / readings:.3f} ms per reading.")
    return lines


def real_details(results: list[RealResult]) -> list[str]:
    rows = ["| mode | agent CPUs | window s | start-up s³ | updates in window | RSS MiB | harness CPU % "
            "| rest of machine CPU %⁶ | CPU s/min, every repeat | exit code, every repeat⁷ | withdraws on exit "
            "| log warnings | acks lost | writer late |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        codes = ", ".join("killed" if code is None else str(code) for code in r.exit_codes or [r.exit_code])
        rows.append(f"| {r.label} | {r.agent_cpus} | {r.window_s:.1f} | {r.startup_s:.1f} "
                    f"| {r.announces + r.withdraws:,} | {r.rss_mib:.0f} | {100 * r.harness_cpu_s / r.window_s:.1f} % "
                    f"| {100 * r.other_cpu_s / r.window_s:.0f} % "
                    f"| {', '.join(f'{cpu:.2f}' for cpu in r.repeats_cpu_s_per_min or [r.cpu_s_per_min])} "
                    f"| {codes} | {r.exit_withdraws} "
                    f"| {r.log_warnings} | {r.acks_lost} | {r.writer_late} |")
    return rows


def sim_table(results: list[SimResult]) -> list[str]:
    rows = ["| mode | updates/min | ratio vs no damping | record_metrics µs/reading | plan+render µs/update⁴ "
            "| agent µs/update⁴ | floor µs/update (render_all only) | plan+render / floor "
            "| due-queue plans/min | due-queue entries (distinct)⁵ |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        rows.append(f"| {r.label} | {r.updates_per_min:,.0f} | {fmt(r.ratio_updates, '.3f')} "
                    f"| {r.record_us_per_reading:.1f} | {r.publish_us_per_update:.1f} | {r.agent_us_per_update:.1f} "
                    f"| {r.floor_us_per_update:.1f} | {r.ratio_to_floor:.1f}x "
                    f"| {r.due_plans / (r.simulated_s / 60):,.0f} | {r.due_entries:,} ({r.due_distinct:,}) |")
    return rows


NOTES = [
    "¹ (agent CPU minus agent CPU of the collect-only mode, per minute) / updates per minute: what publishing "
    "costs beyond reading the files.",
    "² after the window the writer stops; after min_interval + interval + timeout + 1 s every service's last "
    "announcement is decoded and compared with its file (values within the mode's threshold, overloaded flag "
    "equal).",
    "³ from spawning the agent to the first announcement of every service (includes loading the config).",
    "⁴ plan+render: next_due() + plan() + render_all, as the owner loop runs them, per update; agent: the same "
    "plus record_metrics. plan() runs once per reading, so held readings are paid for by the updates that are "
    "sent.",
    "⁵ entries in AgentState._due at the end of the simulation, distinct (time, service) pairs in brackets: "
    "more entries than services means superseded entries (before d4d9abf, one was pushed per held reading).",
    "⁶ busy CPU of the whole host (/proc/stat) minus the agent and this harness, in % of one core: other "
    "users' work; above a few % the agent competed for the 2 CPUs (source timeouts, slower CPU). With "
    "--repeat N the modes run round robin N times and the tables show, per mode, the repeat with the median "
    "agent CPU.",
    "⁷ killed: the agent had not exited 10 s after SIGTERM, so it withdrew nothing. Cause found with this "
    "benchmark: AgentRuntime._collect wraps collect() in asyncio.wait_for, which in Python 3.11 can swallow the "
    "task's cancellation (CPython gh-86296); that collector keeps running and run() waits in gather forever.",
]


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "clock_ticks": CLOCK_TICKS, "loadavg_start": os.getloadavg()}


def markdown(args: argparse.Namespace, real: list[RealResult], sim: list[SimResult], *, info: dict[str, Any],
             command: str, date: str) -> str:
    lines = ["# Agent publishing cost: 1,000 services with changing metrics (issue 2)", "",
             f"- date: {date}",
             f"- command: `{command}`",
             f"- machine: {info['nproc']} CPUs ({info['cpu'] or 'unknown model'}), Python {info['python']}, "
             f"{info['platform']}",
             "- load average (1/5/15 min) at start {} and end {} (the machine is shared: in-run ratios are "
             "the robust figures)".format(*(" / ".join(f"{x:.2f}" for x in info[key])
                                            for key in ("loadavg_start", "loadavg_end"))),
             f"- services: {args.services}, one instance each, one `file` metric source (interval "
             f"{READ_INTERVAL:g} s, timeout {READ_TIMEOUT:g} s, files on tmpfs), seed {args.seed}",
             "- workload: CPU random walk ±0.5-3 points/s, jumps of 20-40 points with probability "
             f"{JUMP_PROBABILITY:.4f}/s per service, within 2-98 %; sessions follow CPU with 2 % noise; "
             "every file rewritten once a second", ""]
    if real:
        lines += [f"## Real process (`dyncast agent`, acks on; window {args.seconds:g} s per mode, collect-only "
                  f"{collect_seconds(args):g} s, after {args.warmup:g} s warm-up; {args.repeat} repeat(s))", "",
                  "Baseline: the no-damping mode of the same run. "
                  + (f"The agent runs pinned to CPU {AGENT_CPU} and this harness (file writer, ack reader) on "
                     "the other CPU(s), unless the mode says otherwise: on a shared machine the agent's CPU time "
                     "swings with other load when it floats." if args.pin else "Nothing is pinned (--no-pin)."),
                  "",
                  *real_table(real), "", *real_summary(real, args.services), "", *real_details(real), "",
                  *[f"- check of {r.label}: {example}" for r in real for example in r.check_examples[:3]]]
        if any(r.check_examples for r in real):
            lines.append("")
    if sim:
        lines += [f"## In-process (AgentState driven directly, {args.sim_minutes:g} simulated minutes, first "
                  f"{args.sim_warmup:g} simulated s not measured)", "",
                  "Floor: `render_all` alone on the same number of announce commands with precomputed "
                  "communities, in the same batch sizes.", "", *sim_table(sim), ""]
    lines += NOTES
    return "\n".join(lines) + "\n"


def print_table(title: str, rows: list[str]) -> None:
    print(f"\n{title}")
    for row in rows:
        print(row)


def collect_seconds(args: argparse.Namespace) -> float:
    return float(args.collect_seconds) if args.collect_seconds is not None else min(args.seconds, 20.0)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window per mode (default 60)")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after every service is announced")
    parser.add_argument("--modes", default="no-damping,damping,collect-only",
                        help=f"real-process modes, comma separated, of {', '.join(MODES)} "
                        "(default: no-damping,damping,collect-only)")
    parser.add_argument("--collect-seconds", type=float, default=None,
                        help="window of the collect-only mode (default: min(--seconds, 20))")
    parser.add_argument("--sim-minutes", type=float, default=2.0, help="simulated minutes (default 2)")
    parser.add_argument("--sim-warmup", type=float, default=60.0, help="simulated seconds not measured")
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=(os.cpu_count() or 1) >= 2,
                        help=f"pin the agent to CPU {AGENT_CPU} and this harness to the other CPUs (default with "
                        "2+ CPUs): the agent's CPU time then barely depends on other load")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run the real modes round robin this many times; report the median-CPU run")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--skip-real", action="store_true", help="in-process part only")
    parser.add_argument("--skip-sim", action="store_true", help="real process only")
    parser.add_argument("--json", type=Path, default=RESULTS / "agent_publish.json")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "agent_publish.md")
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.modes.split(",") if key.strip()]
    unknown = [key for key in keys if key not in MODES]
    if unknown:
        parser.error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(MODES)}")
    if args.sim_warmup >= args.sim_minutes * 60:
        parser.error("--sim-warmup must be shorter than --sim-minutes")
    if args.pin:  # before any thread exists, so that every thread of the harness inherits it
        os.sched_setaffinity(0, (os.sched_getaffinity(0) - {AGENT_CPU}) or {AGENT_CPU})
    command = shlex.join([".venv/bin/python", "benchmarks/bench_agent_publish.py",
                          *(sys.argv[1:] if argv is None else argv)])
    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    info = machine()
    real: list[RealResult] = []
    sim: list[SimResult] = []
    if not args.skip_real:
        runs: dict[str, list[RealResult]] = {key: [] for key in keys}
        for repeat in range(args.repeat):
            for key in keys:  # round robin, so that a burst of load elsewhere does not hit one mode only
                mode = MODES[key]
                seconds = collect_seconds(args) if mode is COLLECT_ONLY else args.seconds
                print(f"real {repeat + 1}/{args.repeat}: {mode.label} ({mode.describe()}), {seconds:g} s ...",
                      flush=True)
                result = run_real(mode, args.services, seconds, args.warmup, args.seed, pin=args.pin)
                print(f"  {result.announces + result.withdraws:,} updates, agent CPU {result.agent_cpu_s:.2f} s "
                      f"in {result.window_s:.1f} s, rest of machine {100 * result.other_cpu_s / result.window_s:.0f} "
                      f"% of a core, check {result.check}", flush=True)
                for example in result.check_examples:
                    print(f"    {example}")
                runs[key].append(result)
        real = [pick(runs[key]) for key in keys]
        compare_real(real)
        print_table("Real process", [*real_table(real), "", *real_summary(real, args.services), "",
                                     *real_details(real)])
    if not args.skip_sim:
        config = parse(config_text(args.services, NO_DAMPING, Path("/nonexistent")))
        for mode in SIM_MODES:
            print(f"sim: {mode.label} ...", flush=True)
            sim.append(simulate(config, mode, args.sim_minutes, args.sim_warmup, args.seed))
        base = sim[0].updates_per_min
        for outcome in sim:
            outcome.ratio_updates = outcome.updates_per_min / base if base else None
        print_table("In-process", sim_table(sim))
    for note in NOTES:
        print(note)
    info["loadavg_end"] = os.getloadavg()
    document = {"date": date, "command": command, "machine": info, "args": {
        key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()},
        "real": [asdict(r) for r in real], "sim": [asdict(r) for r in sim]}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(document, indent=2) + "\n")
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(markdown(args, real, sim, info=info, command=command, date=date))
    print(f"\nwrote {args.json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
