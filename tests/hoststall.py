"""Timing tests on a stalled host: measure the host while they run, rerun once, and say what was not judged.

The lab and probe tests check real-time behaviour: an RTT bound, loss detected within three probe intervals, a
rollback within 4 s, requests answered during a restart. On a VM whose hypervisor takes half of its CPU they fail
for reasons no code can change: CI runs sampled 51-67 % steal, and a starved userspace forwarder lost a third of
the probes on a "clean" path. A test marked ``timing`` is therefore watched while it runs:

- the host's CPU steal over the attempt (``/proc/stat``), and how late a thread of this process, started for the
  attempt, woke from 20 ms sleeps (the scheduling lag every daemon of the lab saw too);
- a failure on a host that was not stalled is a failure, as always;
- a failure while the host was stalled is run once more (when the attempt was short enough and the session's
  rerun budget lasts); a failure in the last attempt while the host was still stalled is reported as *skipped*
  with the measured figures and the failure's first line, and listed again in the terminal summary.

A code error on a healthy host therefore still fails; what is not judged is named, with the reason measured,
never assumed. docs/decisions/0017-timing-tests-on-a-stalled-host.md says why and where the limits come from.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.runner import runtestprotocol

STEAL_LIMIT = 0.25  # share of the host's CPU time stolen over the attempt
LAG_LIMIT = 0.25  # s: the longest a 20 ms sleep overran
LAGGED_LIMIT = 1.0  # s: the sum of overruns longer than 50 ms
RERUN_ATTEMPT_MAX = 100.0  # s: an attempt longer than this is not repeated (pytest-timeout covers both attempts)
RERUN_BUDGET = 300.0  # s: the whole session's time for repeated attempts
PERIOD = 0.02
LAGGED_FROM = 0.05


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """The host's CPU time in clock ticks, all CPUs: the total and the part stolen by the hypervisor."""

    total: int
    steal: int


def parse_cpu_line(line: str) -> CpuTimes:
    """Read the aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    fields = line.split()
    if len(fields) < 9 or fields[0] != "cpu":
        raise ValueError(f"/proc/stat: not the aggregate cpu line: {line[:80]!r}")
    ticks = [int(value) for value in fields[1:9]]  # guest time is counted in user already
    return CpuTimes(total=sum(ticks), steal=ticks[7])


def read_cpu(path: Path = Path("/proc/stat")) -> CpuTimes | None:
    try:
        with path.open() as stat:
            return parse_cpu_line(stat.readline())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Stall:
    """What the host did during one attempt of a test."""

    seconds: float
    steal_share: float | None  # None: /proc/stat not readable
    worst_lag: float
    lagged: float

    @property
    def stalled(self) -> bool:
        return (self.steal_share is not None and self.steal_share >= STEAL_LIMIT) or self.worst_lag >= LAG_LIMIT \
            or self.lagged >= LAGGED_LIMIT

    def describe(self) -> str:
        steal = "n/a" if self.steal_share is None else f"{self.steal_share:.0%}"
        return (f"steal {steal}, longest scheduling lag {self.worst_lag * 1000:.0f} ms, "
                f"{self.lagged:.1f} s lagged over {self.seconds:.1f} s")


def steal_share(before: CpuTimes | None, after: CpuTimes | None) -> float | None:
    if before is None or after is None or after.total <= before.total:
        return None
    return (after.steal - before.steal) / (after.total - before.total)


class LagSampler:
    """A thread sleeping ``PERIOD`` at a time, keeping how late each wake-up came, for one attempt only.

    It runs only while a timing test does, and its loop allocates no object the garbage collector tracks (the
    lags go into an ``array``): a test elsewhere checks ``gc.get_freeze_count()`` exactly, and a thread
    freeing tuples beside it (the first version of this sampler, running all session) changed that count.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lags = array("d")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="host-stall-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        clock, lags, period = self._clock, self._lags, PERIOD
        before = clock()
        while not self._stopping:
            time.sleep(period)
            now = clock()
            lags.append(max(0.0, now - before - period))
            before = now

    def stop(self) -> list[float]:
        """End the thread; the lags it saw."""
        self._stopping = True
        self._thread.join(timeout=1.0)
        return self._lags.tolist()


class Window:
    """One attempt, from its start to :meth:`close`."""

    def __init__(self) -> None:
        self._sampler = LagSampler()
        self._began = time.monotonic()
        self._cpu = read_cpu()

    def close(self) -> Stall:
        lags = self._sampler.stop()
        return Stall(seconds=time.monotonic() - self._began, steal_share=steal_share(self._cpu, read_cpu()),
                     worst_lag=max(lags, default=0.0), lagged=sum(lag for lag in lags if lag > LAGGED_FROM))


@dataclass
class Record:
    nodeid: str
    stalls: list[Stall]
    failure: str | None  # the first line of the last attempt's failure, when it was not judged


class HostStall:
    """The plugin: registered by tests/conftest.py."""

    def __init__(self, open_window: Callable[[], Callable[[], Stall]] | None = None) -> None:
        """``open_window`` starts measuring an attempt and returns what ends it (tests give a scripted host)."""
        self._open_window = open_window or (lambda: Window().close)
        self.worst_lag = 0.0
        self.rerun_spent = 0.0
        self.records: list[Record] = []
        self.run_cpu = read_cpu()

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        if item.get_closest_marker("timing") is None:
            return None
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        stalls: list[Stall] = []
        failure: str | None = None
        while True:
            close = self._open_window()
            reports = runtestprotocol(item, nextitem=nextitem, log=False)
            stall = close()
            stalls.append(stall)
            self.worst_lag = max(self.worst_lag, stall.worst_lag)
            failed = [report for report in reports if report.failed]
            if not failed or not stall.stalled or any(report.when == "teardown" for report in failed):
                break  # a cleanup that failed (namespaces left behind, say) is never a matter of timing
            if len(stalls) == 1 and self._may_rerun(reports, stall):
                self.rerun_spent += stall.seconds
                print(f"\n{item.nodeid}: failed on a stalled host ({stall.describe()}); running it once more: "
                      f"{_first_line(failed[0])}", flush=True)
                continue
            failure = _first_line(failed[0])
            reason = (f"Skipped: not judged, the host was stalled in {len(stalls)} attempt(s) "
                      f"({'; '.join(s.describe() for s in stalls)}); it failed with: {failure}")
            for report in failed:
                report.outcome = "skipped"
                report.longrepr = (str(item.path), (item.location[1] or 0) + 1, reason)
            break
        if failure is not None or len(stalls) > 1 or stalls[-1].stalled:
            self.records.append(Record(item.nodeid, stalls, failure))
        for report in reports:
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _may_rerun(self, reports: list[pytest.TestReport], stall: Stall) -> bool:
        """Only a failure of the test itself is repeated: a fixture that failed to set up keeps its error cached."""
        in_call = all(report.when == "call" for report in reports if report.failed)
        return in_call and stall.seconds <= RERUN_ATTEMPT_MAX and self.rerun_spent + stall.seconds <= RERUN_BUDGET

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        share = steal_share(self.run_cpu, read_cpu())
        terminalreporter.section("host stall during timing tests")
        terminalreporter.write_line(
            f"whole run: steal {'n/a' if share is None else f'{share:.0%}'}; longest scheduling lag in a timing test "
            f"{self.worst_lag * 1000:.0f} ms; limits: steal {STEAL_LIMIT:.0%}, lag {LAG_LIMIT * 1000:.0f} ms, "
            f"{LAGGED_LIMIT:g} s lagged; repeated attempts took {self.rerun_spent:.0f} s of {RERUN_BUDGET:.0f}")
        for record in self.records:
            verdict = "NOT JUDGED, failed with: " + record.failure if record.failure else "judged"
            attempts = "; ".join(stall.describe() for stall in record.stalls)
            terminalreporter.write_line(f"{record.nodeid}: {len(record.stalls)} attempt(s) [{attempts}] {verdict}")
        if not self.records:
            terminalreporter.write_line("no timing test ran on a stalled host")


def _first_line(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr)
    return text.splitlines()[0][:300] if text else "(no message)"
