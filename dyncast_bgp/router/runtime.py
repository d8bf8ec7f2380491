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
import collections
import contextlib
import dataclasses
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.samples import Sample

from dyncast_bgp import __version__
from dyncast_bgp.config.schema import Config
from dyncast_bgp.ctl.protocol import Request, Response, error
from dyncast_bgp.ctl.server import ControlServer, ControlSocketError, serve_control
from dyncast_bgp.dataplane.desired import Dataplane, DataplaneError, DesiredState
from dyncast_bgp.deferred import RELEASE_CHUNK, Deferred
from dyncast_bgp.engine.explain import path_dict
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.engine.trust import MALFORMED_LINE
from dyncast_bgp.model import InstanceKey, IPAddress, PathMetrics, ServiceId, by_sort_key
from dyncast_bgp.obs.metrics import (
    Families,
    LoopCollector,
    MetricsEndpoint,
    MetricsListenError,
    RouterHistograms,
    RouterView,
    rejection_reason,
    router_families,
    serve_metrics,
)
from dyncast_bgp.ops.evict import DrainedTracker
from dyncast_bgp.ops.rollout import Rollout, Status
from dyncast_bgp.ops.rolloutbook import Change, RolloutBook, sample_of
from dyncast_bgp.ops.rolloutplan import PlanError, load_plan
from dyncast_bgp.probe.prober import Prober, queue_sink
from dyncast_bgp.probe.static import throughput_from_static
from dyncast_bgp.router import control
from dyncast_bgp.router.audit import AUDIT_SLICE, AuditWriter, DecisionBook
from dyncast_bgp.router.collector import Collector
from dyncast_bgp.router.decision_log import DecisionLog
from dyncast_bgp.router.gauges import EXPORTED, GAUGES, Gauges
from dyncast_bgp.router.rejections import LogLimiter, log_rejections
from dyncast_bgp.router.shift import ShiftTracker
from dyncast_bgp.router.slices import in_slices
from dyncast_bgp.router.static import static_paths
from dyncast_bgp.router.status import StatusParts, status_frame, write_parts
from dyncast_bgp.wire.exabgp_json import EndOfRib, ExabgpJsonError, PeerState, SessionState, Shutdown, parse_line

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

ROLLOUT_SAVE_INTERVAL = 5.0  # seconds between saves of a running rollout's hold progress
LEADING_DEBOUNCE = 0.005  # seconds: a change after a quiet spell waits this long for the rest of its burst
STOP_AUDIT_SECONDS = 2.0  # at most this long building the queued audit records when the router stops
STEP_SLICE = 1024
"""Services decided before the loop lets its other tasks run (ExaBGP input, probe replies, the control socket,
the dataplane applier): a full recompute of 10,000 services goes in ten slices, so the loop is never held for
the whole of it (a probe reply read seconds late would count as a slow or lost probe)."""


@dataclass(slots=True)
class RouterCounters:
    lines: int = 0
    rejected_lines: int = 0
    path_changes: int = 0
    applies: int = 0
    apply_errors: int = 0
    last_apply_seconds: float = 0.0
    rejections: dict[str, int] = field(default_factory=dict)
    """Rejected input by reason (engine/trust.py REASONS: malformed lines, invalid or implausible metrics,
    clamped metrics, announcements refused by a trust rule); docs/hardening.md."""
    flaps: int = 0
    """Instance flaps seen by the flap dampening."""
    shift_evictions: int = 0
    """Failed instances whose flows were evicted (shift_on_failure, router/shift.py)."""
    shifted_flows: int = 0
    """Flows (conntrack and affinity entries) evicted from failed instances, to take a new pick."""
    drain_evictions: int = 0
    """Drained instances whose flows were evicted (ops/evict.py); their flows are in ``shifted_flows``."""
    rollback_evictions: int = 0
    """New-version instances whose flows a hard rollback evicted (ops/rollout.py)."""
    rollout_changes: int = 0
    """Rollout state changes (start, stage, pause, resume, rollback, commit)."""
    gc_full_collections: int = 0
    """Periodic full garbage collections (router/collector.py)."""
    gc_full_seconds: float = 0.0
    """How long the last one took (the router's loop waits meanwhile)."""
    recompute_seconds: float = 0.0
    """The last recompute, from its first step until no service was pending: a large one goes in slices
    (STEP_SLICE) with the loop's other tasks in between, and this is the whole of it."""
    recompute_services: int = 0
    """Services the last recompute decided (a service dirtied again during it counts again)."""
    recompute_slices: int = 0
    """Engine steps the last recompute took."""


@dataclass(slots=True)
class _Recompute:
    """A recompute under way: when its first step began (``time.perf_counter``), what it has decided so far."""

    began: float
    services: int = 0
    slices: int = 0


class RouterRuntime:
    def __init__(self, config: Config, *, lines: AsyncIterator[str], dataplane: Dataplane | None,
                 probes: bool = True, clock: Callable[[], float] = time.monotonic,
                 commands: Callable[[str], None] | None = None) -> None:
        router = config.router
        self.config = config
        self.deferred = Deferred()  # what a recompute replaced, released after it (dyncast_bgp/deferred.py)
        self.engine = RouterEngine(router, stale_time=router.stale_time(config.bgp.graceful_restart),
                                   static_paths=static_paths(router.static_paths), deferred=self.deferred)
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
        self.collector = Collector(router.gc_full_interval, clock=clock)
        self._first: set[ServiceId] = set()  # decided in the next step before other pending services
        self._all_decided = asyncio.Event()  # set while no service is pending (see _first_apply)
        self._recompute: _Recompute | None = None  # the recompute under way (see _time_recompute)
        self._wake = asyncio.Event()
        self._started_at = clock()
        self._peers_up: set[IPAddress] = set()
        self._peers_synced: set[IPAddress] = set()
        self._synced = asyncio.Event()
        self.installed: DesiredState | None = None
        # observability (docs/operations.md): control socket, metrics endpoint, decision audit
        self.sessions: dict[IPAddress, SessionState] = {}
        self.rejected: collections.Counter[str] = collections.Counter()  # ExaBGP lines, by reason
        self.book = DecisionBook(deferred=self.deferred)
        self.decision_log = DecisionLog(log, router.decision_log_lines)  # bounded per recompute (decision_log.py)
        self.control_server: ControlServer | None = None
        self.histograms: RouterHistograms | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.flow_sample: tuple[float, Mapping[InstanceKey, int]] | None = None
        self._dataplane_lock = threading.Lock()  # apply and flow counts never run at once (worker threads)
        self._rejection_log = LogLimiter()  # hardening: one line per peer/instance/reason per minute
        self._shift = ShiftTracker()  # shift_on_failure: instances that failed, evicted after the next apply
        self._shifting = any(policy.shift_on_failure for policy in router.policies())  # else nothing to look at
        self._to_evict: dict[InstanceKey, str] = {}  # decided out (failed, drained, rolled back): evict after an apply
        self._rolled_back: dict[InstanceKey, str] = {}  # a hard rollback's new version, until a step decides it out
        self._drained = DrainedTracker()  # drained instances: their flows are evicted (ops/evict.py)
        self.rollouts = RolloutBook(router.rollout_state)  # canary rollouts (ops/rollout.py), kept in a file
        self._rollouts_saved = clock()
        for problem in self.rollouts.load(clock()):
            log.error("rollout_state_unreadable", problem=problem)
        for service in self.rollouts.rollouts:
            self.engine.set_steer(service, self.rollouts.steer(service))
            log.info("rollout_restored", service=str(service), **_rollout_fields(self.rollouts.rollouts[service]))

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
        await self._start_observability(tasks)
        log.info("router_started", probes=self._prober is not None, dataplane=self._dataplane is not None)
        try:
            await self._own()
        finally:
            await self._stop_observability()
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
            if self.engine.pending or self.book.backlog or self.deferred:  # the rest of a large recompute
                await asyncio.sleep(0)  # (STEP_SLICE), of its audit records or of its releases: others go first
            else:
                due = min((t for t in (self.engine.next_due(), self.rollouts.next_due(), self.collector.next_due())
                           if t is not None), default=None)
                timeout = None if due is None else max(0.0, due - self._clock())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):  # not wait_for: it can swallow cancellation on 3.11
                        await self._wake.wait()
            woken = self._wake.is_set()
            self._wake.clear()
            self._release()  # before this turn's step: the last recompute's apply has had its turn since
            self._after_inputs()
            if not self.engine.pending:
                self._all_decided.set()
            if self.collector.due(self._clock(), idle=not woken and not self.engine.pending and not self.book.backlog
                                  and not self.deferred):
                self._collect()

    def _release(self) -> int:
        """This turn's share of what the recomputes replaced (dyncast_bgp/deferred.py): a chunk once nothing is
        pending, and at any time what is held beyond the limit (a router never idle stays bounded); how many.
        Called at the start of a turn, so what the previous turn's step replaced waits at least until the other
        tasks (the dataplane's apply among them) have had theirs."""
        released = self.deferred.release(RELEASE_CHUNK) if not self.engine.pending else 0
        return released + self.deferred.trim()

    def _collect(self) -> None:
        """The periodic full garbage collection (router/collector.py), counted and logged."""
        done = self.collector.full()
        self.counters.gc_full_collections = self.collector.collections
        self.counters.gc_full_seconds = round(done.seconds, 4)
        log.info("gc_full_collection", seconds=round(done.seconds, 4), unreachable=done.unreachable,
                 frozen=done.frozen)

    def _after_inputs(self) -> None:
        started = time.perf_counter()
        first, self._first = self._first, set()  # services a rollout change moved go before the rest
        with self.collector.paused():  # a full recompute's allocations would walk the whole state (collector.py)
            changed = self.engine.step(self._clock(), limit=STEP_SLICE, first=sorted(first, key=by_sort_key))
            decided, steps = self.engine.decided, 1
            if self._observe_rollouts(self._clock()):  # a stage moved or a rollback: decide those services again
                moved, self._first = self._first, set()  # now, whatever else is pending (their new caps)
                again = {outcome.decision.service: outcome for outcome in self.engine.step(
                    self._clock(), limit=len(moved), first=sorted(moved, key=by_sort_key))}
                changed = [again.pop(o.decision.service, o) for o in changed] + list(again.values())
                decided, steps = decided + self.engine.decided, 2
        self._account_rejections()
        if self.histograms is not None and decided:  # not the turns that only build audit records
            self.histograms.decision_seconds.observe(time.perf_counter() - started)
        self._time_recompute(started, decided, steps)
        self.book.record(changed, time.time())
        if self.book.backlog:  # a slice of the audit records (audit.py): their time is bounded per turn too
            self.book.write_pending(AUDIT_SLICE)
        self.decision_log.changed(changed)
        if not self.engine.pending:
            self.decision_log.finished()
        failed = self._shift.observe((outcome.decision for outcome in changed),
                                     lambda service: self.config.router.policy_for(service).shift_on_failure) \
            if self._shifting else {}
        failed.update(self._drained.observe(outcome.decision for outcome in changed))
        # a hard rollback (`rollout abort --hard` arrives between steps) is decided by this step at the latest: its
        # services go first; only now is the state without the new version there for the applier to install
        failed.update(self._rolled_back)
        self._rolled_back = {}
        self._to_evict.update(failed)
        if changed and self._prober is not None:
            self._prober.set_targets(self.engine.bindings())
        if changed or failed:  # not merely evictions still waiting: a refused apply is retried on a change
            self._apply_wanted.set()

    def _time_recompute(self, started: float, decided: int, steps: int) -> None:
        """Count a step that decided services into the recompute under way; when nothing is left pending, that
        recompute is done: its wall time (slices and the other tasks' turns between them) is observed."""
        if not decided:
            return
        run = self._recompute
        if run is None:
            run = self._recompute = _Recompute(started)
        run.services += decided
        run.slices += steps
        if self.engine.pending:
            return
        self._recompute = None
        seconds = time.perf_counter() - run.began
        self.counters.recompute_seconds = round(seconds, 4)
        self.counters.recompute_services, self.counters.recompute_slices = run.services, run.slices
        if self.histograms is not None:
            self.histograms.recompute_seconds.observe(seconds)
        if run.slices > 1:
            log.info("recompute_done", seconds=round(seconds, 3), services=run.services, slices=run.slices)

    def _account_rejections(self) -> None:
        """Count and log (rate-limited) what the RIB refused or discarded (docs/hardening.md)."""
        rib = self.engine.rib
        log_rejections(rib.take_rejections(), self._rejection_log, self._clock(), log)
        self.counters.rejections.update(rib.counters.rejected)
        self.counters.flaps = self.engine.flaps.flaps

    # ------------------------------------------------------------ the feeders

    async def _read(self) -> None:
        try:
            async for line in self._lines:
                self.counters.lines += 1
                try:
                    event = parse_line(line)
                except ExabgpJsonError as exc:
                    self.counters.rejected_lines += 1
                    self.counters.rejections[MALFORMED_LINE] = self.counters.rejections.get(MALFORMED_LINE, 0) + 1
                    self.rejected[rejection_reason(exc.message)] += 1
                    log.warning("exabgp_line_rejected", error=str(exc))
                    continue
                if isinstance(event, Shutdown):
                    log.info("exabgp_shutdown")
                    break
                if isinstance(event, PeerState):
                    log.info("bgp_peer_state", peer=str(event.peer), state=str(event.state), reason=event.reason)
                    self.sessions[event.peer] = event.state
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

    async def _first_apply(self) -> None:
        """Wait, after the sync, until every learned service has been decided (``startup_hold`` at most).

        A large RIB is decided a slice at a time (STEP_SLICE). The first apply after a start replaces what the
        previous run installed, so a service not decided yet would be missing from it and lose its flows; later
        applies keep the last decision of a service not decided again yet.
        """
        hold = self.config.router.startup_hold
        try:
            async with asyncio.timeout(hold):
                while self.engine.pending:
                    self._all_decided.clear()
                    await self._all_decided.wait()
        except TimeoutError:
            log.warning("first_apply_partial", seconds=hold, pending=self.engine.pending)

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
        memo = StatusParts()  # a service whose outcome is the same object is not rendered again
        while True:
            began = time.time()  # the services rendered a slice at a time (router/slices.py)
            parts = await in_slices(list(self.engine.outcomes()), memo.part)
            memo.done()
            head, tail = status_frame(now=began, synced=self._synced.is_set(),
                                      counters=dataclasses.asdict(self.counters))
            try:  # joined and written in a worker thread (status.write_parts), not on the loop
                await asyncio.to_thread(write_parts, path, head, parts, tail)
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
        await self._first_apply()
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
            with self.collector.paused():
                desired = self.engine.desired()
            # Only the evictions decided before this state was taken: once it is installed their instances take no
            # new flows. One decided while the apply runs (a step runs meanwhile) waits for the next apply: evicted
            # now, a flow's next packet could pick the instance again from the state still installed.
            covered, self._to_evict = self._to_evict, {}
            if desired == self.installed:
                await self._shift_flows(covered)
                continue
            try:
                result = await asyncio.to_thread(self._locked, self._dataplane.apply, desired)
            except DataplaneError as exc:
                self.counters.apply_errors += 1
                log.error("dataplane_apply_failed", error=str(exc))
                self._to_evict = {**covered, **self._to_evict}  # with the next apply that goes through
                continue
            finally:
                last_end = self._clock()
            self.installed = desired
            self.counters.applies += 1
            self.counters.last_apply_seconds = result.seconds
            if self.histograms is not None:
                self.histograms.apply_seconds.observe(result.seconds)
            log.info("dataplane_applied", changed=result.changed, seconds=round(result.seconds, 4),
                     summary=result.summary)
            await self._shift_flows(covered)

    async def _shift_flows(self, failed: dict[InstanceKey, str]) -> None:
        """Evict the flows of instances that failed (shift_on_failure), were drained or rolled back, once the state
        without them is installed."""
        if not failed or self._dataplane is None:
            return
        try:
            count = await asyncio.to_thread(self._locked, self._dataplane.evict, sorted(failed, key=_key_order))
        except (DataplaneError, OSError) as exc:
            log.error("flow_shift_failed", error=str(exc), instances=len(failed))
            return
        self.counters.drain_evictions += sum(1 for why in failed.values() if why == "drained")
        self.counters.rollback_evictions += sum(1 for why in failed.values() if why == "rollback")
        self.counters.shift_evictions += sum(1 for why in failed.values() if why not in ("drained", "rollback"))
        self.counters.shifted_flows += count
        log.info("flows_shifted", flows=count, instances={str(key.binding): why for key, why in failed.items()})


    # ------------------------------------------------------------ canary rollouts

    def _observe_rollouts(self, now: float) -> bool:
        """Feed every running rollout its KPI sample; True when a steer changed (stage moved, rolled back)."""
        moved = False
        for service in self.rollouts.active():
            sample = sample_of(self.engine.outcome(service), self.engine.new_version.get(service, ()))
            change = self.rollouts.observe(service, sample, now)
            if change is not None:
                self._rollout_changed(change, by="kpi" if change.after.status is Status.ROLLED_BACK else "timer")
                moved = True
        if self.rollouts.active() and now - self._rollouts_saved >= ROLLOUT_SAVE_INTERVAL:
            self._save_rollouts()  # the hold watched so far, so a restart loses little of it
        return moved

    def _rollout_changed(self, change: Change, *, by: str) -> None:
        service = change.service
        self._first.add(service)
        self.counters.rollout_changes += 1
        if change.evict:
            self._rolled_back.update(dict.fromkeys(self.engine.new_version.get(service, ()), "rollback"))
        self.engine.set_steer(service, self.rollouts.steer(service))
        for event, detail in change.events:
            log.info(event, service=str(service), by=by, detail=detail, **_rollout_fields(change.after))
        self._save_rollouts()
        self._wake.set()

    def _save_rollouts(self) -> None:
        self._rollouts_saved = self._clock()
        try:
            self.rollouts.save()
        except OSError as exc:
            log.error("rollout_state_write_failed", path=str(self.rollouts.path), error=str(exc))

    def rollout_request(self, request: Request) -> Response:
        """The ``rollout`` verb: status, start PLAN, pause, resume, abort [hard], commit, clear."""
        action = request.text("action") or "status"
        name = request.text("service")
        service: ServiceId | None = None
        if name is not None:
            try:
                service = ServiceId.parse(name)
            except ValueError as exc:
                return error(f"request.service: {exc}")
        if action == "status":
            return {"ok": True, "role": "router", "rollouts": self.rollouts.view(service)}
        if action == "start":
            path = request.text("plan")
            if path is None:
                return error("request.plan: `rollout start` needs the plan file's path")
            try:
                plan = load_plan(path)
            except PlanError as exc:
                return error(f"request.plan: {exc}")
            if service is not None and service != plan.service:
                return error(f"request.service: {service} is not the plan's service {plan.service}")
            result = self.rollouts.start(plan, self._clock())
        elif service is None:
            return error(f"request.service: `rollout {action}` needs the service")
        else:
            result = self.rollouts.act(service, action, self._clock(), hard=request.args.get("hard") is True)
        if isinstance(result, str):
            return error(result)
        self._rollout_changed(result, by="ctl")
        return {"ok": True, "role": "router", "rollouts": self.rollouts.view(result.service)}

    # ------------------------------------------------------------ observability

    async def _start_observability(self, tasks: list[asyncio.Task[None]]) -> None:
        """Audit log, control socket, metrics endpoint: each one that fails to start is logged, not fatal."""
        router = self.config.router
        if router.audit_log:
            self.book.writer = AuditWriter(router.audit_log, max_bytes=router.audit_max_bytes, keep=router.audit_keep)
            self.book.min_change = router.audit_min_change
        if router.control_socket:
            handler = control.RouterControl(self.engine, self.book, clock=self._clock, wall=time.time,
                                            status=self.status,
                                            flows=self._count_flows if self._dataplane is not None else None,
                                            rollout=self.rollout_request)
            try:
                self.control_server = await serve_control(router.control_socket, mode=router.control_socket_mode,
                                                          verbs=control.VERBS, handle=handler.handle)
            except ControlSocketError as exc:
                log.error("control_socket_failed", error=str(exc))
        if router.metrics_listen:
            registry = CollectorRegistry()
            self.histograms = RouterHistograms(registry)
            registry.register(LoopCollector(asyncio.get_running_loop(), self._metric_families))
            try:
                self.metrics_endpoint = await asyncio.to_thread(serve_metrics, router.metrics_listen, registry)
            except MetricsListenError as exc:
                log.error("metrics_listen_failed", error=str(exc))
            if self._dataplane is not None:
                tasks.append(asyncio.create_task(self._sample_flows(), name="flows"))

    async def _stop_observability(self) -> None:
        if self.control_server is not None:
            await self.control_server.close()
        if self.metrics_endpoint is not None:
            await asyncio.to_thread(self.metrics_endpoint.close)
        if self.book.writer is not None:
            self.book.write_pending(STOP_AUDIT_SECONDS)  # what is still queued then is dropped and counted
            self.book.writer.dropped += self.book.forget_pending()
            await asyncio.to_thread(self.book.writer.close)

    def _locked(self, call: Callable[..., _T], *args: object) -> _T:
        with self._dataplane_lock:
            return call(*args)

    async def _count_flows(self) -> Mapping[InstanceKey, int]:
        assert self._dataplane is not None
        return await asyncio.to_thread(self._locked, self._dataplane.flow_counts)

    async def _sample_flows(self) -> None:
        """Flow counts for the metrics endpoint, every ``router.metrics_interval`` (a scrape never waits on them)."""
        await self._synced.wait()
        failed: str | None = None
        while True:
            try:
                self.flow_sample = (self._clock(), await self._count_flows())
                failed = None
            except (DataplaneError, OSError) as exc:
                if failed != type(exc).__name__:
                    log.warning("flow_count_failed", error=str(exc))
                failed = type(exc).__name__
            await asyncio.sleep(self.config.router.metrics_interval)

    def status(self) -> dict[str, object]:
        """The ``status`` verb's answer: version, uptime, sessions, counters."""
        served, writer = self.control_server, self.book.writer
        return {
            "version": __version__, "pid": os.getpid(), "uptime": round(self._clock() - self._started_at, 3),
            "synced": self._synced.is_set(),
            "sessions": {str(peer): str(state) for peer, state in sorted(self.sessions.items())},
            "services": sum(1 for _ in self.engine.outcomes()), "paths": len(self.engine.rib),
            "counters": dataclasses.asdict(self.counters), "rejected": dict(self.rejected),
            "rib": dataclasses.asdict(self.engine.rib.counters), "decisions_changed": self.engine.decisions_changed,
            "control_requests": served.requests if served is not None else 0,
            "control_rejected": served.rejected if served is not None else 0,
            "audit": None if writer is None else {"path": str(writer.path), "written": writer.written,
                                                  "dropped": writer.dropped, "skipped": self.book.skipped},
        }

    async def _metric_families(self) -> Families:
        """The state families of the metrics endpoint (run on the event loop at scrape time; the instances, which
        cost, a slice at a time: router/slices.py)."""
        engine = self.engine
        rib = engine.rib
        routes = dict(await in_slices(rib.services(), lambda service: (str(service), rib.path_count(service))))
        mode = self.config.router.metrics_instances
        parts = await in_slices(list(engine.outcomes()), GAUGES[mode])
        samples: dict[str, list[Sample]] = {name: [] for name in EXPORTED[mode]}  # declared with no service too
        fallbacks: dict[str, str | None] = {}

        def join(part: Gauges) -> None:  # a few list and dict operations per service; in slices too: at 10,000
            for name, rows in part.samples.items():  # services of 16 instances, 1.6 million samples held the
                samples.setdefault(name, []).extend(rows)  # loop 234-354 ms in one piece
            fallbacks[part.service] = part.fallback

        await in_slices(parts, join)
        # per D-BID, as measured now (the explanations hold the same measurement as of their decision)
        paths = dict(await in_slices(list(engine.bindings()),
                                     lambda binding: (str(binding), path_dict(engine.path_of(binding)))))
        sample = self.flow_sample
        writer, served = self.book.writer, self.control_server
        counters = {
            "exabgp_lines": self.counters.lines, "path_changes": self.counters.path_changes,
            "decisions_changed": self.engine.decisions_changed, "applies": self.counters.applies,
            "apply_errors": self.counters.apply_errors, "metric_problems": self.engine.rib.counters.metric_problems,
            "control_requests": served.requests if served is not None else 0,
            "control_rejected": served.rejected if served is not None else 0,
            "audit_records": writer.written if writer is not None else 0,
            "audit_dropped": writer.dropped if writer is not None else 0,
            "audit_skipped": self.book.skipped,
            "flaps": self.counters.flaps,
            "gc_full_collections": self.collector.collections,
        }
        return router_families(RouterView(
            sessions={str(peer): str(state) for peer, state in self.sessions.items()},
            routes=routes, instances=(), fallbacks=fallbacks, paths=paths,
            flows=None if sample is None else {(str(key.service), str(key.binding)): count
                                               for key, count in sample[1].items()},
            flows_age=None if sample is None else round(self._clock() - sample[0], 3),
            counters=counters, rejected=dict(self.rejected), synced=self._synced.is_set(),
            input_rejected=dict(self.counters.rejections), instance_samples=samples))


def _rollout_fields(rollout: Rollout) -> dict[str, object]:
    return {"status": str(rollout.status), "stage": rollout.stage + 1, "stages": len(rollout.plan.stages),
            "cap": rollout.share, "version": rollout.plan.version, "plan": rollout.plan.name or None}


def _key_order(key: InstanceKey) -> tuple[object, ...]:
    return key.sort_key
