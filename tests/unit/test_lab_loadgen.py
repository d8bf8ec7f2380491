"""The lab load generator (dyncast_bgp.lab.loadgen): events, aggregation, and runs against a real service."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dyncast_bgp.lab.loadgen import (
    NO_INSTANCE,
    EventFileError,
    JsonlWriter,
    LoadConfig,
    LoadGenerator,
    RequestEvent,
    ResponseError,
    Tally,
    bucketize,
    config_from_args,
    describe_error,
    parse_response_head,
    parse_target,
    percentile,
    read_events,
    run_load,
    session_facts,
    window_stats,
)
from dyncast_bgp.lab.service import Service, ServiceConfig
from dyncast_bgp.lab.service_cli import add_commands

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 30))


def ev(t: float, session: int, index: int, instance: str | None, latency: float = 10.0, *,
       error: str | None = None, client: str = "", opened: float | None = None) -> RequestEvent:
    return RequestEvent(t, session, index, instance, latency, error is None, error, client, opened)


class ListSink:
    def __init__(self) -> None:
        self.events: list[RequestEvent] = []

    def emit(self, event: RequestEvent) -> None:
        self.events.append(event)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# ---------------------------------------------------------------- events and files


def test_event_json_round_trip() -> None:
    event = ev(1700000000.123456, 7, 2, "web-a", 12.3456, client="c1")
    raw = json.loads(event.to_json())
    assert raw == {"t": 1700000000.123456, "client": "c1", "session": 7, "index": 2, "instance": "web-a",
                   "latency_ms": 12.346, "ok": True, "error": None, "opened": None}
    back = RequestEvent.from_dict(raw)
    assert back == ev(1700000000.123456, 7, 2, "web-a", 12.346, client="c1")
    opened = ev(1700000000.2, 7, 0, "web-a", client="c1", opened=1700000000.1234567)
    assert RequestEvent.from_dict(json.loads(opened.to_json())).opened == 1700000000.123457
    del raw["opened"]  # files written before the field existed
    assert RequestEvent.from_dict(raw).opened is None


@pytest.mark.parametrize(("raw", "field"), [
    ({"t": 1, "session": "x", "index": 0, "latency_ms": 1, "ok": True}, "session"),
    ({"t": 1, "session": 1, "index": 0, "latency_ms": 1, "ok": 1}, "ok"),
    ({"t": True, "session": 1, "index": 0, "latency_ms": 1, "ok": True}, "'t'"),
    ({"session": 1, "index": 0, "latency_ms": 1, "ok": True}, "'t'"),
    ({"t": 1, "session": 1, "index": 0, "latency_ms": 1, "ok": True, "opened": "x"}, "'opened'")])
def test_event_fields_are_checked(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        RequestEvent.from_dict(raw)


def test_read_events_returns_events_and_summary_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    writer = JsonlWriter(path.open("w", encoding="utf-8"))
    writer.emit(ev(1.0, 1, 0, "a"))
    assert path.read_text().count("\n") == 1  # flushed at once: another process may tail it
    writer.emit(ev(2.0, 1, 1, None, error="timeout"))
    writer.write_summary({"requests": 2})
    events, summary = read_events(path, client="f0")
    assert [e.client for e in events] == ["f0", "f0"] and events[1].error == "timeout"
    assert summary == {"requests": 2}
    with path.open("a") as stream:
        stream.write("not json\n")
    with pytest.raises(EventFileError, match=r"events\.jsonl:4:"):
        read_events(path)


# ---------------------------------------------------------------- aggregation


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None


def test_session_facts_first_instance_and_first_move() -> None:
    events = [ev(1.5, 1, 1, "a"), ev(1.0, 1, 0, "a"), ev(2.0, 1, 2, "b"), ev(3.0, 1, 3, "c"),
              ev(1.0, 2, 0, None, error="connect refused"),
              ev(1.0, 3, 0, "b", error="status 503"), ev(1.2, 3, 1, None, error="reset")]
    facts = session_facts(events)
    assert (facts[("", 1)].instance, facts[("", 1)].start, facts[("", 1)].moved_at) == ("a", 1.0, 2.0)
    assert (facts[("", 2)].instance, facts[("", 2)].moved_at) == (NO_INSTANCE, None)
    assert (facts[("", 3)].instance, facts[("", 3)].moved_at) == ("b", None)  # a reset is not a move


def test_a_session_starts_when_its_connection_was_begun() -> None:
    """The router chose the instance at the SYN; the first request follows a round trip (or more) later."""
    events = [ev(10.08, 1, 0, "c", opened=10.0), ev(10.2, 1, 1, "c", opened=10.0), ev(10.5, 2, 0, "a")]
    facts = session_facts(events)
    assert (facts[("", 1)].start, facts[("", 2)].start) == (10.0, 10.5)
    first, *_ = buckets = bucketize(events, 0.25)
    assert first.start == 10.0 and first.new_sessions == {"c": 1}
    assert sum(sum(b.new_sessions.values()) for b in buckets) == 2


def test_bucketize_counts_requests_sessions_moves_and_latency() -> None:
    events = [ev(0.0, 1, 0, "a", 10.0), ev(0.5, 1, 1, "a", 20.0), ev(1.1, 1, 2, "b", 30.0),
              ev(0.2, 2, 0, "b", 40.0), ev(1.5, 3, 0, None, error="connect timeout"),
              ev(1.9, 4, 0, "a", 50.0, error="status 503")]
    first, second = bucketize(events, 1.0)
    assert (first.start, first.end, second.end) == (0.0, 1.0, 2.0)
    assert (first.requests, first.failures, first.moves, first.new_sessions) == (3, 0, 0, {"a": 1, "b": 1})
    assert first.shares == {"a": 0.5, "b": 0.5}
    assert (first.p50_ms, first.p99_ms) == (20.0, 40.0)
    assert (second.requests, second.failures, second.moves) == (3, 2, 1)
    assert second.new_sessions == {NO_INSTANCE: 1, "a": 1}
    assert second.errors == {"connect timeout": 1, "status 503": 1}
    assert (second.p50_ms, second.p99_ms) == (30.0, 30.0)  # failed requests are not in the latency
    assert window_stats(events, 0.0, 2.0).requests == 6


def test_bucketize_with_explicit_range_and_grouping() -> None:
    events = [ev(5.0, 1, 0, "a1"), ev(5.1, 2, 0, "a2"), ev(5.2, 3, 0, "b1"), ev(9.0, 3, 1, "b1")]
    buckets = bucketize(events, 2.0, start=4.0, end=7.0)
    assert [(b.start, b.requests) for b in buckets] == [(4.0, 3), (6.0, 0)]  # 9.0 is out of range
    site = buckets[0].grouped({"a1": "site-a", "a2": "site-a", "b1": "site-b"})
    assert site.new_sessions == {"site-a": 2, "site-b": 1}
    assert site.shares == pytest.approx({"site-a": 2 / 3, "site-b": 1 / 3})
    assert buckets[1].shares == {} and buckets[1].p50_ms is None
    assert bucketize([], 1.0) == []
    with pytest.raises(ValueError, match="width"):
        bucketize(events, 0.0)


def test_tally_counts_a_move_once_per_session() -> None:
    tally = Tally()
    for event in (ev(0.0, 1, 0, "a"), ev(0.1, 1, 1, "b"), ev(0.2, 1, 2, "a"), ev(0.3, 2, 0, None, error="x")):
        tally.add(event)
    stats = tally.stats()
    assert (stats.requests, stats.failures, stats.moves, stats.new_sessions) == (4, 1, 1, {"a": 1, NO_INSTANCE: 1})


# ---------------------------------------------------------------- small parsers


def test_parse_response_head() -> None:
    status, headers = parse_response_head(b"HTTP/1.1 503 Service Unavailable\r\nX-Instance: a\r\n\r\n")
    assert (status, headers) == (503, {"x-instance": "a"})
    with pytest.raises(ResponseError, match="status line"):
        parse_response_head(b"SSH-2.0-OpenSSH\r\n\r\n")


@pytest.mark.parametrize(("exc", "connecting", "text"), [
    (TimeoutError(), True, "connect timeout"), (ConnectionRefusedError(), True, "connect refused"),
    (ConnectionResetError(), False, "reset"), (asyncio.IncompleteReadError(b"", 10), False, "closed by server"),
    (ResponseError("bad status line"), False, "bad response: bad status line"),
    (OSError(113, "No route to host"), True, "connect error: No route to host")])
def test_describe_error(exc: BaseException, connecting: bool, text: str) -> None:
    assert describe_error(exc, connecting=connecting) == text


def test_parse_target() -> None:
    assert parse_target("203.0.113.10:8080") == ("203.0.113.10", 8080)
    assert parse_target("[2001:db8::10]:80") == ("2001:db8::10", 80)
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_target("203.0.113.10")


def test_load_config_reports_every_problem() -> None:
    with pytest.raises(ValueError, match=r"rate.*requests per session.*port") as caught:
        LoadConfig(host="h", port=0, rate=0.0, requests_per_session=0)
    assert "think" not in str(caught.value)


# ---------------------------------------------------------------- runs against a real service


def test_sessions_stay_on_their_instance_and_the_summary_adds_up() -> None:
    async def scenario() -> tuple[list[RequestEvent], dict[str, Any]]:
        service = Service(ServiceConfig(name="web-a", port=0, capacity=8, service_ms=2.0))
        await service.start()
        sink = ListSink()
        config = LoadConfig(host="127.0.0.1", port=service.port, rate=40.0, requests_per_session=3, think_ms=20.0,
                            duration_s=0.5, seed=3)
        try:
            summary = await LoadGenerator(config, sink=sink).run()
        finally:
            await service.stop()
        return sink.events, summary

    events, summary = run(scenario())
    sessions = {e.session for e in events}
    assert len(sessions) >= 5 and all(e.ok and e.instance == "web-a" for e in events)
    assert len(events) == 3 * len(sessions)  # sessions started in the duration run to their end
    opened = {e.session: e.opened for e in events}
    assert all(e.opened == opened[e.session] and e.opened is not None and e.opened <= e.t for e in events)
    assert summary["sessions_started"] == summary["sessions_completed"] == len(sessions)
    assert summary["requests"] == summary["ok"] == len(events)
    assert summary["moved_sessions"] == 0 and summary["failed"] == 0
    assert summary["new_sessions"] == {"web-a": len(sessions)}
    assert summary["p50_ms"] <= summary["p99_ms"]


def test_stop_ends_sessions_after_their_request_in_flight() -> None:
    async def scenario() -> tuple[list[RequestEvent], dict[str, Any]]:
        service = Service(ServiceConfig(name="web-a", port=0, capacity=8, service_ms=2.0))
        await service.start()
        sink = ListSink()
        config = LoadConfig(host="127.0.0.1", port=service.port, rate=50.0, requests_per_session=1000,
                            think_ms=10.0, seed=1)
        generator = LoadGenerator(config, sink=sink)
        try:
            running = asyncio.create_task(generator.run())
            await asyncio.sleep(0.4)
            generator.stop()
            summary = await asyncio.wait_for(running, 5.0)
        finally:
            await service.stop()
        return sink.events, summary

    events, summary = run(scenario())
    assert summary["sessions_started"] == summary["sessions_stopped"] > 0
    assert summary["sessions_cut_after_grace"] == 0 and summary["failed"] == 0
    assert summary["requests"] == len(events)


def test_refused_connections_are_recorded_not_dropped(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        stream = io.StringIO()
        config = LoadConfig(host="127.0.0.1", port=closed_port(), rate=50.0, requests_per_session=3,
                            duration_s=0.3, seed=2)
        writer = JsonlWriter(stream)
        summary = await LoadGenerator(config, sink=writer).run()
        writer.write_summary(summary)
        (tmp_path / "e.jsonl").write_text(stream.getvalue())
        return summary

    summary = run(scenario())
    events, stored = read_events(tmp_path / "e.jsonl")
    assert stored == summary
    assert events and all(e.error == "connect refused" and e.instance is None and e.index == 0 for e in events)
    assert summary["sessions_ended_by_error"] == summary["sessions_started"] == len(events)
    assert summary["new_sessions"] == {NO_INSTANCE: len(events)}


def test_a_failed_instance_shows_as_503_with_its_name() -> None:
    async def scenario() -> list[RequestEvent]:
        service = Service(ServiceConfig(name="web-b", port=0, capacity=4, service_ms=1.0))
        await service.start()
        service.fail()
        sink = ListSink()
        config = LoadConfig(host="127.0.0.1", port=service.port, rate=30.0, requests_per_session=2, think_ms=5.0,
                            duration_s=0.3, seed=4)
        try:
            await LoadGenerator(config, sink=sink).run()
        finally:
            await service.stop()
        return sink.events

    events = run(scenario())
    assert events and all(e.error == "status 503" and e.instance == "web-b" and not e.ok for e in events)
    assert len(events) == 2 * len({e.session for e in events})  # a 503 does not end the session


def test_cli_arguments_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["load", "--target", "203.0.113.10:8080", "--rate", "20", "--requests-per-session", "5",
                              "--think-ms", "200", "--duration", "30", "--out", "x.jsonl", "--seed", "9",
                              "--timeout", "1.5"])
    assert callable(args.handler)
    assert config_from_args(args) == LoadConfig(host="203.0.113.10", port=8080, rate=20.0, requests_per_session=5,
                                                think_ms=200.0, duration_s=30.0, seed=9, connect_timeout_s=1.5,
                                                request_timeout_s=1.5)
    bad = parser.parse_args(["load", "--target", "nowhere", "--out", "-"])
    assert run_load(bad) == 2


DRIVER = """
import argparse, sys
from dyncast_bgp.lab.service_cli import add_commands
parser = argparse.ArgumentParser()
add_commands(parser.add_subparsers())
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


def test_sigterm_ends_the_run_with_a_summary_line(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    argv = [sys.executable, "-c", DRIVER, "load", "--target", f"127.0.0.1:{closed_port()}", "--rate", "50",
            "--out", str(out), "--seed", "1", "--log-level", "warning"]
    with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as process:
        try:
            deadline = time.monotonic() + 20
            while not (out.exists() and out.read_text().count("\n") >= 3):  # events arrive while it runs
                assert process.poll() is None and time.monotonic() < deadline, process.stderr
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(10) == 0
        finally:
            if process.poll() is None:
                process.kill()
    events, summary = read_events(out)
    assert summary is not None and summary["requests"] == len(events) >= 3
    assert summary["errors"] == {"connect refused": len(events)}
