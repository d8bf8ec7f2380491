"""The agent process: collectors and health checks feed one task that owns the state.

I/O is passed in: ``writer`` sends text to ExaBGP (stdout), ``replies`` yields
the lines ExaBGP writes back (stdin), ``clock`` and ``sleep`` are the time
source. Production wiring lives in :mod:`dyncast_bgp.agent.commands`.

Flow: each metric source and each health check runs in its own task and puts
its result on a queue. The owner task applies results to :class:`AgentState`,
asks it for commands (``plan``), writes them in one block, and sleeps until the
next event or the next held update is due. ExaBGP's ``done``/``error`` replies
are read all the time (so ExaBGP never stalls writing to us), counted, and an
``error`` is logged with the command it answers. End of stdin or a
``shutdown`` line means ExaBGP is going away: the agent stops.

The control socket (``agent.control_socket``, :mod:`dyncast_bgp.agent.control`)
is one more feeder: each request becomes a :class:`ControlEvent` on the same
queue, so the owner wakes at once, applies it, plans and writes, and only then
answers, so the reply already reflects what was sent.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from prometheus_client import CollectorRegistry

from dyncast_bgp import __version__
from dyncast_bgp.agent import api as registration_api
from dyncast_bgp.agent import control
from dyncast_bgp.agent.apiserver import ApiListenError, ApiServer, serve_api
from dyncast_bgp.agent.echo import EchoError, EchoServer, serve_echo
from dyncast_bgp.agent.eor import EndOfRibBook
from dyncast_bgp.agent.health import Checker, build_checker
from dyncast_bgp.agent.openapi import document as openapi_document
from dyncast_bgp.agent.risefall import next_interval
from dyncast_bgp.agent.sources import Collector, SourceError, build_collector
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.schema import Config, HealthBase, HealthCheck, InstanceConfig, MetricSource, NoHealth
from dyncast_bgp.ctl.protocol import Request, Response, error
from dyncast_bgp.ctl.server import ControlServer, ControlSocketError, serve_control
from dyncast_bgp.model import MetricsView
from dyncast_bgp.obs.metrics import (
    Families,
    LoopCollector,
    MetricsEndpoint,
    MetricsListenError,
    agent_families,
    serve_metrics,
)
from dyncast_bgp.ops import agentdrain
from dyncast_bgp.ops.drain import DrainBook
from dyncast_bgp.ops.drain import Transition as DrainTransition
from dyncast_bgp.wire.exabgp_text import ApiLine, NeighborChange, Reply, parse_neighbor_change, parse_reply, render_all

log = structlog.get_logger(__name__)


class Writer(Protocol):
    async def write(self, text: str) -> None: ...


@dataclass(frozen=True, slots=True)
class MetricResult:
    iid: InstanceId
    source: int
    values: MetricsView | None
    error: str | None
    asked_at: float | None = None  # when the source was asked: the values are no older (drain.settle reads it)


@dataclass(frozen=True, slots=True)
class HealthResult:
    iid: InstanceId
    ok: bool
    detail: str
    reply: asyncio.Future[float]


@dataclass(frozen=True, slots=True)
class ControlEvent:
    request: Request
    reply: asyncio.Future[Response]


@dataclass(frozen=True, slots=True)
class ApiEvent:
    """A registration API request (agent/api.py), applied by the owner like a control request."""

    request: registration_api.ApiRequest
    reply: asyncio.Future[registration_api.ApiResponse]


@dataclass(frozen=True, slots=True)
class SessionEvent:
    """A BGP session came up, connected or went down (ExaBGP's ``neighbor-changes``): End-of-RIB's business."""

    change: NeighborChange


Event = MetricResult | HealthResult | ControlEvent | ApiEvent | SessionEvent


@dataclass(slots=True)
class Counters:
    commands_written: int = 0
    acks_done: int = 0
    acks_error: int = 0
    source_failures: int = 0
    health_flips: int = 0
    admin_changes: int = 0
    end_of_rib_sent: int = 0  # neighbours sent End-of-RIB by the agent (agent/eor.py)
    extra: dict[str, int] = field(default_factory=dict)


class AgentRuntime:
    def __init__(self, config: Config, *, writer: Writer, replies: AsyncIterator[str],
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 collector_factory: Callable[[MetricSource], Collector] = build_collector,
                 checker_factory: Callable[[HealthCheck], Checker] = build_checker) -> None:
        self.config = config
        self.state = AgentState(config)
        self.counters = Counters()
        self._writer = writer
        self._replies = replies
        self._clock = clock
        self._sleep = sleep
        self._collector_factory = collector_factory
        self._checker_factory = checker_factory
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._in_flight: collections.deque[str] = collections.deque(maxlen=10_000)
        self.stopping = asyncio.Event()
        self.control_server: ControlServer | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self._started_at = clock()
        self._answers: list[tuple[ControlEvent, control.Applied]] = []
        self.drains: DrainBook[InstanceId] = DrainBook()  # ops/drain.py: lead times, constraints, drained
        self._instance_tasks: dict[InstanceId, list[asyncio.Task[None]]] = {}
        self.api_server: ApiServer | None = None
        self._api_answers: list[tuple[ApiEvent, registration_api.Applied]] = []
        wait = config.agent.end_of_rib_wait  # 0: ExaBGP sends End-of-RIB itself (no manual-eor rendered)
        self.end_of_rib = EndOfRibBook(wait, {neighbor.address: neighbor.families
                                              for neighbor in config.bgp.neighbors}) if wait > 0 else None
        api = config.agent.api
        self.registrations = registration_api.Registrations(
            config, self.state, save=registration_api.state_file_saver(api.state_file) if api.state_file else None)
        self.registrations.restore(registration_api.load_saved(api.state_file))  # tasks start in run()
        self._health_config: dict[InstanceId, HealthBase] = {
            iid: instance.health for iid, instance in self.state.instances()
            if isinstance(instance.health, HealthBase)}

    async def run(self) -> None:
        """Run until ``stopping`` is set or ExaBGP goes away; then withdraw (if configured)."""
        if self.end_of_rib is not None:
            self.end_of_rib.start(self._clock())  # a session already up hears no `up` line (agent/eor.py)
        tasks = [asyncio.create_task(self._read_replies(), name="replies")]
        for iid, instance in self.state.instances():
            self.start_instance(iid, instance)
        echo = await self._start_echo()
        self.control_server = await self._start_control()
        self.api_server = await self._start_api()
        self.metrics_endpoint = await self._start_metrics()
        log.info("agent_started", services=len(self.config.services),
                 instances=sum(len(s.instances) for s in self.config.services), echo=echo is not None,
                 control_socket=str(self.control_server.path) if self.control_server is not None else None)
        try:
            await self._own_state()
        finally:
            if self.control_server is not None:
                await self.control_server.close()
            if self.api_server is not None:
                await self.api_server.close()
            tasks.extend(task for group in self._instance_tasks.values() for task in group)
            if self.metrics_endpoint is not None:
                await asyncio.to_thread(self.metrics_endpoint.close)
            if echo is not None:
                echo.close()
            for task in tasks:
                task.cancel()
            await _cancelled(tasks)
            if self.config.agent.withdraw_on_exit:
                await self._send(self.state.withdraw_all(), why="exit")
            log.info("agent_stopped", commands=self.counters.commands_written, acks_done=self.counters.acks_done,
                     acks_error=self.counters.acks_error)

    async def _start_echo(self) -> EchoServer | None:
        """The UDP echo the routers' path probes reach; a failure to bind is logged, not fatal."""
        if self.config.agent.echo is None:
            return None
        try:
            return await serve_echo(self.config.agent.echo)
        except EchoError as exc:
            log.error("echo_responder_failed", error=str(exc))
            return None

    async def _start_control(self) -> ControlServer | None:
        """The control socket `dyncast ctl` talks to; a failure is logged, not fatal (announcing matters more)."""
        path = self.config.agent.control_socket
        if path is None:
            return None
        try:
            return await serve_control(path, mode=self.config.agent.control_socket_mode, verbs=control.VERBS,
                                       handle=self.submit)
        except ControlSocketError as exc:
            log.error("control_socket_failed", error=str(exc))
            return None

    async def _start_metrics(self) -> MetricsEndpoint | None:
        """The Prometheus endpoint (``agent.metrics_listen``); a failure is logged, not fatal."""
        listen = self.config.agent.metrics_listen
        if listen is None:
            return None
        registry = CollectorRegistry()
        registry.register(LoopCollector(asyncio.get_running_loop(), self._metric_families))
        try:
            return await asyncio.to_thread(serve_metrics, listen, registry)
        except MetricsListenError as exc:
            log.error("metrics_listen_failed", error=str(exc))
            return None

    def _metric_families(self) -> Families:
        now = self._clock()
        return agent_families(self._status(now),
                              [control.instance_view(self.state, iid, now) for iid, _ in self.state.instances()])

    async def submit(self, request: Request) -> Response:
        """Hand a control request to the owner task; its answer comes after the change was written."""
        if self.stopping.is_set():
            return error("the agent is stopping")
        reply: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        await self._queue.put(ControlEvent(request, reply))
        return await reply

    async def _start_api(self) -> ApiServer | None:
        """The registration API (``agent.api.listen``); a failure is logged, not fatal."""
        listen = self.config.agent.api.listen
        if listen is None:
            return None
        try:
            server = await serve_api(listen, self.submit_api, openapi=openapi_document())
        except ApiListenError as exc:
            log.error("api_listen_failed", error=str(exc))
            return None
        log.info("api_listening", listen=listen, port=server.port)
        return server

    async def submit_api(self, request: registration_api.ApiRequest) -> registration_api.ApiResponse:
        """Hand a registration request to the owner task; its answer comes after the change was written."""
        if self.stopping.is_set():
            return registration_api.refuse(503, "the agent is stopping")
        reply: asyncio.Future[registration_api.ApiResponse] = asyncio.get_running_loop().create_future()
        await self._queue.put(ApiEvent(request, reply))
        return await reply

    def start_instance(self, iid: InstanceId, instance: InstanceConfig) -> None:
        """Start the collectors and health check of one instance (at start, or registered at run time)."""
        tasks = [asyncio.create_task(self._collect(iid, index, source), name=f"metrics {iid}#{index}")
                 for index, source in enumerate(instance.metrics)]
        if not isinstance(instance.health, NoHealth):
            tasks.append(asyncio.create_task(self._check(iid, instance.health), name=f"health {iid}"))
            self._health_config[iid] = instance.health
        self._instance_tasks.setdefault(iid, []).extend(tasks)

    def stop_instance(self, iid: InstanceId) -> None:
        """Cancel an instance's tasks; a result already queued is dropped by ``_apply``."""
        for task in self._instance_tasks.pop(iid, []):
            task.cancel()
        self._health_config.pop(iid, None)

    def _answer_api(self) -> None:
        now = self._clock()
        for event, applied in self._api_answers:
            if not event.reply.done():
                event.reply.set_result(self.registrations.answer(event.request, applied, now))
        self._api_answers.clear()

    # ------------------------------------------------------------ the owner

    async def _own_state(self) -> None:
        stop_wait = asyncio.create_task(self.stopping.wait())
        get = asyncio.create_task(self._queue.get())
        try:
            while not self.stopping.is_set():
                self.registrations.tick(self, self._clock())
                self._log_drains(agentdrain.tick(self.state, self.drains, self._clock()), by="timer")
                await self._send(self.state.plan(self._clock()), why="plan")
                await self._send_end_of_rib()  # after what the plan announced: ExaBGP keeps the order
                self._answer_control()
                self._answer_api()
                due = min((t for t in (self.state.next_due(), self.registrations.next_due(), self.drains.next_due(),
                                       self.end_of_rib.next_due() if self.end_of_rib is not None else None)
                           if t is not None), default=None)
                timeout = None if due is None else max(0.0, due - self._clock())
                done, _ = await asyncio.wait({get, stop_wait}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    self._apply(get.result())
                    while not self._queue.empty():
                        self._apply(self._queue.get_nowait())
                    get = asyncio.create_task(self._queue.get())
        finally:
            get.cancel()
            stop_wait.cancel()
            unanswered = [event for event, _ in self._answers]
            while not self._queue.empty():  # requests that came too late to be applied
                event = self._queue.get_nowait()
                if isinstance(event, ControlEvent):
                    unanswered.append(event)
                elif isinstance(event, ApiEvent):
                    self._api_answers.append((event, registration_api.Applied(503)))
            for api_event, _ in self._api_answers:
                if not api_event.reply.done():
                    api_event.reply.set_result(registration_api.refuse(503, "the agent is stopping"))
            self._api_answers.clear()
            for event in unanswered:
                if not event.reply.done():
                    event.reply.set_result(error("the agent is stopping"))
            self._answers.clear()

    def _answer_control(self) -> None:
        now = self._clock()
        for event, applied in self._answers:
            if not event.reply.done():
                event.reply.set_result(control.answer(self.state, event.request, applied, now, self._status(now),
                                                      drains=self.drains))
        self._answers.clear()

    def _status(self, now: float) -> dict[str, object]:
        served = self.control_server
        return {
            "version": __version__, "uptime": round(now - self._started_at, 3),
            "services": len(self.config.services), "instances": control.admin_counts(self.state),
            "published_routes": self.state.published_routes, "updates_sent": self.state.updates_sent,
            "updates_held": self.state.updates_held, "commands_written": self.counters.commands_written,
            "acks_done": self.counters.acks_done, "acks_error": self.counters.acks_error,
            "source_failures": self.counters.source_failures, "health_flips": self.counters.health_flips,
            "admin_changes": self.counters.admin_changes, "end_of_rib_sent": self.counters.end_of_rib_sent,
            "control_requests": served.requests if served is not None else 0,
            "control_rejected": served.rejected if served is not None else 0,
        }

    def _apply(self, event: Event) -> None:
        now = self._clock()
        if isinstance(event, SessionEvent):
            self._apply_session(event.change, now)
            return
        if isinstance(event, ControlEvent):
            self._apply_control(event)
            return
        if isinstance(event, ApiEvent):
            self._api_answers.append((event, self.registrations.apply(event.request, self, now)))
            return
        if not self.state.has(event.iid):  # removed (deregistered) while this result was queued
            if isinstance(event, HealthResult) and not event.reply.done():
                event.reply.set_result(1.0)
            return
        if isinstance(event, MetricResult):
            self.state.record_metrics(event.iid, event.source, event.values, event.error,
                                      now if event.asked_at is None else min(event.asked_at, now))
            return
        flipped = self.state.record_health(event.iid, event.ok, event.detail)
        machine = self.state.health_machine(event.iid)
        if flipped and machine is not None:
            self.counters.health_flips += 1
            log.warning("instance_healthy" if machine.healthy else "instance_unhealthy",
                        instance=str(event.iid), detail=event.detail)
        health = self._health_config.get(event.iid)
        if not event.reply.done() and machine is not None and health is not None:
            event.reply.set_result(next_interval(machine, health.interval, health.fast_interval))

    def _apply_session(self, change: NeighborChange, now: float) -> None:
        log.info(f"bgp_session_{change.state}", neighbor=str(change.neighbor))
        book = self.end_of_rib
        if book is None:
            return
        if not book.knows(change.neighbor):
            log.warning("bgp_session_of_unknown_neighbor", neighbor=str(change.neighbor), state=change.state,
                        configured=False)
        elif change.state == "up":
            book.up(change.neighbor, now)
        elif change.state == "down":
            book.down(change.neighbor)

    async def _send_end_of_rib(self) -> None:
        book = self.end_of_rib
        if book is None or not book.owed:
            return
        now = self._clock()
        for sent in book.due(now, settled=self.state.settled(now), announced=self.state.families()):
            if not sent.markers:
                log.info("end_of_rib_not_needed", neighbor=str(sent.neighbor), why="no service of its families")
                continue
            await self._send(sent.markers, why="end-of-rib")
            self.counters.end_of_rib_sent += 1
            (log.info if sent.settled else log.warning)(
                "end_of_rib_sent", neighbor=str(sent.neighbor), families=[m.family for m in sent.markers],
                waited=round(sent.waited, 3), settled=sent.settled)

    def _apply_control(self, event: ControlEvent) -> None:
        applied = control.apply(self.state, event.request, self.drains, self._clock())
        self._log_drains(applied.drains, by="ctl")
        transition = applied.transition
        if transition is not None and transition.changed:
            self.counters.admin_changes += 1
            log.info("instance_admin_changed", service=transition.iid.service, instance=transition.iid.instance,
                     **{"from": str(transition.before), "to": str(transition.after)}, by="ctl")
        self._answers.append((event, applied))

    def _log_drains(self, transitions: Iterable[DrainTransition[InstanceId]], *, by: str) -> None:
        """One line per drain phase change, under its stable event name (ops/drain.py EVENTS)."""
        for step in transitions:
            log.info(step.event, service=step.key.service, instance=step.key.instance, by=by, why=step.why,
                     available=step.available, **{"from": str(step.before), "to": str(step.after)})

    async def _send(self, commands: Sequence[ApiLine], *, why: str) -> None:
        if not commands:
            return
        text = render_all(commands)
        self._in_flight.extend(text.splitlines())
        await self._writer.write(text)
        self.counters.commands_written += len(commands)
        if log.is_enabled_for(logging.DEBUG):
            for line in text.splitlines():
                log.debug("command_sent", why=why, command=line)

    # ------------------------------------------------------------ the feeders

    async def _collect(self, iid: InstanceId, index: int, source: MetricSource) -> None:
        collector = self._collector_factory(source)
        was_failing = False
        while True:
            values: MetricsView | None = None
            error: str | None = None
            asked = self._clock()
            try:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the task's cancellation when the
                # inner call finishes at the same moment (CPython gh-86296), and the agent then never stops.
                async with asyncio.timeout(source.timeout + 1.0):
                    raw = await collector.collect()
                values = MetricsView(raw)
            except SourceError as exc:
                error = str(exc)
            except (TimeoutError, ValueError) as exc:
                error = f"{collector.description}: {exc or 'timed out'}"
            if error is not None:
                self.counters.source_failures += 1
                log.warning("metric_source_failed", instance=str(iid), source=collector.description, error=error,
                            on_failure=source.on_failure)
            elif was_failing:
                log.info("metric_source_recovered", instance=str(iid), source=collector.description)
            was_failing = error is not None
            await self._queue.put(MetricResult(iid, index, values, error, asked))
            await self._sleep(source.interval)

    async def _check(self, iid: InstanceId, health: HealthCheck) -> None:
        checker = self._checker_factory(health)
        loop = asyncio.get_running_loop()
        while True:
            result = await checker.check()
            reply: asyncio.Future[float] = loop.create_future()
            await self._queue.put(HealthResult(iid, result.ok, result.detail, reply))
            await self._sleep(await reply)

    async def _read_replies(self) -> None:
        try:
            async for line in self._replies:
                kind = parse_reply(line)
                if kind is Reply.DONE:
                    self.counters.acks_done += 1
                    self._pop_in_flight()
                elif kind is Reply.ERROR:
                    self.counters.acks_error += 1
                    command = self._pop_in_flight() or "<unknown>"
                    if " announce eor " in command:  # owed since the start, or a session that just went down
                        log.info("end_of_rib_refused", command=command, why="session not established")
                    else:
                        log.error("exabgp_rejected_command", command=command)
                elif kind is Reply.SHUTDOWN:
                    log.info("exabgp_shutdown")
                    break
                elif (change := parse_neighbor_change(line)) is not None:
                    await self._queue.put(SessionEvent(change))
                elif line.strip():
                    log.debug("exabgp_said", line=line.strip()[:200])
        finally:
            log.info("exabgp_input_closed")
            self.stopping.set()

    def _pop_in_flight(self) -> str | None:
        return self._in_flight.popleft() if self._in_flight else None


SHUTDOWN_GRACE = 2.0  # seconds the feeder tasks get to finish cancelling before the agent withdraws anyway


async def _cancelled(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for cancelled tasks, but never past SHUTDOWN_GRACE: withdraw-on-exit must always run."""
    done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_GRACE)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.error("task_failed", task=task.get_name(), error=repr(task.exception()))
    if pending:
        log.warning("tasks_not_stopped", tasks=sorted(task.get_name() for task in pending))
