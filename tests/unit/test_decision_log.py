"""Changed decisions in the router's log: every fallback, the first N others per recompute, one line for the rest."""

from __future__ import annotations

import io
import ipaddress
import json
import logging
from typing import Any

import pytest

from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import Outcome, decide
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId
from dyncast_bgp.obs import log as obs_log
from dyncast_bgp.router.decision_log import DecisionLog

POLICY = ServicePolicy(max_step=1.0, min_dwell=0, smoothing=1.0)


def outcome(number: int, *, reachable: bool = True) -> Outcome:
    service = ServiceId.parse(f"203.0.113.{number}/32")
    key = InstanceKey(service, ipaddress.ip_address("198.51.100.11"))
    metrics = ComputeMetrics(values=MetricsView({"cpu_utilization": 20.0, "capacity": 1000.0}))
    candidate = Candidate(key, InstanceState.ACTIVE, metrics, PathMetrics(rtt_mean_us=5000, reachable=reachable))
    return decide(service, [candidate], POLICY, None, 0.0)


class Recorder:
    """A structlog-like logger that keeps (level, event, fields); debug enabled or not."""

    def __init__(self, *, debug: bool) -> None:
        self.debug_enabled = debug
        self.lines: list[tuple[str, str, dict[str, Any]]] = []
        self.asked = 0

    def bind(self) -> Recorder:
        return self

    def is_enabled_for(self, level: int) -> bool:
        self.asked += 1
        return self.debug_enabled or level > logging.DEBUG

    def debug(self, event: str, **fields: Any) -> None:
        if self.debug_enabled:
            self.lines.append(("debug", event, fields))

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))


def test_the_first_lines_of_a_recompute_at_info_then_one_line_counts_the_rest() -> None:
    recorder = Recorder(debug=False)
    decision_log = DecisionLog(recorder, 3)
    decision_log.changed([outcome(n) for n in range(1, 3)])  # a recompute in two steps (slices)
    decision_log.changed([outcome(n) for n in range(3, 8)])
    decision_log.finished()
    events = [(level, event) for level, event, _ in recorder.lines]
    assert events == [("info", "decision_changed")] * 3 + [("info", "decision_lines_limited")]
    assert [fields["service"] for _, _, fields in recorder.lines[:3]] == [f"203.0.113.{n}/32" for n in (1, 2, 3)]
    summary = recorder.lines[-1][2]
    assert summary["changed"] == 7 and summary["logged"] == 3 and summary["limited"] == 4
    assert summary["limit"] == 3 and "dyncast ctl show decisions" in summary["where"]
    assert recorder.asked == 1, "the level asked once per step, only once lines are over the limit"

    recorder.lines.clear()  # the next recompute starts again
    decision_log.changed([outcome(9)])
    decision_log.finished()
    assert [event for _, event, _ in recorder.lines] == ["decision_changed"]


def test_a_fallback_is_always_logged_and_counted_in_the_summary() -> None:
    recorder = Recorder(debug=False)
    decision_log = DecisionLog(recorder, 1)
    lost = outcome(2, reachable=False)
    assert lost.fallback is not None, "an unreachable only instance: a fallback (the test's premise)"
    decision_log.changed([outcome(1), lost, outcome(3), outcome(4, reachable=False)])
    decision_log.finished()
    events = [(level, event) for level, event, _ in recorder.lines]
    assert events == [("info", "decision_changed"), ("warning", "service_fallback"), ("warning", "service_fallback"),
                      ("info", "decision_lines_limited")]
    summary = recorder.lines[-1][2]
    assert summary["changed"] == 4 and summary["fallbacks"] == 2 and summary["limited"] == 1


def test_at_debug_the_lines_over_the_limit_are_logged_at_debug() -> None:
    recorder = Recorder(debug=True)
    decision_log = DecisionLog(recorder, 1)
    decision_log.changed([outcome(n) for n in range(1, 4)])
    decision_log.finished()
    assert [(level, event) for level, event, _ in recorder.lines] == [
        ("info", "decision_changed"), ("debug", "decision_changed"), ("debug", "decision_changed"),
        ("info", "decision_lines_limited")]


def test_nothing_over_the_limit_no_summary_and_zero_lines_allowed() -> None:
    recorder = Recorder(debug=False)
    DecisionLog(recorder, 5).changed([outcome(1)])
    assert [event for _, event, _ in recorder.lines] == ["decision_changed"]
    recorder.lines.clear()
    quiet = DecisionLog(recorder, 0)
    quiet.changed([outcome(1)])
    quiet.finished()
    assert [event for _, event, _ in recorder.lines] == ["decision_lines_limited"]
    with pytest.raises(ValueError, match="decision log lines"):
        DecisionLog(recorder, -1)


def test_with_the_real_logger_the_lines_are_json_and_debug_follows_the_configured_level() -> None:
    import structlog  # noqa: PLC0415

    for level, expected in (("info", 2), ("debug", 4)):
        stream = io.StringIO()
        obs_log.configure(level, stream=stream)
        try:
            decision_log = DecisionLog(structlog.get_logger("test"), 1)
            decision_log.changed([outcome(n) for n in range(1, 4)])
            decision_log.finished()
        finally:
            obs_log.configure("info")
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert len(lines) == expected, (level, lines)
        assert lines[0]["event"] == "decision_changed" and lines[0]["level"] == "info"
        assert lines[-1]["event"] == "decision_lines_limited" and lines[-1]["limited"] == 2
