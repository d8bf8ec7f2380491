"""A lab service instance: HTTP/1.1 on asyncio streams whose response time grows with load.

The model is a queue with ``capacity`` workers. A request waits for a free
worker, then holds it for its service time (fixed, or exponential with a seed).
Nothing burns CPU: the worker just sleeps, so a small host can run many
instances and the queueing is what makes overload visible.

Endpoints (any method is accepted on the service path):

- ``GET /`` and every path not listed below: JSON ``{"instance", "queue_ms", "service_ms"}``
  with header ``X-Instance``; 503 while failed.
- ``GET /metrics``: JSON whose keys are the project's metric names
  (``cpu_utilization``, ``active_sessions``, ``queued_requests``, ``service_delay``,
  ``capacity``) plus ``requests_total`` and ``errors_total``; see :meth:`Service.metrics`.
  ``active_sessions`` counts the open connections but the one asking (a scrape is no session; another
  scraper's connection open at that moment still counts, which can only delay a drain's end).
- ``GET /health``: 200 ``ok``, 503 while failed.
- ``POST /admin/errors?share=S``: answer that share of requests (evenly spread) with 500 after
  doing the work, while ``/health`` stays ok: a broken release that is still up (``error_rate``
  on ``/metrics`` shows it: errors over the last ``delay_window_s``).
- ``POST /admin/fail``, ``POST /admin/recover``, ``POST /admin/load?busy=N``: N synthetic
  busy workers held until set again (0 clears); they raise ``cpu_utilization`` and take
  workers away from real requests.

Every response carries ``X-Instance``, so a client can tell who refused it.

With ``--udp ADDR`` the instance also answers UDP requests on ADDR
(:mod:`dyncast_bgp.lab.udpservice`), counted in ``requests_total`` and silent
while failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import structlog

from dyncast_bgp.agent.echo import EchoError, serve_echo
from dyncast_bgp.config.schema import EchoResponder
from dyncast_bgp.lab.udpservice import UdpServiceError, serve_udp

Distribution = Literal["fixed", "exponential"]
DISTRIBUTIONS: tuple[Distribution, ...] = ("fixed", "exponential")
MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 413: "Payload Too Large",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           503: "Service Unavailable"}

log = structlog.get_logger("dyncast.lab.service")


class ServiceConfigError(ValueError):
    """A service parameter is out of range; the message names it."""


class BadRequest(Exception):  # noqa: N818 - it is an HTTP status, not a programming error
    """The request cannot be served; carries the HTTP status to answer with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class ServiceConfig:
    """One instance. ``window_s`` is the utilisation window, ``delay_window_s`` the delay window."""

    name: str
    host: str = "127.0.0.1"
    port: int = 8080
    capacity: int = 4
    service_ms: float = 50.0
    distribution: Distribution = "fixed"
    seed: int | None = None
    window_s: float = 1.0
    delay_window_s: float = 2.0
    idle_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        problems = []
        if not self.name:
            problems.append("name must not be empty")
        if not 0 <= self.port <= 65535:
            problems.append(f"port must be 0..65535, got {self.port}")
        if self.capacity < 1:
            problems.append(f"capacity must be at least 1 worker, got {self.capacity}")
        if not (math.isfinite(self.service_ms) and self.service_ms > 0):
            problems.append(f"service_ms must be a positive number, got {self.service_ms}")
        if self.distribution not in DISTRIBUTIONS:
            problems.append(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}")
        for name in ("window_s", "delay_window_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be positive, got {getattr(self, name)}")
        if problems:
            raise ServiceConfigError("; ".join(problems))

    @property
    def nominal_rate(self) -> int:
        """Requests per second the workers sustain at the mean service time."""
        return round(self.capacity * 1000.0 / self.service_ms)


# ---------------------------------------------------------------- pure parts


class ServiceTimes:
    """Service times in ms: always the mean (fixed) or exponential draws from a seeded generator."""

    def __init__(self, mean_ms: float, distribution: Distribution, seed: int | None) -> None:
        self.mean_ms = mean_ms
        self._distribution = distribution
        self._rng = random.Random(seed)

    def draw(self) -> float:
        if self._distribution == "fixed":
            return self.mean_ms
        return self._rng.expovariate(1.0 / self.mean_ms)


class BusyWindow:
    """Time-weighted mean of a step function (busy workers) over the last ``window`` seconds.

    Before the first change the level is taken to have been the initial one for
    the whole window, so a fresh instance reads 0, not an undefined value.
    """

    def __init__(self, window: float, now: float, level: float = 0.0) -> None:
        self._window = window
        self._steps: deque[tuple[float, float]] = deque([(now - window, level)])
        self._latest = now

    def set(self, now: float, level: float) -> None:
        if now < self._latest:
            raise ValueError(f"time went backwards: {now} < {self._latest}")
        self._latest = now
        if level != self._steps[-1][1]:
            self._steps.append((now, level))
        self._prune(now)

    def mean(self, now: float) -> float:
        self._latest = max(self._latest, now)
        self._prune(now)
        start = now - self._window
        total = 0.0
        steps = list(self._steps)
        for i, (t, level) in enumerate(steps):
            t_end = steps[i + 1][0] if i + 1 < len(steps) else now
            total += level * max(0.0, min(t_end, now) - max(t, start))
        return total / self._window

    def _prune(self, now: float) -> None:
        start = now - self._window
        while len(self._steps) > 1 and self._steps[1][0] <= start:
            self._steps.popleft()


def estimated_delay_us(completed_ms: list[float], waiting_ages_ms: list[float], mean_service_ms: float) -> int:
    """Mean response time in µs over recent requests.

    Completed requests count with their total time; a request still waiting for
    a worker counts as its age so far plus one mean service time (a lower bound),
    so a stalled instance reads slow instead of idle. With nothing to go on, one
    mean service time.
    """
    samples = completed_ms + [age + mean_service_ms for age in waiting_ages_ms]
    mean_ms = sum(samples) / len(samples) if samples else mean_service_ms
    return round(mean_ms * 1000.0)


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    version: str
    headers: dict[str, str]

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection

    @property
    def content_length(self) -> int:
        if "transfer-encoding" in self.headers:
            raise BadRequest(501, "transfer-encoding is not supported")
        raw = self.headers.get("content-length", "0").strip()
        if not raw.isdigit():
            raise BadRequest(400, f"bad content-length {raw[:40]!r}")
        length = int(raw)
        if length > MAX_BODY:
            raise BadRequest(413, f"body of {length} bytes exceeds {MAX_BODY}")
        return length


def parse_request_head(head: bytes) -> Request:
    """Parse a request line and headers (ending with an empty line); raises :class:`BadRequest`."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes every byte
        raise BadRequest(400, str(exc)) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or parts[2] not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(400, f"bad request line {lines[0][:80]!r}")
    method, target, version = parts
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, f"bad header line {line[:80]!r}")
        headers[name.lower()] = value.strip()
    url = urlsplit(target)
    return Request(method.upper(), url.path or "/", parse_qs(url.query), version, headers)


def render_response(status: int, body: bytes, *, instance: str, keep_alive: bool,
                    content_type: str = "application/json") -> bytes:
    head = (f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"X-Instance: {instance}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode("latin-1") + body


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


# ---------------------------------------------------------------- workers


class WorkerPool:
    """``capacity`` workers handed out first come, first served; some may be reserved (synthetic load).

    Reserving more workers than are free leaves the pool over-committed until
    real requests finish: nobody is pre-empted, new requests just queue.
    ``on_change`` is called whenever the number of busy workers may have changed.
    """

    def __init__(self, capacity: int, on_change: Callable[[], None]) -> None:
        self.capacity = capacity
        self.reserved = 0
        self.running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._on_change = on_change

    @property
    def busy(self) -> int:
        return min(self.capacity, self.running + self.reserved)

    @property
    def queued(self) -> int:
        return len(self._waiters)

    def _free(self) -> int:
        return self.capacity - self.reserved - self.running

    async def acquire(self) -> None:
        if self._free() > 0 and not self._waiters:
            self.running += 1
            self._on_change()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a worker in the same tick it was cancelled: give it back
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        if self.running < 1:
            raise RuntimeError("release() without a matching acquire()")
        self.running -= 1
        self._wake()
        self._on_change()

    def reserve(self, count: int) -> None:
        if not 0 <= count <= self.capacity:
            raise ValueError(f"busy must be 0..{self.capacity}, got {count}")
        self.reserved = count
        self._wake()
        self._on_change()

    def _wake(self) -> None:
        while self._waiters and self._free() > 0:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.running += 1
                waiter.set_result(None)


# ---------------------------------------------------------------- the service


@dataclass
class _Counters:
    requests_total: int = 0
    errors_total: int = 0
    connections: int = 0
    completed: deque[tuple[float, float]] = field(default_factory=deque)  # (done at, total ms)
    outcomes: deque[tuple[float, bool]] = field(default_factory=deque)  # (answered at, was an error)
    waiting: dict[int, float] = field(default_factory=dict)  # request number -> queued at


class Service:
    """One instance; ``await start()`` binds (port 0 picks a free one, see :attr:`port`), ``await stop()`` ends."""

    def __init__(self, config: ServiceConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.failed = False
        self.error_share = 0.0  # /admin/errors: the share of requests answered 500 while /health stays ok
        self._answered = 0
        self._clock = clock
        self._times = ServiceTimes(config.service_ms, config.distribution, config.seed)
        self._busy = BusyWindow(config.window_s, clock())
        self._pool = WorkerPool(config.capacity, self._busy_changed)
        self._counters = _Counters()
        self._numbers = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("service is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self._server is not None:
            raise RuntimeError("service already started")
        self._stopping = False
        self._server = await asyncio.start_server(self._connection, self.config.host, self.config.port,
                                                  limit=MAX_HEAD, backlog=1024)
        log.info("service_listening", instance=self.config.name, host=self.config.host, port=self.port,
                 capacity=self.config.capacity, service_ms=self.config.service_ms)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()
        log.info("service_stopped", instance=self.config.name)

    # -------------------------------------------------------------- admin, also callable in-process

    def fail(self) -> None:
        self.failed = True
        log.info("service_failed", instance=self.config.name)

    def recover(self) -> None:
        self.failed = False
        log.info("service_recovered", instance=self.config.name)

    def udp_request(self) -> bool:
        """Count one UDP request (``--udp``); False while failed: the request is an error, left unanswered."""
        counters = self._counters
        counters.requests_total += 1
        counters.outcomes.append((self._clock(), self.failed))
        if self.failed:
            counters.errors_total += 1
        return not self.failed

    def set_load(self, busy: int) -> None:
        """Hold ``busy`` workers (0..capacity) until set again; raises ValueError out of range."""
        self._pool.reserve(busy)
        log.info("service_load_set", instance=self.config.name, busy=busy)

    def metrics(self) -> dict[str, float | int]:
        """The ``/metrics`` document; ``service_delay`` in µs, ``capacity`` in requests/s."""
        now = self._clock()
        counters = self._counters
        while counters.completed and counters.completed[0][0] < now - self.config.delay_window_s:
            counters.completed.popleft()
        while counters.outcomes and counters.outcomes[0][0] < now - self.config.delay_window_s:
            counters.outcomes.popleft()
        errors = sum(1 for _, error in counters.outcomes if error)
        ages = [(now - t) * 1000.0 for t in counters.waiting.values()]
        delay = estimated_delay_us([ms for _, ms in counters.completed], ages, self.config.service_ms)
        utilization = 100.0 * self._busy.mean(now) / self.config.capacity
        return {
            "cpu_utilization": round(min(100.0, max(0.0, utilization)), 3),
            "active_sessions": counters.connections,
            "queued_requests": self._pool.queued,
            "service_delay": delay,
            "error_rate": round(100.0 * errors / len(counters.outcomes), 3) if counters.outcomes else 0.0,
            "capacity": self.config.nominal_rate,
            "requests_total": counters.requests_total,
            "errors_total": counters.errors_total,
            "busy_workers": self._pool.busy,
            "synthetic_busy": self._pool.reserved,
        }

    # -------------------------------------------------------------- connections

    def _busy_changed(self) -> None:
        self._busy.set(self._clock(), self._pool.busy)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._counters.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass  # the client went away mid-request: nothing to answer
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled us: end normally, asyncio's stream callback cannot handle a cancelled task
        finally:
            self._counters.connections -= 1
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                async with asyncio.timeout(self.config.idle_timeout_s):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # closed between requests (or mid-head): the normal end of a keep-alive session
            except TimeoutError:
                return
            except asyncio.LimitOverrunError:
                await self._refuse(writer, BadRequest(431, f"request head exceeds {MAX_HEAD} bytes"))
                return
            try:
                request = parse_request_head(head)
                await reader.readexactly(request.content_length)
            except BadRequest as exc:
                await self._refuse(writer, exc)
                return
            status, body = await self._dispatch(request)
            content_type = "application/json" if body.startswith(b"{") else "text/plain"
            writer.write(render_response(status, body, instance=self.config.name, keep_alive=request.keep_alive,
                                         content_type=content_type))
            await writer.drain()
            if not request.keep_alive:
                return

    async def _refuse(self, writer: asyncio.StreamWriter, error: BadRequest) -> None:
        self._counters.errors_total += 1
        log.info("service_bad_request", instance=self.config.name, status=error.status, reason=str(error))
        body = _json({"instance": self.config.name, "error": str(error)})
        writer.write(render_response(error.status, body, instance=self.config.name, keep_alive=False))
        await writer.drain()

    async def _dispatch(self, request: Request) -> tuple[int, bytes]:
        path = request.path
        if path.startswith("/admin/"):
            return self._admin(request)
        if path == "/metrics":  # asked over a connection of its own: that one is a scrape, not a session
            document = self.metrics()
            document["active_sessions"] = max(0, int(document["active_sessions"]) - 1)
            return 200, _json(document)
        if path == "/health":
            return (503, b"failed\n") if self.failed else (200, b"ok\n")
        return await self._work()

    def _admin(self, request: Request) -> tuple[int, bytes]:
        if request.method != "POST":
            return 405, _json({"error": f"{request.path} needs POST, got {request.method}"})
        if request.path == "/admin/fail":
            self.fail()
        elif request.path == "/admin/recover":
            self.recover()
        elif request.path == "/admin/load":
            values = request.query.get("busy", [])
            if len(values) != 1 or not values[0].isdigit():
                return 400, _json({"error": f"/admin/load needs busy=N (one integer 0..{self.config.capacity})"})
            try:
                self.set_load(int(values[0]))
            except ValueError as exc:
                return 400, _json({"error": str(exc)})
        elif request.path == "/admin/errors":
            values = request.query.get("share", [])
            try:
                share = float(values[0]) if len(values) == 1 else math.nan
            except ValueError:
                share = math.nan
            if not 0.0 <= share <= 1.0:
                return 400, _json({"error": "/admin/errors needs share=S (a number 0..1)"})
            self.error_share = share
            log.info("service_errors_set", instance=self.config.name, share=share)
        else:
            return 404, _json({"error": f"no admin action {request.path}"})
        return 200, _json({"instance": self.config.name, "failed": self.failed, "busy": self._pool.reserved,
                           "error_share": self.error_share})

    async def _work(self) -> tuple[int, bytes]:
        counters = self._counters
        counters.requests_total += 1
        if self.failed:
            counters.errors_total += 1
            counters.outcomes.append((self._clock(), True))
            return 503, _json({"instance": self.config.name, "error": "failed"})
        self._numbers += 1
        number = self._numbers
        queued_at = self._clock()
        counters.waiting[number] = queued_at
        try:
            await self._pool.acquire()
        finally:
            del counters.waiting[number]
        started = self._clock()
        service_ms = self._times.draw()
        try:
            await asyncio.sleep(service_ms / 1000.0)
        finally:
            self._pool.release()
        done = self._clock()
        counters.completed.append((done, (done - queued_at) * 1000.0))
        self._answered += 1
        if math.floor(self._answered * self.error_share) > math.floor((self._answered - 1) * self.error_share):
            counters.errors_total += 1  # a broken release: the work is done, the answer is wrong
            counters.outcomes.append((done, True))
            return 500, _json({"instance": self.config.name, "error": "injected (/admin/errors)"})
        counters.outcomes.append((done, False))
        return 200, _json({"instance": self.config.name, "queue_ms": round((started - queued_at) * 1000.0, 3),
                           "service_ms": round(service_ms, 3)})


# ---------------------------------------------------------------- process entry


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on uvloop when it is installed, else on the default loop."""
    try:
        import uvloop  # noqa: PLC0415 - optional
    except ImportError:
        return asyncio.run(main)
    result: int = uvloop.run(main)
    return result


@dataclass(frozen=True, slots=True)
class UdpSide:
    """``--udp ADDR`` (repeatable) and ``--udp-port``: the service also answers datagrams there."""

    addresses: tuple[str, ...]
    port: int


async def serve_until_signalled(service: Service, echo: EchoResponder | None = None,
                                udp: UdpSide | None = None) -> int:
    """Start ``service`` (and the probes' UDP echo on ``echo``, the UDP side on ``udp``), run until signalled, stop.

    0, or 1 when it cannot bind. The echo answers the routers' path probes from
    the instance itself, as the agent's responder would when it runs there.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await service.start()
    except OSError as exc:
        log.error("service_bind_failed", instance=service.config.name, host=service.config.host,
                  port=service.config.port, error=str(exc))
        return 1
    responder = None
    datagrams = None
    try:
        if echo is not None:
            try:
                responder = await serve_echo(echo)
            except EchoError as exc:
                log.error("service_echo_failed", instance=service.config.name, error=str(exc))
                return 1
        if udp is not None:
            try:
                datagrams = await serve_udp(service.config.name, udp.addresses, udp.port, service.udp_request)
            except UdpServiceError as exc:
                log.error("service_udp_failed", instance=service.config.name, error=str(exc))
                return 1
        await stop.wait()
    finally:
        for server in (responder, datagrams):
            if server is not None:
                server.close()
                await server.wait_closed()
        await service.stop()
    return 0


def config_from_args(args: argparse.Namespace) -> ServiceConfig:
    return ServiceConfig(name=args.name, host=args.listen, port=args.port, capacity=args.capacity,
                         service_ms=args.service_ms, distribution=args.distribution, seed=args.seed)


def run_service(args: argparse.Namespace) -> int:
    """The ``service`` command: 0 after a clean stop, 1 when it cannot bind, 2 for bad parameters."""
    try:
        config = config_from_args(args)
    except ServiceConfigError as exc:
        log.error("service_bad_config", error=str(exc))
        return 2
    echo = None
    if getattr(args, "echo", None):
        try:
            echo = EchoResponder(listen=tuple(args.echo), port=args.echo_port)
        except ValueError as exc:
            log.error("service_bad_config", error=f"--echo: {exc}")
            return 2
    udp = None
    if getattr(args, "udp", None):
        port = args.port if args.udp_port is None else args.udp_port
        if not 0 < port < 65536:
            log.error("service_bad_config", error=f"--udp-port {port}: not a port number (1-65535)")
            return 2
        udp = UdpSide(tuple(args.udp), port)
    return run_loop(serve_until_signalled(Service(config), echo, udp))
