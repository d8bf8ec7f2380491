"""Prometheus metrics of the router and the agent (``router.metrics_listen``, ``agent.metrics_listen``).

Each process gets its own :class:`~prometheus_client.CollectorRegistry` (no
module-level registry). Two kinds of metric live in it:

- histograms observed where things happen (decision and apply latency), which
  are thread-safe and cost a microsecond;
- everything that describes state (sessions, routes, instance metrics, weights,
  path RTT/loss, flows, counters), built at scrape time by a pure function of
  the process's state. The HTTP server runs in its own thread, while the state
  belongs to the event loop, so :class:`LoopCollector` runs that function *on
  the loop* (``call_soon_threadsafe``) and waits for it; the router's reads
  every decision's explanation and runs a slice at a time (``router/slices.py``,
  decision 0013), so it does not hold the loop either. A scrape that waits
  longer than ``timeout`` gets the previous scrape's families instead, so a
  scrape never sees half-updated state.

Names and labels are listed in docs/operations.md. The builders here take plain
values (mappings, counters, the engine's outcomes) so tests need no process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import structlog
from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from dyncast_bgp.config.schema import listen_address

log = structlog.get_logger(__name__)

Families = list[Metric]
REAP_CHUNK = 5_000
"""Samples of replaced families freed at a time, between turns of the loop (:meth:`LoopCollector._reap`)."""
REAP_WAIT = 0.1  # seconds between looks at replaced families that a scrape still renders
REAP_PATIENCE = 60.0  # seconds after which they are simply dropped (freed when the scrape lets them go)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
RECOMPUTE_BUCKETS = (*LATENCY_BUCKETS, 10.0, 30.0)


class LoopCollector(Collector):
    """Builds the state families on the event loop ``loop`` when scraped (see the module docstring).

    ``build`` returns the families, or an awaitable of them: the router's build reads every decision's
    explanation and does so a slice at a time (``router/slices.py``), so the loop keeps turning while it runs.
    One such build runs at a time: a scrape while one runs waits for it. A scrape that has waited ``timeout``
    gets the last families built; the build runs on, and what it builds is what the next scrape gets.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, build: Callable[[], Families | Awaitable[Families]], *,
                 timeout: float = 2.0) -> None:
        self._loop = loop
        self._build = build
        self.timeout = timeout  # seconds a scrape waits for a build before it takes the last families
        self._last: Families = []
        self._running: asyncio.Future[Families] | None = None  # the build under way (on the loop)
        self._reaping: set[asyncio.Task[None]] = set()  # replaced families being freed (see _reap)
        self.late = 0  # scrapes answered with the previous families

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to reserve: the names are only known when built

    def collect(self) -> Iterable[Metric]:
        if self._on_loop_thread():  # a scrape from the loop itself cannot wait for a build in slices
            built = self._safe_build()
            if inspect.isawaitable(built):
                _close(built)
            else:
                self._replace(built)
            return list(self._last)
        future: concurrent.futures.Future[Families] = concurrent.futures.Future()

        def answer(_: object = None) -> None:
            if not future.done():
                future.set_result(self._last)

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            running = self._running
            if running is None or running.done():
                built = self._safe_build()
                if not inspect.isawaitable(built):
                    self._replace(built)
                    answer()
                    return
                running = self._running = asyncio.ensure_future(built)
                running.add_done_callback(self._keep)  # first: the answer below reads what it kept
            running.add_done_callback(answer)

        try:  # only the loop writes _last: a thread put off between reading and storing would put back an older
            self._loop.call_soon_threadsafe(run)  # build than one already served (found in review)
            return list(future.result(timeout=self.timeout))
        except (concurrent.futures.TimeoutError, RuntimeError):  # busy loop, or closed
            future.cancel()
            self.late += 1
        return list(self._last)

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _safe_build(self) -> Families | Awaitable[Families]:
        try:
            return self._build()
        except Exception:  # a bug in a builder must not take the endpoint (or the loop) down
            log.exception("metrics_build_failed")
            return self._last

    def _keep(self, running: asyncio.Future[Families]) -> None:
        if running.cancelled():
            return
        problem = running.exception()
        if problem is not None:  # the same as a builder that raises at once: the previous families stay
            log.error("metrics_build_failed", error=f"{type(problem).__name__}: {problem}")
            return
        self._replace(running.result())

    def _replace(self, built: Families) -> None:
        """Serve ``built`` from now on (on the loop); the families it replaces are freed a chunk at a time."""
        old, self._last = self._last, built
        if old is not built and sum(len(family.samples) for family in old) > REAP_CHUNK:
            kept = {id(family) for family in built}  # by identity: a Metric's equality compares every sample
            task = self._loop.create_task(self._reap([family for family in old if id(family) not in kept]))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)

    async def _reap(self, old: Families) -> None:
        """Free the samples of ``old`` (families just replaced) :data:`REAP_CHUNK` at a time, letting the loop turn
        in between. At 10,000 services of 16 instances a build with ``metrics_instances: all`` has 1.6 million
        samples (each with its dict of labels): dropped with the families, they were freed in one piece, about
        0.5 s of the loop.

        A family's samples are only cut while nothing else holds the family or its list of samples. No one can
        take them any more (scrapes are handed ``_last``, already the new families), but a scrape answered just
        before may still be rendering them in the HTTP thread: then it waits for the scrape to let go, and after
        :data:`REAP_PATIENCE` drops them as they are (freed, whole, when the scrape ends)."""
        deadline = self._loop.time() + REAP_PATIENCE
        while old:
            family = old.pop()
            samples = family.samples
            # held here only: the local name and getrefcount's argument (the list: the family's attribute too)
            while sys.getrefcount(family) > 2 or sys.getrefcount(samples) > 3:
                if self._loop.time() >= deadline:
                    break
                await asyncio.sleep(REAP_WAIT)
            else:
                while samples:
                    del samples[-REAP_CHUNK:]
                    await asyncio.sleep(0)


def _close(awaitable: Awaitable[Families]) -> None:
    """Discard a build that will not run (a coroutine never awaited would warn)."""
    if inspect.iscoroutine(awaitable):
        awaitable.close()


@dataclass(slots=True)
class MetricsEndpoint:
    """The HTTP server of one registry; ``close`` stops its thread."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=2.0)


class MetricsListenError(Exception):
    """The endpoint could not listen (the message says where and why)."""


def serve_metrics(listen: str, registry: CollectorRegistry) -> MetricsEndpoint:
    """Serve ``registry`` over HTTP on ``listen`` (``host:port``; port 0 picks a free one in tests)."""
    try:
        host, port = listen_address(listen)
    except ValueError as exc:
        raise MetricsListenError(str(exc)) from None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise MetricsListenError(f"{listen}: cannot listen: {exc.strerror or exc}") from None
    endpoint = MetricsEndpoint(server, thread)
    log.info("metrics_listening", host=host, port=endpoint.port)
    return endpoint


# ---------------------------------------------------------------- family builders


def gauge(name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def counter(name: str, doc: str, labels: Sequence[str], rows: Iterable[tuple[Sequence[str], float]]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for values, value in rows:
        family.add_metric(list(values), value)
    return family


def scalar(name: str, doc: str, value: float) -> Metric:
    return gauge(name, doc, (), [((), value)])


def total(name: str, doc: str, value: float) -> Metric:
    return counter(name, doc, (), [((), value)])


# ---------------------------------------------------------------- router


class RouterHistograms:
    """The router's event-time metrics, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.decision_seconds = Histogram(
            "dyncast_router_decision_seconds", "Time of one engine step (at most STEP_SLICE services)",
            registry=registry, buckets=LATENCY_BUCKETS)
        self.recompute_seconds = Histogram(
            "dyncast_router_recompute_seconds",
            "Wall time of one recompute, from its first step until no service was pending (its slices and the "
            "other tasks' turns between them)", registry=registry, buckets=RECOMPUTE_BUCKETS)
        self.apply_seconds = Histogram(
            "dyncast_router_apply_seconds", "Time the dataplane took to apply one desired state",
            registry=registry, buckets=LATENCY_BUCKETS)


REJECTION_REASONS = {"not a JSON object": "not_object", "invalid JSON": "invalid_json",
                     "missing key": "missing_key", "unexpected value": "unexpected_value"}


def rejection_reason(message: str) -> str:
    """A short, bounded label for why an ExaBGP line was rejected (the parser's message, classified)."""
    for prefix, reason in REJECTION_REASONS.items():
        if message.startswith(prefix):
            return reason
    return "invalid"


@dataclass(frozen=True, slots=True)
class RouterView:
    """What the router's state families are built from (read on the event loop)."""

    sessions: Mapping[str, str]  # peer -> "up" | "down" | "connected"
    routes: Mapping[str, int]  # service -> paths in the RIB
    instances: Sequence[Mapping[str, object]]  # InstanceExplain.gauges() (or to_dict()) plus "service"
    fallbacks: Mapping[str, str | None]  # service -> fallback in force
    paths: Mapping[str, Mapping[str, object]]  # D-BID -> path dict as in the explanation
    flows: Mapping[tuple[str, str], int] | None  # (service, D-BID) -> flows; None: not sampled
    flows_age: float | None
    counters: Mapping[str, float]
    rejected: Mapping[str, int]  # reason -> lines
    synced: bool
    input_rejected: Mapping[str, int] = field(default_factory=dict)  # reason -> announcements/metrics (RIB)
    instance_samples: Mapping[str, Sequence[Sample]] | None = None  # made beforehand from ``instances``; only
    # the families named in it are exported (router.metrics_instances)


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


INSTANCE_FAMILIES: dict[str, tuple[str, tuple[str, ...]]] = {
    "dyncast_router_instance_metric": ("An instance's metric as received in its BGP communities",
                                       ("service", "instance", "metric")),
    "dyncast_router_instance_metrics_age_seconds": ("Seconds since the instance's route was last updated",
                                                    ("service", "instance")),
    "dyncast_router_weight": ("Share of new flows given to the instance (0-1)", ("service", "instance")),
    "dyncast_router_instance_eligible": ("1 when the instance may take new flows", ("service", "instance")),
    "dyncast_router_instance_score": ("The decision's scores: compute and network (L1), overall (L2), 0-10",
                                      ("service", "instance", "score")),
}
"""The per-instance families: name -> (help, labels)."""
_METRIC, _AGE, _WEIGHT, _ELIGIBLE, _SCORE = INSTANCE_FAMILIES
WEIGHT_FAMILY = _WEIGHT


def weight_samples(service: str, weights: Iterable[tuple[str, float]]) -> list[Sample]:
    """``dyncast_router_weight`` samples of one service: (instance, weight) pairs."""
    return [Sample(_WEIGHT, {"service": service, "instance": instance}, weight) for instance, weight in weights]


def instance_samples(items: Iterable[Mapping[str, object]]) -> dict[str, list[Sample]]:
    """The samples of the per-instance families (:data:`INSTANCE_FAMILIES`) for ``items`` (each an
    ``InstanceExplain.gauges()`` or ``to_dict()`` plus ``service``), by family name. Made as samples, not rows, so
    that the router can make them a slice at a time and join the slices' lists (``router/slices.py``)."""
    metric: list[Sample] = []
    age: list[Sample] = []
    weight: list[Sample] = []
    eligible: list[Sample] = []
    score: list[Sample] = []
    for item in items:
        service, instance = str(item["service"]), str(item["instance"])
        metrics = item.get("metrics")
        if isinstance(metrics, Mapping):
            for name, value in sorted(metrics.items()):
                number = _number(value)
                if number is not None:
                    metric.append(Sample(_METRIC, {"service": service, "instance": instance, "metric": str(name)},
                                         number))
        number = _number(item.get("metrics_age"))
        if number is not None:
            age.append(Sample(_AGE, {"service": service, "instance": instance}, number))
        weight.append(Sample(_WEIGHT, {"service": service, "instance": instance}, _number(item.get("weight")) or 0.0))
        eligible.append(Sample(_ELIGIBLE, {"service": service, "instance": instance},
                               1.0 if item.get("eligible") else 0.0))
        scores = item.get("scores")
        if isinstance(scores, Mapping):
            for level in ("compute", "network", "overall"):
                number = _number(scores.get(level))
                if number is not None:
                    score.append(Sample(_SCORE, {"service": service, "instance": instance, "score": level}, number))
    return {_METRIC: metric, _AGE: age, _WEIGHT: weight, _ELIGIBLE: eligible, _SCORE: score}


def router_families(view: RouterView) -> Families:
    families: Families = [
        scalar("dyncast_router_bgp_sessions_up", "BGP sessions established (ExaBGP neighbor state up)",
               sum(1 for state in view.sessions.values() if state == "up")),
        gauge("dyncast_router_bgp_session_up", "1 when the session with this peer is up", ("peer",),
              [((peer,), 1.0 if state == "up" else 0.0) for peer, state in sorted(view.sessions.items())]),
        gauge("dyncast_router_routes", "Paths in the RIB per service (all peers, ADD-PATH paths counted)",
              ("service",), [((service,), count) for service, count in sorted(view.routes.items())]),
        scalar("dyncast_router_rib_synced", "1 once every established peer sent End-of-RIB (or startup_hold ran out)",
               1.0 if view.synced else 0.0),
        gauge("dyncast_router_service_fallback", "1 for the fallback in force for a service with no eligible "
              "instance", ("service", "fallback"),
              [((service, fallback), 1.0) for service, fallback in sorted(view.fallbacks.items()) if fallback]),
    ]
    samples = view.instance_samples if view.instance_samples is not None else instance_samples(view.instances)
    for name, (text, labels) in INSTANCE_FAMILIES.items():
        if name not in samples:  # not exported (router.metrics_instances)
            continue
        family = GaugeMetricFamily(name, text, labels=list(labels))
        family.samples = list(samples.get(name, ()))  # a list of its own (the view may be read again)
        families.append(family)
    families += _path_families(view.paths)
    if view.flows is not None:
        families.append(gauge("dyncast_router_flows", "Live flows (conntrack entries) per instance, sampled",
                              ("service", "instance"),
                              [((service, dbid), count) for (service, dbid), count in sorted(view.flows.items())]))
    if view.flows_age is not None:
        families.append(scalar("dyncast_router_flows_sample_age_seconds", "Age of the flow-count sample",
                               view.flows_age))
    families.append(counter("dyncast_router_exabgp_lines_rejected", "ExaBGP lines skipped, by reason", ("reason",),
                            [((reason,), count) for reason, count in sorted(view.rejected.items())]))
    families.append(counter("dyncast_router_input_rejected",
                            "Announcements or metrics refused, clamped or discarded at intake (trust policy, "
                            "RFC 7606-style checks), by reason", ("reason",),
                            [((reason,), count) for reason, count in sorted(view.input_rejected.items())]))
    for name, value in view.counters.items():
        doc = ROUTER_COUNTERS.get(name)
        if doc is not None:
            families.append(total(f"dyncast_router_{name}", doc, value))
    return families


ROUTER_COUNTERS = {
    "exabgp_lines": "ExaBGP lines read",
    "path_changes": "Path metric changes from the probes",
    "decisions_changed": "Decision changes (any service)",
    "applies": "Desired states applied to the dataplane",
    "apply_errors": "Dataplane applies that failed",
    "metric_problems": "Metric communities dropped as malformed or out of range",
    "control_requests": "Control socket requests",
    "control_rejected": "Control socket requests answered with an error",
    "audit_records": "Decision changes written to the audit log",
    "audit_skipped": "Decision changes not written to the audit log: below router.audit_min_change",
    "audit_dropped": "Audit records dropped (more than 10,000 waiting to be built or written, a failed write, or "
                     "still waiting when the router stopped)",
    "flaps": "Instance flaps counted by the flap dampening",
    "gc_full_collections": "Periodic full garbage collections (between them the router's state is frozen)",
}


def _path_families(paths: Mapping[str, Mapping[str, object]]) -> Families:
    rtt, peak, loss, reachable = [], [], [], []
    for dbid, path in sorted(paths.items()):
        if (value := _number(path.get("rtt_mean_us"))) is not None:
            rtt.append(((dbid,), value / 1e6))
        if (value := _number(path.get("rtt_peak_us"))) is not None:
            peak.append(((dbid,), value / 1e6))
        if (value := _number(path.get("loss_mean"))) is not None:
            loss.append(((dbid,), value))
        reachable.append(((dbid,), 1.0 if path.get("reachable", True) else 0.0))
    return [
        gauge("dyncast_router_path_rtt_seconds", "Probe RTT toward the D-BID, mean over the window", ("instance",),
              rtt),
        gauge("dyncast_router_path_rtt_peak_seconds", "Probe RTT toward the D-BID, peak over the window",
              ("instance",), peak),
        gauge("dyncast_router_path_loss_ratio", "Probe loss toward the D-BID over the window (0-1)", ("instance",),
              loss),
        gauge("dyncast_router_path_reachable", "0 when the probes toward the D-BID stopped answering", ("instance",),
              reachable),
    ]


# ---------------------------------------------------------------- agent


AGENT_COUNTERS = {
    "updates_sent": "Route announcements and withdrawals sent to ExaBGP",
    "commands_written": "ExaBGP API commands written",
    "source_failures": "Metric source failures",
    "health_flips": "Health state changes",
    "admin_changes": "Admin state changes by the control socket",
    "control_requests": "Control socket requests",
    "control_rejected": "Control socket requests answered with an error",
}


def agent_families(status: Mapping[str, object], instances: Sequence[Mapping[str, object]]) -> Families:
    """From the agent's ``status`` counters and its ``instances`` views (agent/control.py)."""
    families: Families = [
        scalar("dyncast_agent_published_routes", "Routes currently announced", _number(status.get("published_routes"))
               or 0.0),
        scalar("dyncast_agent_uptime_seconds", "Seconds since the agent started", _number(status.get("uptime")) or 0.0),
        counter("dyncast_agent_acks", "ExaBGP acknowledgements of our commands, by result", ("result",),
                [(("done",), _number(status.get("acks_done")) or 0.0),
                 (("error",), _number(status.get("acks_error")) or 0.0)]),
    ]
    for name, doc in AGENT_COUNTERS.items():
        families.append(total(f"dyncast_agent_{name}", doc, _number(status.get(name)) or 0.0))
    families.append(total("dyncast_agent_updates_suppressed", "Updates held back by damping (below the threshold, "
                          "or within min_interval of the route's last update)", _number(status.get("updates_held"))
                          or 0.0))
    metric_rows: list[tuple[Sequence[str], float]] = []
    health, published, admin = [], [], []
    for view in instances:
        labels = (str(view.get("service")), str(view.get("instance")), str(view.get("dbid")))
        for name, value in sorted(_mapping(view.get("metrics")).items()):
            number = _number(value)
            if number is not None:
                metric_rows.append(((*labels, str(name)), number))
        health.append((labels, {"healthy": 1.0, "unhealthy": 0.0}.get(str(view.get("health")), -1.0)))
        published.append((labels, 1.0 if view.get("published") else 0.0))
        admin.append(((*labels, str(view.get("admin"))), 1.0))
    families += [
        gauge("dyncast_agent_instance_metric", "An instance's metric as collected (before damping)",
              ("service", "instance", "dbid", "metric"), metric_rows),
        gauge("dyncast_agent_instance_healthy", "1 healthy, 0 unhealthy, -1 not known yet",
              ("service", "instance", "dbid"), health),
        gauge("dyncast_agent_instance_published", "1 while the instance's route is announced",
              ("service", "instance", "dbid"), published),
        gauge("dyncast_agent_instance_admin", "1 for the instance's admin state", ("service", "instance", "dbid",
                                                                                  "state"), admin),
    ]
    return families


def _mapping(value: object) -> Mapping[str, object]:
    return value if isinstance(value, Mapping) else {}

