"""The timing-test guard (tests/hoststall.py): a failure is only excused when the host was measured stalled."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hoststall import (
    LAG_LIMIT,
    STEAL_LIMIT,
    CpuTimes,
    HostStall,
    LagSampler,
    Stall,
    parse_cpu_line,
    steal_share,
)

pytest_plugins = ["pytester"]

CALM = Stall(seconds=2.0, steal_share=0.05, worst_lag=0.01, lagged=0.0)
STOLEN = Stall(seconds=2.0, steal_share=0.55, worst_lag=0.01, lagged=0.0)
LATE = Stall(seconds=2.0, steal_share=None, worst_lag=0.8, lagged=0.8)


def test_the_aggregate_cpu_line_is_read() -> None:
    times = parse_cpu_line("cpu  4636094 987 283078 7985177 23628 0 39122 1383410 0 0\n")
    assert times == CpuTimes(total=4636094 + 987 + 283078 + 7985177 + 23628 + 0 + 39122 + 1383410, steal=1383410)
    with pytest.raises(ValueError, match="aggregate"):
        parse_cpu_line("cpu0 1 2 3 4 5 6 7 8 9 10")
    with pytest.raises(ValueError, match="aggregate"):
        parse_cpu_line("cpu 1 2 3")


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(1, 10**6), st.integers(0, 10**6))
def test_steal_share_is_the_stolen_part_of_the_ticks_between_two_readings(total: int, steal: int, more: int,
                                                                          stolen: int) -> None:
    stolen = min(stolen, more)
    share = steal_share(CpuTimes(total, steal), CpuTimes(total + more, steal + stolen))
    assert share == stolen / more
    assert steal_share(CpuTimes(total, steal), CpuTimes(total, steal)) is None
    assert steal_share(None, CpuTimes(total, steal)) is None


def test_stalled_by_steal_or_by_scheduling_lag_and_not_otherwise() -> None:
    assert not CALM.stalled
    assert STOLEN.stalled and LATE.stalled
    assert Stall(1.0, STEAL_LIMIT - 0.01, LAG_LIMIT - 0.01, 0.0).stalled is False
    assert Stall(1.0, None, 0.2, 1.2).stalled  # many shorter lags add up
    assert "steal 55%" in STOLEN.describe() and "800 ms" in LATE.describe()


def test_the_sampler_keeps_how_late_each_wake_up_came() -> None:
    ticks = iter([0.0, 0.02, 0.54, 0.56])  # the second sleep of 20 ms took 520
    last = [0.56]

    def clock() -> float:
        for tick in ticks:
            return tick
        last[0] += 0.02
        return last[0]

    sampler = LagSampler(clock)
    deadline = time.monotonic() + 20.0  # its thread may start late on a stalled host
    while len(sampler._lags) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    lags = sampler.stop()
    assert lags[:3] == pytest.approx([0.0, 0.5, 0.0]) and len(lags) >= 3


def scripted(*stalls: Stall) -> Callable[[], Callable[[], Stall]]:
    """A host that was as given in each attempt, in turn."""
    host: Iterator[Stall] = iter(stalls)

    def open_window() -> Callable[[], Stall]:
        stall = next(host)
        return lambda: stall
    return open_window


FLAKY = """
import pytest
ATTEMPTS = []

@pytest.mark.timing
def test_timed():
    ATTEMPTS.append(1)
    assert len(ATTEMPTS) > {fail_first}, "too slow"

def test_plain():
    assert False, "not a timing test"
"""


def run(pytester: pytest.Pytester, fail_first: int, *stalls: Stall) -> pytest.RunResult:
    pytester.makeini("[pytest]\nmarkers =\n    timing: watched\n")
    pytester.makepyfile(FLAKY.format(fail_first=fail_first))
    return pytester.runpytest_inprocess("-ra", "-p", "no:cacheprovider",
                                        plugins=[HostStall(open_window=scripted(*stalls))])


def test_a_failure_on_a_calm_host_fails(pytester: pytest.Pytester) -> None:
    result = run(pytester, 5, CALM)
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*no timing test ran on a stalled host*"])


def test_a_failure_on_a_stalled_host_is_run_again_and_judged_by_the_second_attempt(pytester: pytest.Pytester
                                                                                    ) -> None:
    passed = run(pytester, 1, STOLEN, CALM)
    passed.assert_outcomes(passed=1, failed=1)
    passed.stdout.fnmatch_lines(["*failed on a stalled host*running it once more*", "*test_timed: 2 attempt(s)*judged"])


def test_a_second_failure_on_a_calm_host_fails(pytester: pytest.Pytester) -> None:
    run(pytester, 5, STOLEN, CALM).assert_outcomes(failed=2)


def test_a_failure_in_two_stalled_attempts_is_reported_not_judged_with_the_figures(pytester: pytest.Pytester
                                                                                    ) -> None:
    result = run(pytester, 5, STOLEN, LATE)
    result.assert_outcomes(skipped=1, failed=1)  # the plain test is never excused
    result.stdout.fnmatch_lines(["*test_timed: 2 attempt(s)*NOT JUDGED, failed with: AssertionError: too slow*",
                                 "*SKIPPED*not judged, the host was stalled in 2 attempt(s)*steal 55%*800 ms*"
                                 "*too slow*"])


def test_a_teardown_that_fails_is_never_excused(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    timing: watched\n")
    pytester.makepyfile("""
import pytest

@pytest.fixture
def leaky():
    yield
    raise RuntimeError("namespaces left behind")

@pytest.mark.timing
def test_timed(leaky):
    assert False, "too slow"
""")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", plugins=[HostStall(open_window=scripted(STOLEN))])
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(["*RuntimeError: namespaces left behind*"])
