"""The prober: asyncio I/O around :class:`~dyncast_bgp.probe.schedule.ProbeSchedule`.

One task drives the schedule: it expires timed-out probes, sends the probes
that are due (up to ``tick`` early, so the loop wakes at most once per tick,
not once per probe), then sleeps until the next probe or timeout is due. Each
socket (one per address family, shared by every target of that family) is
read by a reader callback in batches; replies are matched by the schedule.
Nothing is created per probe except the packet: no task, no timer, no future.
Works on the default asyncio loop and on uvloop (only ``add_reader`` and
non-blocking ``sendto``/``recvfrom``, or ``recvmsg`` for kernel receive stamps, are used).

Output: :meth:`Prober.snapshot` (the current metrics of every target) and the
``on_change`` callback, called with ``(address, PathMetrics)`` whenever a
target's metrics change materially (:class:`~dyncast_bgp.probe.window.ChangeThreshold`),
always when ``reachable`` flips. It runs inside the event loop and must not
block; to hand changes to the task that owns the router state, pass
``queue.put_nowait``-style callables (see :func:`queue_sink`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Any

import structlog

from dyncast_bgp.config.schema import Probes
from dyncast_bgp.model import IPAddress, PathMetrics
from dyncast_bgp.probe import rxtime
from dyncast_bgp.probe.packet import U32, PacketError, parse_echoed, request
from dyncast_bgp.probe.schedule import Change, Outcome, ProbeSchedule, TargetStatus
from dyncast_bgp.probe.sockets import IcmpSocket, ProbeSetupError, ProbeSocket, open_probe_socket
from dyncast_bgp.probe.window import DEFAULT_THRESHOLD, ChangeThreshold

log = structlog.get_logger(__name__)

ChangeCallback = Callable[[IPAddress, PathMetrics], None]
READ_BATCH = 512
IDLE = 0.05
"""Longest sleep of the driver, so that new targets are picked up without a wake-up event."""


def default_tick(interval: float) -> float:
    """How early a probe may go out (and how late a timeout may be noticed): 1/50 interval, at most 5 ms.

    The driver wakes at most once per tick, so at 5,000 targets per second it
    sends batches of ~25 probes every 5 ms instead of waking 5,000 times.
    """
    return min(0.005, interval / 50)


def queue_sink(queue: asyncio.Queue[tuple[IPAddress, PathMetrics]]) -> ChangeCallback:
    """An ``on_change`` callback that puts every change on ``queue`` (unbounded: never blocks)."""
    def put(address: IPAddress, metrics: PathMetrics) -> None:
        queue.put_nowait((address, metrics))
    return put


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("prober_failed", error=repr(task.exception()))


@dataclass(slots=True)
class ProberCounters:
    """Totals since start; ``malformed`` by packet error reason."""

    sent: int = 0
    send_errors: int = 0
    received: int = 0
    matched: int = 0
    late: int = 0
    unknown: int = 0
    mismatched: int = 0
    foreign: int = 0
    receive_errors: int = 0
    skipped_slots: int = 0
    malformed: Counter[str] = field(default_factory=Counter)


class Prober:
    """Probes a changing set of targets (``set_targets``) and keeps their :class:`PathMetrics`."""

    def __init__(self, config: Probes, *, on_change: ChangeCallback | None = None,
                 throughput: Mapping[IPAddress, float] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 source_v4: IPAddress | None = None, source_v6: IPAddress | None = None,
                 icmp_socket: IcmpSocket = "auto", threshold: ChangeThreshold = DEFAULT_THRESHOLD,
                 sub_window: int | None = None, tick: float | None = None, rng: random.Random | None = None) -> None:
        self.config = config
        self._on_change = on_change
        self._throughput = dict(throughput or {})
        self._clock = clock
        self._kernel_time = clock is time.monotonic  # stamps move onto the real monotonic clock only (rxtime.py)
        self._sleep = sleep
        self._sources = {4: source_v4, 6: source_v6}
        self._icmp_socket = icmp_socket
        self._threshold = threshold
        self._sub_window = sub_window
        self._tick = default_tick(config.interval) if tick is None else tick
        self._rng = rng or random.Random()
        self._token = self._rng.getrandbits(32) & U32
        self._io = ProberCounters()
        self._schedule: ProbeSchedule | None = None
        self._sockets: dict[int, ProbeSocket] = {}
        self._routes: dict[str, tuple[ProbeSocket, tuple[Any, ...]]] = {}  # target text -> socket, sockaddr
        self._unreachable: set[IPAddress] = set()
        self._failed: dict[int, str] = {}  # family -> last socket error, logged once
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start probing (targets come from :meth:`set_targets`, before or after)."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._ensure_schedule()
        self._task = asyncio.create_task(self._drive(), name="prober")
        self._task.add_done_callback(_report_failure)

    def _ensure_schedule(self) -> ProbeSchedule:
        if self._schedule is None:
            self._schedule = ProbeSchedule(
                interval=self.config.interval, timeout=self.config.timeout, window=self.config.window,
                unreachable_after=self.config.unreachable_after, start=self._clock(),
                sub_window=self._sub_window, phase_offset=self._rng.random(), threshold=self._threshold,
                throughput=self._throughput)
        return self._schedule

    async def close(self) -> None:
        """Stop probing and close the sockets (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for version, probe_socket in list(self._sockets.items()):
            if self._loop is not None:
                self._loop.remove_reader(probe_socket.sock.fileno())
            probe_socket.close()
            del self._sockets[version]

    async def __aenter__(self) -> Prober:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()

    # ---------------------------------------------------------------- targets and output

    def open_sockets(self, versions: Iterable[int] = (4, 6)) -> None:
        """Open the sockets of these address families now (call from the event loop).

        Raises :class:`~dyncast_bgp.probe.sockets.ProbeSetupError` saying what
        to change: the place to fail fast at start-up (e.g. ICMP not permitted).
        """
        for version in sorted(set(versions) - set(self._sockets)):
            self._open(version)

    def set_targets(self, addresses: Iterable[IPAddress]) -> None:
        """Probe exactly these addresses from now on (call from the event loop).

        Opens the socket of a family the first time a target needs it. If it
        cannot be opened, the error is logged (``probe_socket_failed``, once
        until it works) and that family's targets are left out, so they have
        no metrics; it is retried at the next call. Never raises for that:
        use :meth:`open_sockets` at start-up to fail fast instead.
        """
        wanted = set(addresses)
        for version in sorted({address.version for address in wanted} - set(self._sockets)):
            try:
                self._open(version)
            except ProbeSetupError as exc:
                if self._failed.get(version) != str(exc):
                    log.error("probe_socket_failed", family=f"ipv{version}", error=str(exc))
                self._failed[version] = str(exc)
                wanted = {address for address in wanted if address.version != version}
        added, removed = self._ensure_schedule().set_targets(wanted, self._clock())
        for address in removed:
            self._routes.pop(str(address), None)
            self._unreachable.discard(address)
        for address in added:
            probe_socket = self._sockets[address.version]
            self._routes[str(address)] = (probe_socket, probe_socket.sockaddr(address))
        if added or removed:
            log.info("probe_targets", added=len(added), removed=len(removed), targets=len(wanted))

    def set_throughput(self, throughput: Mapping[IPAddress, float]) -> None:
        """Replace the configured path capacities (bits/s, e.g. from ``router.static_paths``)."""
        self._throughput = dict(throughput)
        self._notify(self._ensure_schedule().set_throughput(throughput))

    def snapshot(self) -> Mapping[IPAddress, PathMetrics]:
        """The current metrics of every target (a read-only copy)."""
        return MappingProxyType(self._ensure_schedule().metrics())

    def status(self, address: IPAddress) -> TargetStatus | None:
        return self._ensure_schedule().status(address)

    @property
    def targets(self) -> frozenset[IPAddress]:
        return self._ensure_schedule().targets

    @property
    def socket_kinds(self) -> dict[int, str]:
        """The socket kind per open address family, e.g. ``{4: "udp", 6: "udp"}`` or ``{4: "icmp-raw"}``."""
        return {version: probe_socket.kind for version, probe_socket in self._sockets.items()}

    @property
    def counters(self) -> ProberCounters:
        self._io.skipped_slots = self._ensure_schedule().counters.skipped_slots
        return self._io

    @property
    def schedule(self) -> ProbeSchedule:
        """The pure schedule (windows, outstanding probes), for diagnostics and benchmarks."""
        return self._ensure_schedule()

    # ---------------------------------------------------------------- I/O

    def _open(self, version: int) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        probe_socket = open_probe_socket(version, self.config.method, port=self.config.port,
                                         source=self._sources[version], icmp_mode=self._icmp_socket)
        loop.add_reader(probe_socket.sock.fileno(), self._readable, probe_socket)
        self._sockets[version] = probe_socket
        self._failed.pop(version, None)
        log.info("probe_socket_open", family=f"ipv{version}", kind=probe_socket.kind,
                 local=str(probe_socket.sock.getsockname()[:2]))

    async def _drive(self) -> None:
        schedule = self._ensure_schedule()
        clock = self._clock
        while True:
            for probe_socket in list(self._sockets.values()):  # replies that came while the loop was held: timed
                self._readable(probe_socket)  # by their kernel stamps and matched before their deadlines pass
            now = clock()
            self._notify(schedule.expire(now))
            for slot in schedule.due(now + self._tick):
                route = self._routes.get(slot.text)
                if route is None:
                    continue
                probe_socket, sockaddr = route
                stamp = schedule.sent(slot, clock())
                self._io.sent += 1
                try:
                    probe_socket.send(sockaddr, slot.sequence, request(self._token, slot.sequence, stamp))
                except OSError as exc:  # the probe stays outstanding and times out as lost
                    self._io.send_errors += 1
                    log.debug("probe_send_failed", target=str(slot.address), error=exc.strerror)
            wake = schedule.next_wakeup()
            delay = IDLE if wake is None else min(IDLE, wake - clock())
            await self._sleep(max(delay, self._tick))

    def _readable(self, probe_socket: ProbeSocket) -> None:
        schedule = self._ensure_schedule()
        io = self._io
        kind = probe_socket.returned_kind
        recvfrom, recvmsg = probe_socket.sock.recvfrom, probe_socket.sock.recvmsg
        stamped = probe_socket.stamped and self._kernel_time
        control: list[tuple[int, int, bytes]] = []
        for _ in range(READ_BATCH):
            try:
                if stamped:
                    data, control, _, addr = recvmsg(65535, rxtime.CONTROL_SPACE)
                else:
                    data, addr = recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                io.receive_errors += 1
                return
            now = self._clock()
            if stamped:  # when it arrived, not when the loop got round to reading it
                now = rxtime.arrival(control, time.time(), now)
            io.received += 1
            try:
                token, sequence, stamp = parse_echoed(probe_socket.unwrap(data, addr), kind)
            except PacketError as exc:
                io.malformed[exc.reason.value] += 1
                continue
            if token != self._token:
                io.foreign += 1
                continue
            outcome, change = schedule.reply(addr[0], sequence, stamp, now)
            if outcome is Outcome.MATCHED:
                io.matched += 1
            elif outcome is Outcome.LATE:
                io.late += 1
            elif outcome is Outcome.UNKNOWN:
                io.unknown += 1
            else:
                io.mismatched += 1
            if change is not None:
                self._notify((change,))

    def _notify(self, changes: Iterable[Change]) -> None:
        for address, metrics in changes:
            if not metrics.reachable and address not in self._unreachable:
                self._unreachable.add(address)
                status = self._ensure_schedule().status(address)
                log.warning("path_unreachable", target=str(address),
                            lost_in_row=status.consecutive_losses if status else None)
            elif metrics.reachable and address in self._unreachable:
                self._unreachable.discard(address)
                log.info("path_reachable", target=str(address), rtt_mean_us=metrics.rtt_mean_us)
            if self._on_change is None:
                continue
            try:
                self._on_change(address, metrics)
            except Exception:
                log.exception("probe_change_callback_failed", target=str(address))
