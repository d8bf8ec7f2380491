"""Offline replay: recorded ExaBGP JSON lines in, every changed decision out as a JSON line.

`dyncast router --replay FILE --print-decisions` runs the same RIB and decision
engine as the live router, without probes and without touching the kernel.
Path metrics come from the config's ``router.static_paths`` (absent otherwise).
Time is the ``time`` each line carries (ExaBGP stamps every message), so the
same input gives the same output, whenever and however fast it is replayed;
a line without a usable time keeps the previous one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.engine.owner import RouterEngine, decision_line
from dyncast_bgp.router.static import static_paths
from dyncast_bgp.wire.exabgp_json import ExabgpJsonError, parse_line


@dataclass(slots=True)
class ReplayReport:
    lines: int = 0
    rejected: int = 0
    decisions: int = 0
    problems: list[str] = field(default_factory=list)


def replay(lines: Iterable[str], config: RouterConfig, out: TextIO, *, stale_time: float = 0.0) -> ReplayReport:
    engine = RouterEngine(config, stale_time=stale_time, static_paths=static_paths(config.static_paths))
    report = ReplayReport()
    now = 0.0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        report.lines += 1
        now = max(now, _time_of(line, now))
        try:
            event = parse_line(line)
        except ExabgpJsonError as exc:
            report.rejected += 1
            report.problems.append(f"line {number}: {exc}")
            continue
        engine.on_event(event, now)
        _emit(engine, now, out, report)
    # let held changes (slew, dwell, grace) play out after the last line
    for _ in range(10_000):
        due = engine.next_due()
        if due is None:
            break
        now = max(now, due)
        _emit(engine, now, out, report)
    return report


def _emit(engine: RouterEngine, now: float, out: TextIO, report: ReplayReport) -> None:
    for outcome in engine.step(now):
        out.write(json.dumps(decision_line(outcome.decision), sort_keys=False) + "\n")
        report.decisions += 1


def _time_of(line: str, previous: float) -> float:
    """The line's ``time``; ``previous`` when it has none that is a finite number (whatever the line holds)."""
    try:
        value = json.loads(line).get("time")
    except (ValueError, AttributeError, RecursionError):  # RecursionError: arrays nested thousands deep
        return previous
    if not isinstance(value, int | float) or isinstance(value, bool):
        return previous
    try:
        time = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return previous
    return time if math.isfinite(time) else previous
