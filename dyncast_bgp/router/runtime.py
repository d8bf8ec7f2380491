"""The live router: ExaBGP JSON in, probes alongside, decisions out to the dataplane.

One task owns the :class:`RouterEngine`. ExaBGP lines (stdin) and probe
changes arrive on one queue; after each batch the owner steps the engine and,
when a decision changed, schedules one dataplane apply, coalescing changes
that come within ``router.apply_interval``. The dataplane runs in a worker
thread (it waits on nft/ip), so reading ExaBGP never stalls behind it. A
malformed ExaBGP line is logged (truncated) and skipped; a dataplane error is
logged and retried on the next change, and the previous kernel state stays.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from dyncast_bgp.config.schema import Config
from dyncast_bgp.dataplane.desired import Dataplane, DataplaneError, DesiredState
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.owner import RouterEngine, decision_line
from dyncast_bgp.model import IPAddress, PathMetrics
from dyncast_bgp.probe.prober import Prober, queue_sink
from dyncast_bgp.probe.static import throughput_from_static
from dyncast_bgp.router.static import static_paths
from dyncast_bgp.router.status import status_document, write_status
from dyncast_bgp.wire.exabgp_json import EndOfRib, ExabgpJsonError, PeerState, SessionState, Shutdown, parse_line

log = structlog.get_logger(__name__)

LEADING_DEBOUNCE = 0.005  # seconds: a change after a quiet spell waits this long for the rest of its burst


@dataclass(slots=True)
class RouterCounters:
    lines: int = 0
    rejected_lines: int = 0
    path_changes: int = 0
    applies: int = 0
    apply_errors: int = 0
    last_apply_seconds: float = 0.0


class RouterRuntime:
    def __init__(self, config: Config, *, lines: AsyncIterator[str], dataplane: Dataplane | None,
                 probes: bool = True, clock: Callable[[], float] = time.monotonic,
                 commands: Callable[[str], None] | None = None) -> None:
        router = config.router
        self.config = config
        self.engine = RouterEngine(router, stale_time=router.stale_time(config.bgp.graceful_restart),
                                   static_paths=static_paths(router.static_paths))
        self.counters = RouterCounters()
        self.stopping = asyncio.Event()
        self._lines = lines
        self._commands = commands
        self._dataplane = dataplane
        self._clock = clock
        self._paths: asyncio.Queue[tuple[IPAddress, PathMetrics]] = asyncio.Queue()
        self._prober = Prober(router.probes, on_change=queue_sink(self._paths),
                              throughput=throughput_from_static(router.static_paths)) \
            if probes and router.probes.enabled else None
        self._apply_wanted = asyncio.Event()
        self._wake = asyncio.Event()
        self._started_at = clock()
        self._peers_up: set[IPAddress] = set()
        self._peers_synced: set[IPAddress] = set()
        self._synced = asyncio.Event()
        self.installed: DesiredState | None = None

    async def run(self) -> None:
        self._ask_for_routes()
        if self._prober is not None:
            await self._prober.start()
        tasks = [asyncio.create_task(self._read(), name="exabgp"),
                 asyncio.create_task(self._paths_in(), name="probes"),
                 asyncio.create_task(self._applier(), name="dataplane")]
        if self.config.router.status_file:
            tasks.append(asyncio.create_task(self._status_writer(Path(self.config.router.status_file)),
                                             name="status"))
        log.info("router_started", probes=self._prober is not None, dataplane=self._dataplane is not None)
        try:
            await self._own()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks, timeout=2.0)  # bounded: a stuck task must not keep the router up
            if self._prober is not None:
                await self._prober.close()
            log.info("router_stopped", lines=self.counters.lines, rejected=self.counters.rejected_lines,
                     applies=self.counters.applies, apply_errors=self.counters.apply_errors)

    def _ask_for_routes(self) -> None:
        """Ask every established peer to send its routes again (ROUTE-REFRESH, RFC 2918).

        ExaBGP does not replay what it received to a process it respawned, so a
        restarted router would otherwise know only routes that change after it
        started. Right after ExaBGP itself starts no peer is established yet:
        ExaBGP answers ``error`` (ignored as an acknowledgement) and the routes
        come with the new sessions anyway.
        """
        if self._commands is None:
            return
        families = sorted({family for neighbor in self.config.bgp.neighbors for family in neighbor.families})
        for family in families:
            self._commands(f"announce route-refresh {family}")
        log.info("route_refresh_requested", families=families)

    # ------------------------------------------------------------ the owner

    async def _own(self) -> None:
        while not self.stopping.is_set():
            due = self.engine.next_due()
            timeout = None if due is None else max(0.0, due - self._clock())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: it can swallow cancellation on 3.11
                    await self._wake.wait()
            self._wake.clear()
            self._after_inputs()

    def _after_inputs(self) -> None:
        changed = self.engine.step(self._clock())
        for outcome in changed:
            _log_outcome(outcome)
        if changed:
            if self._prober is not None:
                self._prober.set_targets(self.engine.bindings())
            self._apply_wanted.set()

    # ------------------------------------------------------------ the feeders

    async def _read(self) -> None:
        try:
            async for line in self._lines:
                self.counters.lines += 1
                try:
                    event = parse_line(line)
                except ExabgpJsonError as exc:
                    self.counters.rejected_lines += 1
                    log.warning("exabgp_line_rejected", error=str(exc))
                    continue
                if isinstance(event, Shutdown):
                    log.info("exabgp_shutdown")
                    break
                if isinstance(event, PeerState):
                    log.info("bgp_peer_state", peer=str(event.peer), state=str(event.state), reason=event.reason)
                self._track_sync(event)
                self.engine.on_event(event, self._clock())
                self._wake.set()
        finally:
            log.info("exabgp_input_closed")
            self.stopping.set()
            self._wake.set()

    def _track_sync(self, event: object) -> None:
        """Ready to program the kernel once every established peer has sent its End-of-RIB."""
        if self._synced.is_set():
            return
        if isinstance(event, PeerState):
            if event.state is SessionState.UP:
                self._peers_up.add(event.peer)
            elif event.state is SessionState.DOWN:
                self._peers_up.discard(event.peer)
        elif isinstance(event, EndOfRib):
            self._peers_synced.add(event.peer)
        if self._peers_up and self._peers_up <= self._peers_synced:
            log.info("rib_synced", peers=sorted(str(peer) for peer in self._peers_up),
                     seconds=round(self._clock() - self._started_at, 3))
            self._synced.set()

    async def _wait_for_sync(self) -> None:
        hold = self.config.router.startup_hold
        try:
            async with asyncio.timeout(hold):
                await self._synced.wait()
        except TimeoutError:
            log.warning("rib_sync_timeout", seconds=hold, peers_up=len(self._peers_up),
                        peers_synced=len(self._peers_synced & self._peers_up))
            self._synced.set()

    async def _paths_in(self) -> None:
        while True:
            binding, metrics = await self._paths.get()
            self.counters.path_changes += 1
            if not metrics.reachable:
                log.warning("instance_unreachable", binding=str(binding))
            self.engine.on_path(binding, metrics)
            self._wake.set()

    async def _status_writer(self, path: Path) -> None:
        """Rewrite the status document every ``status_interval`` (a failure is logged once per kind)."""
        failed: str | None = None
        while True:
            document = status_document(self.engine.outcomes(), now=time.time(), synced=self._synced.is_set(),
                                       counters=dataclasses.asdict(self.counters))
            try:
                await asyncio.to_thread(write_status, path, document)
                failed = None
            except OSError as exc:
                if failed != type(exc).__name__:
                    log.error("status_write_failed", path=str(path), error=str(exc))
                failed = type(exc).__name__
            await asyncio.sleep(self.config.router.status_interval)

    async def _applier(self) -> None:
        if self._dataplane is None:
            return
        interval = self.config.router.apply_interval
        await self._wait_for_sync()  # never program a half-learned RIB over the installed state
        last_end = -math.inf
        while True:
            await self._apply_wanted.wait()
            # Coalesce with a leading edge: a change after a quiet spell is applied after a few
            # milliseconds (time for the rest of a burst already in the pipe); changes that follow an
            # apply within `apply_interval` wait for the rest of it and go together.
            wait = max(last_end + interval - self._clock(), min(interval, LEADING_DEBOUNCE))
            if wait > 0:
                await asyncio.sleep(wait)
            self._apply_wanted.clear()
            desired = self.engine.desired()
            if desired == self.installed:
                continue
            try:
                result = await asyncio.to_thread(self._dataplane.apply, desired)
            except DataplaneError as exc:
                self.counters.apply_errors += 1
                log.error("dataplane_apply_failed", error=str(exc))
                continue
            finally:
                last_end = self._clock()
            self.installed = desired
            self.counters.applies += 1
            self.counters.last_apply_seconds = result.seconds
            log.info("dataplane_applied", changed=result.changed, seconds=round(result.seconds, 4),
                     summary=result.summary)


def _log_outcome(outcome: Outcome) -> None:
    line = decision_line(outcome.decision)
    if outcome.fallback is not None:
        log.warning("service_fallback", fallback=outcome.fallback, status=outcome.status, **line)
    else:
        log.info("decision_changed", status=outcome.status, **line)
