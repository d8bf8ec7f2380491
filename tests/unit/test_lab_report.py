"""The lab report (dyncast_bgp.lab.report): the numbers per phase, the markdown, and the files written."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from dyncast_bgp.lab.loadgen import NO_INSTANCE, JsonlWriter, RequestEvent
from dyncast_bgp.lab.report import (
    BEFORE,
    ReportError,
    checked_phases,
    phase_stats,
    plot_file_names,
    render_markdown,
    write_report,
    write_report_from_events,
)

T0 = 1_800_000_000.0
PHASES = [(T0, "steady", "both sites share the load"), (T0 + 10, "spike", "site A gets busy"),
          (T0 + 20, "recovered", "")]
SITES = {"a1": "site-A", "a2": "site-A", "b1": "site-B"}


def ev(dt: float, session: int, index: int, instance: str | None, latency: float = 10.0, *,
       error: str | None = None) -> RequestEvent:
    return RequestEvent(T0 + dt, session, index, instance, latency, error is None, error)


def story() -> list[RequestEvent]:
    """Steady: 2 A, 2 B. Spike: 1 A, 3 B (one 503, one moved). Recovered: 1 A, 1 connect refused."""
    return [
        ev(1, 1, 0, "a1", 10), ev(2, 1, 1, "a1", 12), ev(3, 2, 0, "a2", 14), ev(4, 3, 0, "b1", 16),
        ev(5, 4, 0, "b1", 18), ev(11, 4, 1, "b1", 20),
        ev(12, 5, 0, "a1", 100), ev(13, 6, 0, "b1", 30), ev(14, 7, 0, "b1", 40, error="status 503"),
        ev(15, 8, 0, "b1", 50), ev(16, 8, 1, "a2", 60),
        ev(21, 9, 0, "a2", 5), ev(22, 10, 0, None, 0, error="connect refused"),
    ]


def summary_rows(markdown: str) -> dict[str, list[str]]:
    section = markdown.split("## Summary")[1].split("## Phases", maxsplit=1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows}


def test_phase_stats_per_site() -> None:
    steady, spike, recovered = phase_stats(story(), PHASES, sites=SITES)
    assert (steady.start, steady.end, spike.end) == (T0, T0 + 10, T0 + 20)
    assert steady.stats.new_sessions == {"site-A": 2, "site-B": 2}
    assert spike.stats.new_sessions == {"site-A": 1, "site-B": 3}
    assert spike.stats.shares == {"site-A": 0.25, "site-B": 0.75}
    assert (spike.stats.requests, spike.stats.failures, spike.stats.moves) == (6, 1, 1)
    assert recovered.stats.new_sessions == {"site-A": 1, NO_INSTANCE: 1}
    assert recovered.end > T0 + 22


def test_events_before_the_first_phase_get_their_own_row() -> None:
    rows = phase_stats([ev(-3, 1, 0, "a1"), *story()], PHASES, sites=SITES)
    assert rows[0].name == BEFORE and rows[0].stats.requests == 1 and rows[0].end == T0


def test_markdown_shows_the_aggregated_numbers() -> None:
    rows = phase_stats(story(), PHASES, sites=SITES)
    markdown = render_markdown(rows, title="Story", t0=T0, plots=["share.png"])
    table = summary_rows(markdown)
    header = ["from (s)", "length (s)", "new sessions", "share site-A", "share site-B", f"share {NO_INSTANCE}",
              "p50 (ms)", "p99 (ms)", "failed requests", "moved sessions"]
    assert table["phase"] == header
    assert table["steady"] == ["0.0", "10.0", "4", "50.0 %", "50.0 %", "0.0 %", "14.0", "18.0", "0", "0"]
    # spike: ok latencies 20, 30, 50, 60, 100 (the 503 is left out)
    assert table["spike"] == ["10.0", "10.0", "4", "25.0 %", "75.0 %", "0.0 %", "50.0", "100.0", "1", "1"]
    assert table["recovered"][2:5] == ["2", "50.0 %", "0.0 %"]
    assert "Requests: 6, failed: 1 (status 503 x1); moved sessions: 1; latency p50 50.0 ms, p99 100.0 ms." \
        in markdown
    assert "| site-B | 3 | 75.0 % |" in markdown
    assert "![share](share.png)" in markdown


def test_a_change_in_the_data_changes_the_report() -> None:
    events = story()
    before = render_markdown(phase_stats(events, PHASES, sites=SITES), title="x", t0=T0, plots=[])
    events[6] = replace(events[6], instance="b1")  # the spike's one new A session goes to B
    after = render_markdown(phase_stats(events, PHASES, sites=SITES), title="x", t0=T0, plots=[])
    assert summary_rows(after)["spike"][3:5] == ["0.0 %", "100.0 %"]
    assert summary_rows(before)["steady"] == summary_rows(after)["steady"]
    events[1] = replace(events[1], ok=False, error="reset")
    again = render_markdown(phase_stats(events, PHASES, sites=SITES), title="x", t0=T0, plots=[])
    assert summary_rows(again)["steady"][-2] == "1"


def test_write_report_produces_markdown_and_plots(tmp_path: Path) -> None:
    events_file = tmp_path / "events.jsonl"
    with events_file.open("w", encoding="utf-8") as stream:
        writer = JsonlWriter(stream)
        for event in story():
            writer.emit(event)
        writer.write_summary({"requests": len(story())})
    series = {"load": {"a1": [(T0 + i, 10.0 * i) for i in range(25)], "b1": [(T0 + i, 5.0) for i in range(25)]},
              "path rtt": {"site-A": [(T0 + 3, 1.5), (T0 + 1, 1.0)]}}
    files = write_report(tmp_path / "report", [events_file], PHASES, series=series, sites=SITES, title="Story")
    assert [p.name for p in files.all()] == ["report.md", "share.png", "latency.png", "load.png", "path_rtt.png"]
    for png in files.all()[1:]:
        assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5000
    markdown = files.markdown.read_text()
    assert markdown == render_markdown(phase_stats(story(), PHASES, sites=SITES), title="Story", t0=T0,
                                       plots=["share.png", "latency.png", "load.png", "path_rtt.png"],
                                       sources=["events.jsonl"])
    assert re.search(r"13 requests in 10 sessions from events\.jsonl", markdown)


def test_sessions_from_several_files_are_kept_apart(tmp_path: Path) -> None:
    paths = []
    for number, instance in enumerate(("a1", "b1")):
        path = tmp_path / f"client{number}.jsonl"
        with path.open("w", encoding="utf-8") as stream:
            JsonlWriter(stream).emit(ev(1, 1, 0, instance))  # the same session number in both files
        paths.append(path)
    files = write_report(tmp_path / "out", paths, PHASES[:1], sites=SITES)
    assert summary_rows(files.markdown.read_text())["steady"][2:5] == ["2", "50.0 %", "50.0 %"]


def test_an_empty_run_still_makes_a_report(tmp_path: Path) -> None:
    files = write_report_from_events(tmp_path, [], PHASES)
    assert summary_rows(files.markdown.read_text())["steady"][2] == "0"
    assert files.share_png.exists() and files.latency_png.exists()


def test_bad_inputs_are_reported() -> None:
    with pytest.raises(ReportError, match="at least one phase"):
        checked_phases([])
    with pytest.raises(ReportError, match="'a' and 'b' both start"):
        checked_phases([(1.0, "a", ""), (1.0, "b", "")])
    with pytest.raises(ReportError, match=r"latency\.png"):
        plot_file_names(["latency"])
    with pytest.raises(ReportError, match="'rtt/a' uses"):
        plot_file_names(["rtt/a", "rtt a"])
