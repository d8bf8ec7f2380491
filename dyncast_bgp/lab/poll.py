"""Bounded polling, in the style of FRR topotests' ``run_and_expect``: never a bare sleep.

A check is a function returning the observed state; a predicate says whether
that state is the one expected. The last observation goes into the error, so
a failure says what was seen, not only that time ran out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from dyncast_bgp.lab.errors import WaitTimeoutError

T = TypeVar("T")


def run_and_expect(func: Callable[[], T], expected: Callable[[T], bool], *, count: int, wait: float,
                   sleep: Callable[[float], None] = time.sleep) -> tuple[bool, T]:
    """Call ``func`` up to ``count`` times, ``wait`` seconds apart, until ``expected(result)``.

    Returns ``(True, result)`` on success, else ``(False, last result)``.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    result = func()
    for _ in range(count - 1):
        if expected(result):
            return True, result
        sleep(wait)
        result = func()
    return expected(result), result


def expect(func: Callable[[], T], expected: Callable[[T], bool], *, what: str, timeout: float = 10.0,
           wait: float = 0.05, diagnose: Callable[[], str] | None = None,
           sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """Call ``func`` every ``wait`` s until ``expected(result)``, for at most ``timeout`` s of wall time.

    Checks that are slow themselves (a vtysh call) count against the
    timeout. On failure raise :class:`WaitTimeoutError` naming ``what`` was
    awaited, with the last observation and, when given, ``diagnose()`` (e.g.
    a daemon's log tail).
    """
    deadline = clock() + timeout
    result = func()
    while not expected(result):
        if clock() >= deadline:
            message = f"timed out after {timeout:g}s waiting for {what}; last observed: {result!r}"
            if diagnose is not None:
                message += "\n" + diagnose()
            raise WaitTimeoutError(message)
        sleep(wait)
        result = func()
    return result
