"""What an ingress can know, and when: agent reports, their damping, BGP delay, probes, views.

The information model is what keeps the comparison honest. Every ingress policy
decides on a :class:`View`, an immutable value built by :func:`build_view` from

- the agent reports (:class:`Report`) that the damping rule (:func:`publishes`,
  the agent's rule of docs/agent.md) let out, each visible to ingress ``i`` only
  ``propagation_s + jitter_i`` after it was published;
- the ingress's own probes: the RTT with measurement noise, and reachability
  that fails ``probe_detect_s`` after a site does.

A view holds plain numbers, no reference to the simulator: a policy cannot read
the true current state through it (tested). :func:`check_causal` verifies, for
every view the simulator builds, that nothing in it was measured later than the
delays allow; a feed that leaks newer information raises :class:`CausalityError`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from dyncast_bgp.sim.scenario import Damping, Window


class CausalityError(AssertionError):
    """A view held information an ingress could not have had at that simulated time."""


@dataclass(frozen=True, slots=True)
class Report:
    """One BGP update from a site's agent: its metrics as measured at ``measured_at``.

    ``withdrawn``: the route was withdrawn (the site failed its health check).
    ``utilisation`` is the mean busy fraction of the servers over the agent interval (percent);
    ``busy`` and ``queued`` the requests in service and waiting at ``measured_at``.
    """

    site: int
    measured_at: float
    published_at: float
    utilisation: float = 0.0
    busy: int = 0
    queued: int = 0
    withdrawn: bool = False


def publishes(previous: Report | None, utilisation: float, backlog: int, now: float, damping: Damping) -> bool:
    """The agent's damping rule: does a fresh measurement go out now?

    Never sooner than ``min_interval_s`` after the previous update; at once when a
    metric moved by its threshold (``absolute``, or ``relative`` to the published value)
    or the route was withdrawn; otherwise once ``refresh_s`` has passed.
    """
    if previous is None or previous.withdrawn:
        return True
    since = now - previous.published_at
    if since < damping.min_interval_s - 1e-9:
        return False
    if since >= damping.refresh_s - 1e-9:
        return True
    old_backlog = float(previous.busy + previous.queued)
    return (_moved(previous.utilisation, utilisation, damping)
            or _moved(old_backlog, float(backlog), damping))


def _moved(old: float, new: float, damping: Damping) -> bool:
    change = abs(new - old)
    if change == 0.0:
        return False
    if damping.absolute is not None and change >= damping.absolute:
        return True
    return old == 0.0 or change / abs(old) >= damping.relative


@dataclass
class Feed:
    """Every report every agent published, per site, in publication order."""

    sites: int
    _reports: list[list[Report]] = field(init=False)
    _times: list[list[float]] = field(init=False)

    def __post_init__(self) -> None:
        self._reports = [[] for _ in range(self.sites)]
        self._times = [[] for _ in range(self.sites)]

    def publish(self, report: Report) -> None:
        times = self._times[report.site]
        if times and report.published_at < times[-1]:
            raise ValueError("reports must be published in time order")
        times.append(report.published_at)
        self._reports[report.site].append(report)

    def last(self, site: int) -> Report | None:
        reports = self._reports[site]
        return reports[-1] if reports else None

    def latest(self, site: int, published_by: float) -> Report | None:
        """The newest report of ``site`` published at or before ``published_by``."""
        index = bisect.bisect_right(self._times[site], published_by + 1e-9)
        return self._reports[site][index - 1] if index else None


@dataclass(frozen=True, slots=True)
class SiteView:
    """One site as an ingress sees it. ``utilisation`` etc. are None before the first report."""

    name: str
    announced: bool
    capacity: float
    servers: int
    utilisation: float | None
    busy: int | None
    queued: int | None
    measured_at: float | None
    rtt_ms: float
    reachable: bool


@dataclass(frozen=True, slots=True)
class View:
    """Everything one ingress knows at ``now``: plain values, no handle on the simulated world."""

    now: float
    ingress: int
    sites: tuple[SiteView, ...]
    visible_from: float
    """The newest publication time this view may contain (now minus the ingress's BGP delay)."""


def probe_reachable(failures: tuple[Window, ...], now: float, detect_s: float) -> bool:
    """Probes call a site unreachable from ``detect_s`` after it fails until ``detect_s`` after it recovers."""
    return not any(window.start + detect_s <= now < window.end + detect_s for window in failures)


def build_view(feed: Feed, *, ingress: int, now: float, delay_s: float, names: tuple[str, ...],
               capacities: tuple[float, ...], servers: tuple[int, ...], rtt_ms: tuple[float, ...],
               reachable: tuple[bool, ...]) -> View:
    """The view of ``ingress`` at ``now``: the reports published by ``now - delay_s``, plus its probes."""
    cutoff = now - delay_s
    sites = []
    for index, name in enumerate(names):
        report = feed.latest(index, cutoff)
        if report is None:
            sites.append(SiteView(name, False, capacities[index], servers[index], None, None, None, None,
                                  rtt_ms[index], reachable[index]))
        else:
            sites.append(SiteView(name, not report.withdrawn, capacities[index], servers[index],
                                  report.utilisation, report.busy, report.queued, report.measured_at,
                                  rtt_ms[index], reachable[index]))
    return View(now, ingress, tuple(sites), cutoff)


def check_causal(view: View, now: float) -> None:
    """Raise :class:`CausalityError` if ``view`` holds anything measured after it could have arrived."""
    if view.now != now or view.visible_from > now + 1e-9:
        raise CausalityError(f"view for t={view.now:g} used at t={now:g} (visible from {view.visible_from:g})")
    for site in view.sites:
        if site.measured_at is not None and site.measured_at > view.visible_from + 1e-9:
            raise CausalityError(f"site {site.name}: measured at t={site.measured_at:g}, but only reports "
                                 f"published by t={view.visible_from:g} can have reached ingress {view.ingress}")
