"""A client load generator for the lab, and the pure aggregation of what it records.

New sessions arrive at a Poisson rate (seeded). A session is one TCP connection
doing ``requests_per_session`` HTTP/1.1 requests over keep-alive with a think
time between them, so it lives long enough to check that existing flows stay
on their instance. Every request becomes one :class:`RequestEvent`, written as
a JSON line and flushed at once (another process may tail the file); a final
``{"summary": {...}}`` line closes the file.

A session whose ``X-Instance`` changes between requests is MOVED. That should
never happen: with TCP a real move shows up as a reset, so it is counted apart.

The aggregation (:func:`session_facts`, :func:`window_stats`, :func:`bucketize`,
:class:`Tally`) is pure: events in, numbers out, no clock and no I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TextIO

import structlog

NO_INSTANCE = "(none)"
"""The instance of a session whose first request got no answer naming one (connect refused, timeout...)."""

SessionKey = tuple[str, int]

log = structlog.get_logger("dyncast.lab.loadgen")


class EventFileError(ValueError):
    """A line of an events file is not an event; the message says which file and line."""


class ResponseError(Exception):
    """The server's response head could not be read as HTTP/1.x."""


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class RequestEvent:
    """One request: ``t`` is the wall time it was sent (``time.time()``), ``latency_ms`` request to full response.

    ``opened`` is the wall time the session's connection was begun (its SYN),
    the moment the router chose its instance; the first request follows it
    by a round trip or more. None in files written before it was recorded.
    """

    t: float
    session: int
    index: int
    instance: str | None
    latency_ms: float
    ok: bool
    error: str | None = None
    client: str = ""
    opened: float | None = None

    @property
    def key(self) -> SessionKey:
        return (self.client, self.session)

    @property
    def began(self) -> float:
        """The earliest moment the event speaks of: its session's connection begun, if recorded, else its send."""
        return self.t if self.opened is None else min(self.opened, self.t)

    def to_json(self) -> str:
        return json.dumps({"t": round(self.t, 6), "client": self.client, "session": self.session,
                           "index": self.index, "instance": self.instance, "latency_ms": round(self.latency_ms, 3),
                           "ok": self.ok, "error": self.error,
                           "opened": None if self.opened is None else round(self.opened, 6)},
                          separators=(",", ":"))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> RequestEvent:
        """Build from a parsed JSON line; raises ValueError naming the bad field."""
        def typed(name: str, kinds: tuple[type, ...], *, optional: bool = False) -> Any:
            value = raw.get(name)
            if value is None and optional:
                return None
            if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
                raise ValueError(f"field {name!r}: expected {'/'.join(k.__name__ for k in kinds)}, got {value!r}")
            return value

        return cls(t=float(typed("t", (int, float))), session=typed("session", (int,)), index=typed("index", (int,)),
                   instance=typed("instance", (str,), optional=True),
                   latency_ms=float(typed("latency_ms", (int, float))), ok=typed("ok", (bool,)),
                   error=typed("error", (str,), optional=True), client=raw.get("client") or "",
                   opened=_optional_float(typed("opened", (int, float), optional=True)))


def _optional_float(value: int | float | None) -> float | None:
    return None if value is None else float(value)


def read_events(path: str | Path, *, client: str | None = None) -> tuple[list[RequestEvent], dict[str, Any] | None]:
    """Events and the summary (None if the run did not finish) of one JSONL file.

    ``client`` replaces an empty client name, so sessions from several files
    stay apart. Raises :class:`EventFileError` with ``file:line`` on a bad line.
    """
    events: list[RequestEvent] = []
    summary: dict[str, Any] | None = None
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    raise ValueError("not a JSON object")
                if "summary" in raw:
                    summary = raw["summary"]
                    continue
                event = RequestEvent.from_dict(raw)
            except ValueError as exc:
                raise EventFileError(f"{path}:{number}: {exc}") from None
            events.append(replace(event, client=client) if client is not None and not event.client else event)
    return events, summary


# ---------------------------------------------------------------- pure aggregation


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile ``q`` (0..100] of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class SessionFacts:
    """When a session started (its connection was begun, else its first request), on which instance (its first
    request's), and when it was first seen moved."""

    start: float
    instance: str
    moved_at: float | None


def session_facts(events: Iterable[RequestEvent]) -> dict[SessionKey, SessionFacts]:
    by_session: dict[SessionKey, list[RequestEvent]] = {}
    for event in events:
        by_session.setdefault(event.key, []).append(event)
    facts = {}
    for key, session in by_session.items():
        session.sort(key=lambda e: (e.index, e.t))
        first = session[0]
        facts[key] = SessionFacts(first.began, first.instance or NO_INSTANCE, _moved_at(session))
    return facts


def _moved_at(ordered: Sequence[RequestEvent]) -> float | None:
    seen: str | None = None
    for event in ordered:
        if event.instance is None:
            continue
        if seen is not None and event.instance != seen:
            return event.t
        seen = event.instance
    return None


@dataclass(frozen=True)
class WindowStats:
    """What happened in ``[start, end)``: requests by their time, sessions by their start, moves when seen."""

    start: float
    end: float
    requests: int
    failures: int
    new_sessions: dict[str, int]
    moves: int
    p50_ms: float | None
    p99_ms: float | None
    errors: dict[str, int]

    @property
    def sessions(self) -> int:
        return sum(self.new_sessions.values())

    @property
    def shares(self) -> dict[str, float]:
        """Share of new sessions per instance (or site); empty when no session started."""
        total = self.sessions
        return {name: count / total for name, count in sorted(self.new_sessions.items())} if total else {}

    def grouped(self, groups: Mapping[str, str]) -> WindowStats:
        """The same window with instances summed into groups (sites); unmapped instances keep their name."""
        merged: dict[str, int] = {}
        for instance, count in self.new_sessions.items():
            group = groups.get(instance, instance)
            merged[group] = merged.get(group, 0) + count
        return replace(self, new_sessions=merged)


@dataclass
class _Accumulator:
    requests: int = 0
    failures: int = 0
    moves: int = 0
    latencies: list[float] = field(default_factory=list)
    new_sessions: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add_request(self, event: RequestEvent) -> None:
        self.requests += 1
        if event.ok:
            self.latencies.append(event.latency_ms)
        else:
            self.failures += 1
            kind = event.error or "failed"
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def add_session(self, instance: str) -> None:
        self.new_sessions[instance] = self.new_sessions.get(instance, 0) + 1

    def finish(self, start: float, end: float) -> WindowStats:
        ordered = sorted(self.latencies)
        return WindowStats(start, end, self.requests, self.failures, dict(self.new_sessions), self.moves,
                           percentile(ordered, 50), percentile(ordered, 99), dict(self.errors))


def window_stats(events: Sequence[RequestEvent], start: float, end: float,
                 facts: Mapping[SessionKey, SessionFacts] | None = None) -> WindowStats:
    """Stats of ``[start, end)``; pass ``facts`` from all events when ``events`` is a part of a run."""
    facts = session_facts(events) if facts is None else facts
    acc = _Accumulator()
    for event in events:
        if start <= event.t < end:
            acc.add_request(event)
    for fact in facts.values():
        if start <= fact.start < end:
            acc.add_session(fact.instance)
        if fact.moved_at is not None and start <= fact.moved_at < end:
            acc.moves += 1
    return acc.finish(start, end)


def bucketize(events: Sequence[RequestEvent], width: float, *, start: float | None = None,
              end: float | None = None) -> list[WindowStats]:
    """Consecutive buckets of ``width`` s from ``start`` (default: first event) covering ``end`` (default: last).

    With the defaults every event, session start and move falls in exactly one bucket.
    """
    if not width > 0:
        raise ValueError(f"bucket width must be positive, got {width}")
    if not events and (start is None or end is None):
        return []
    first = min(e.began for e in events) if start is None else start
    last = max(e.t for e in events) if end is None else end
    count = max(1, math.floor((last - first) / width) + 1)
    accs = [_Accumulator() for _ in range(count)]

    def slot(t: float) -> _Accumulator | None:
        i = math.floor((t - first) / width)
        return accs[i] if 0 <= i < count else None

    for event in events:
        if (acc := slot(event.t)) is not None:
            acc.add_request(event)
    for fact in session_facts(events).values():
        if (acc := slot(fact.start)) is not None:
            acc.add_session(fact.instance)
        if fact.moved_at is not None and (acc := slot(fact.moved_at)) is not None:
            acc.moves += 1
    return [acc.finish(first + i * width, first + (i + 1) * width) for i, acc in enumerate(accs)]


class Tally:
    """Running totals of a live run; events of one session must come in request order."""

    def __init__(self) -> None:
        self._acc = _Accumulator()
        self._open: dict[SessionKey, str | None] = {}  # session -> last instance seen
        self._moved: set[SessionKey] = set()
        self.first_t: float | None = None
        self.last_t: float | None = None

    def add(self, event: RequestEvent) -> None:
        self._acc.add_request(event)
        self.first_t = event.t if self.first_t is None else min(self.first_t, event.t)
        self.last_t = event.t if self.last_t is None else max(self.last_t, event.t)
        key = event.key
        if key not in self._open:
            self._acc.add_session(event.instance or NO_INSTANCE)
            self._open[key] = event.instance
            return
        seen = self._open[key]
        if event.instance is not None:
            if seen is not None and event.instance != seen and key not in self._moved:
                self._moved.add(key)
                self._acc.moves += 1
            self._open[key] = event.instance

    def end_session(self, key: SessionKey) -> None:
        """Forget a finished session's state (its counts stay)."""
        self._open.pop(key, None)
        self._moved.discard(key)

    def stats(self) -> WindowStats:
        return self._acc.finish(self.first_t or 0.0, self.last_t or 0.0)


# ---------------------------------------------------------------- HTTP client


def parse_response_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status and lower-cased headers of a response head; raises :class:`ResponseError`."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ResponseError(f"bad status line {lines[0][:80]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, sep, value = line.partition(":")
            if not sep:
                raise ResponseError(f"bad header line {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def _content_length(headers: Mapping[str, str]) -> int:
    raw = headers.get("content-length")
    if raw is None or not raw.isdigit():
        raise ResponseError(f"missing or bad content-length {raw!r}")
    return int(raw)


def describe_error(exc: BaseException, *, connecting: bool) -> str:
    """A short, stable error text for an event: ``connect refused``, ``reset``, ``timeout``..."""
    prefix = "connect " if connecting else ""
    if isinstance(exc, TimeoutError):
        return prefix + "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return prefix + "refused"
    if isinstance(exc, ConnectionResetError | BrokenPipeError):
        return prefix + "reset"
    if isinstance(exc, asyncio.IncompleteReadError):
        return prefix + "closed by server"
    if isinstance(exc, ResponseError | asyncio.LimitOverrunError):
        return f"bad response: {exc}"
    if isinstance(exc, OSError):
        return f"{prefix}error: {exc.strerror or exc}"
    return f"{prefix}error: {type(exc).__name__}: {exc}"


# ---------------------------------------------------------------- the generator


@dataclass(frozen=True)
class LoadConfig:
    host: str
    port: int
    rate: float = 10.0
    requests_per_session: int = 10
    think_ms: float = 100.0
    duration_s: float = 0.0
    seed: int | None = None
    connect_timeout_s: float = 2.0
    request_timeout_s: float = 5.0
    max_open_sessions: int = 5000
    client: str = ""
    path: str = "/"

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.rate) and self.rate > 0):
            problems.append(f"rate must be a positive number of sessions/s, got {self.rate}")
        if self.requests_per_session < 1:
            problems.append(f"requests per session must be at least 1, got {self.requests_per_session}")
        if not (math.isfinite(self.think_ms) and self.think_ms >= 0):
            problems.append(f"think time must be >= 0 ms, got {self.think_ms}")
        if not (math.isfinite(self.duration_s) and self.duration_s >= 0):
            problems.append(f"duration must be >= 0 s (0: until stopped), got {self.duration_s}")
        for name in ("connect_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if self.max_open_sessions < 1:
            problems.append(f"max open sessions must be at least 1, got {self.max_open_sessions}")
        if not 0 < self.port <= 65535:
            problems.append(f"port must be 1..65535, got {self.port}")
        if problems:
            raise ValueError("; ".join(problems))


class EventSink(Protocol):
    def emit(self, event: RequestEvent) -> None: ...


class JsonlWriter:
    """Writes each event as one JSON line and flushes, so the file can be tailed; then one summary line."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def emit(self, event: RequestEvent) -> None:
        self._stream.write(event.to_json() + "\n")
        self._stream.flush()

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        self._stream.write(json.dumps({"summary": summary}, separators=(",", ":")) + "\n")
        self._stream.flush()


@dataclass
class _SessionCounts:
    started: int = 0
    completed: int = 0
    ended_by_error: int = 0
    stopped: int = 0
    cut: int = 0
    skipped: int = 0


class LoadGenerator:
    """Opens sessions until the duration is over or :meth:`stop`; ``await run()`` returns the summary.

    At the end of the duration open sessions run to their end; after :meth:`stop`
    they end after their request in flight. Either way a session still open
    after a grace period is cancelled and counted as cut.
    """

    def __init__(self, config: LoadConfig, *, sink: EventSink, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self._sink = sink
        self._clock = clock
        self._rng = random.Random(config.seed)
        self._stopping = asyncio.Event()
        self._tally = Tally()
        self._counts = _SessionCounts()
        self._request = (f"GET {config.path} HTTP/1.1\r\nHost: {config.host}:{config.port}\r\n"
                         "Connection: keep-alive\r\n\r\n").encode("latin-1")

    def stop(self) -> None:
        """Open no new session; open sessions end after their request in flight."""
        self._stopping.set()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        began = loop.time()
        tasks: set[asyncio.Task[None]] = set()
        await self._arrivals(tasks)
        await self._drain(set(tasks))
        return self.summary(loop.time() - began)

    async def _drain(self, pending: set[asyncio.Task[None]]) -> None:
        """Let open sessions end (all their requests, or one more after a stop), then cancel the rest."""
        loop = asyncio.get_running_loop()
        cfg = self.config
        per_request = cfg.think_ms / 1000.0 + cfg.request_timeout_s
        end = loop.time() + cfg.connect_timeout_s + per_request * cfg.requests_per_session
        stop = asyncio.create_task(self._stopping.wait())
        try:
            while pending and not self._stopping.is_set() and (left := end - loop.time()) > 0:
                done, _ = await asyncio.wait(pending | {stop}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                pending -= done
            if pending and self._stopping.is_set():
                _, pending = await asyncio.wait(pending, timeout=cfg.connect_timeout_s + per_request)
        finally:
            stop.cancel()
        self._stopping.set()
        for task in pending:
            task.cancel()
        self._counts.cut += len(pending)
        await asyncio.gather(*pending, return_exceptions=True)

    async def _arrivals(self, tasks: set[asyncio.Task[None]]) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        deadline = next_at + self.config.duration_s if self.config.duration_s > 0 else math.inf
        number = 0
        while not self._stopping.is_set():
            next_at += self._rng.expovariate(self.config.rate)
            if next_at >= deadline:
                return
            if (delay := next_at - loop.time()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                    return
            if len(tasks) >= self.config.max_open_sessions:
                self._counts.skipped += 1
                continue
            number += 1
            task = asyncio.create_task(self._session(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        stats = self._tally.stats()
        counts = self._counts
        return {
            "sessions_started": counts.started, "sessions_completed": counts.completed,
            "sessions_ended_by_error": counts.ended_by_error, "sessions_stopped": counts.stopped,
            "sessions_cut_after_grace": counts.cut,
            "sessions_skipped_over_limit": counts.skipped,
            "requests": stats.requests, "ok": stats.requests - stats.failures, "failed": stats.failures,
            "errors": stats.errors, "moved_sessions": stats.moves, "new_sessions": stats.new_sessions,
            "p50_ms": stats.p50_ms, "p99_ms": stats.p99_ms,
            "elapsed_s": round(elapsed_s, 3),
            "request_rate": round(stats.requests / elapsed_s, 1) if elapsed_s > 0 else None,
        }

    def _emit(self, event: RequestEvent) -> None:
        self._tally.add(event)
        self._sink.emit(event)

    async def _session(self, number: int) -> None:
        self._counts.started += 1
        cfg = self.config
        t = self._clock()
        try:
            async with asyncio.timeout(cfg.connect_timeout_s):
                reader, writer = await asyncio.open_connection(cfg.host, cfg.port)
        except (OSError, TimeoutError) as exc:
            error = describe_error(exc, connecting=True)
            self._emit(RequestEvent(t, number, 0, None, 0.0, False, error, cfg.client, t))
            self._counts.ended_by_error += 1
            self._tally.end_session((cfg.client, number))
            return
        done = 0
        try:
            done = await self._requests(number, t, reader, writer)
        finally:
            writer.close()
            self._tally.end_session((cfg.client, number))
            if done == cfg.requests_per_session:
                self._counts.completed += 1
            elif self._stopping.is_set():
                self._counts.stopped += 1
            else:
                self._counts.ended_by_error += 1  # an error, or the server closed the connection

    async def _requests(self, number: int, opened: float, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> int:
        """Run the session's requests; returns how many were answered on a usable connection."""
        for index in range(self.config.requests_per_session):
            if index:
                await asyncio.sleep(self.config.think_ms / 1000.0)
                if self._stopping.is_set():
                    return index
            event, usable = await self._one(number, opened, index, reader, writer)
            self._emit(event)
            if not usable:
                return index
        return self.config.requests_per_session

    async def _one(self, number: int, opened: float, index: int, reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> tuple[RequestEvent, bool]:
        """One request; the flag says whether the connection can carry another."""
        t = self._clock()
        began = time.perf_counter()
        status: int | None = None
        instance: str | None = None
        keep = False
        try:
            async with asyncio.timeout(self.config.request_timeout_s):
                writer.write(self._request)
                await writer.drain()
                status, headers = parse_response_head(await reader.readuntil(b"\r\n\r\n"))
                instance = headers.get("x-instance")
                await reader.readexactly(_content_length(headers))
                keep = "close" not in headers.get("connection", "").lower()
            error = None if status == 200 else f"status {status}"
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ResponseError) as exc:
            error, keep = describe_error(exc, connecting=False), False
        latency = (time.perf_counter() - began) * 1000.0
        return RequestEvent(t, number, index, instance, latency, error is None, error, self.config.client,
                            opened), keep


# ---------------------------------------------------------------- process entry


def parse_target(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target must be HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    host, port = parse_target(args.target)
    return LoadConfig(host=host, port=port, rate=args.rate, requests_per_session=args.requests_per_session,
                      think_ms=args.think_ms, duration_s=args.duration, seed=args.seed,
                      connect_timeout_s=args.timeout, request_timeout_s=args.timeout,
                      client=getattr(args, "client", "") or "")


async def generate(config: LoadConfig, stream: TextIO) -> dict[str, Any]:
    """Run until the duration ends or SIGTERM/SIGINT, writing events and the summary to ``stream``."""
    writer = JsonlWriter(stream)
    generator = LoadGenerator(config, sink=writer)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, generator.stop)
    try:
        summary = await generator.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    writer.write_summary(summary)
    return summary


def run_load(args: argparse.Namespace) -> int:
    """The ``load`` command: 0 when done, 1 when the output cannot be written, 2 for bad parameters."""
    from dyncast_bgp.lab.service import run_loop  # noqa: PLC0415 - shares the loop choice

    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"dyncast lab load: {exc}", file=sys.stderr)
        return 2
    try:
        stream: TextIO = sys.stdout if args.out == "-" else open(args.out, "w", encoding="utf-8")  # noqa: SIM115
    except OSError as exc:
        print(f"dyncast lab load: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
        return 1

    async def main() -> int:
        summary = await generate(config, stream)
        log.info("load_done", **summary)
        return 0

    try:
        return run_loop(main())
    finally:
        if stream is not sys.stdout:
            stream.close()
