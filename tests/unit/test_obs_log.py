"""Logs follow sys.stderr as it is at write time; a replaced or closed stream never breaks a caller."""

from __future__ import annotations

import io
import json
import sys

import pytest
import structlog

from dyncast_bgp.obs.log import configure


def test_logs_go_to_the_current_stderr_even_after_the_old_one_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure("info", fmt="json")
    structlog.get_logger("t").info("first_event", n=1)
    first.close()  # what a test harness does with its capture, or a daemon with a redirected stream
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    structlog.get_logger("t").warning("second_event", n=2)
    record = json.loads(second.getvalue())
    assert record["event"] == "second_event" and record["n"] == 2 and record["level"] == "warning"


def test_level_filters(monkeypatch: pytest.MonkeyPatch) -> None:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stderr", out)
    configure("warning", fmt="json")
    structlog.get_logger("t").info("hidden")
    structlog.get_logger("t").error("shown")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["shown"]
