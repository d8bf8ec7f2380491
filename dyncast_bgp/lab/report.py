"""The lab report: per phase, where new sessions went, how fast they were served, what failed.

Input: the load generator's events (see :mod:`dyncast_bgp.lab.loadgen`), the
phases of the story ``(t_start, name, description)`` in wall time, optional
extra time series grouped by plot (``{"load": {"site-a": [(t, v), ...]}}``),
and optionally a mapping instance -> site. Output, in one directory:
``report.md``, ``share.png``, ``latency.png`` and one ``<group>.png`` per series group.

The numbers are computed by :func:`phase_stats` and rendered by
:func:`render_markdown`, both pure; only :func:`write_report` touches files.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from dyncast_bgp.lab.loadgen import (
    NO_INSTANCE,
    RequestEvent,
    WindowStats,
    bucketize,
    read_events,
    session_facts,
    window_stats,
)

PhaseSpec = tuple[float, str, str]
Series = Sequence[tuple[float, float]]
SeriesGroups = Mapping[str, Mapping[str, Series]]
BEFORE = "(before)"
RESERVED_PLOTS = ("share", "latency")


class ReportError(ValueError):
    """The report cannot be made from these inputs; the message says which one is wrong."""


@dataclass(frozen=True)
class PhaseStats:
    name: str
    description: str
    start: float
    end: float
    stats: WindowStats  # new sessions already summed per site


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    markdown: Path
    share_png: Path
    latency_png: Path
    series_pngs: dict[str, Path]

    def all(self) -> list[Path]:
        return [self.markdown, self.share_png, self.latency_png, *self.series_pngs.values()]


# ---------------------------------------------------------------- numbers (pure)


def checked_phases(phases: Sequence[PhaseSpec]) -> list[PhaseSpec]:
    """Phases sorted by start; raises :class:`ReportError` when there are none or two start together."""
    if not phases:
        raise ReportError("at least one phase is needed")
    ordered = sorted(phases, key=lambda p: p[0])
    for (t1, n1, _), (t2, n2, _) in itertools.pairwise(ordered):
        if t1 == t2:
            raise ReportError(f"phases {n1!r} and {n2!r} both start at {t1}")
    for t, name, _ in ordered:
        if not name or not math.isfinite(t):
            raise ReportError(f"phase at {t} needs a name and a finite start time, got {name!r}")
    return ordered


def phase_stats(events: Sequence[RequestEvent], phases: Sequence[PhaseSpec], *,
                sites: Mapping[str, str] | None = None, end: float | None = None) -> list[PhaseStats]:
    """Stats per phase; the last phase runs to ``end`` (default: just after the last event).

    Events before the first phase make a leading :data:`BEFORE` row, so nothing
    recorded is left out of the report.
    """
    ordered = checked_phases(phases)
    facts = session_facts(events)
    last = max([e.t for e in events], default=ordered[-1][0])
    stop = end if end is not None else math.nextafter(max(last, ordered[-1][0]), math.inf)
    bounds = [(t, name, text) for t, name, text in ordered]
    first = min([e.t for e in events], default=ordered[0][0])
    if first < ordered[0][0]:
        bounds.insert(0, (first, BEFORE, "events recorded before the first phase"))
    rows = []
    for i, (start, name, text) in enumerate(bounds):
        finish = bounds[i + 1][0] if i + 1 < len(bounds) else stop
        stats = window_stats(events, start, finish, facts).grouped(sites or {})
        rows.append(PhaseStats(name, text, start, finish, stats))
    return rows


def site_order(rows: Sequence[PhaseStats]) -> list[str]:
    names = {name for row in rows for name in row.stats.new_sessions}
    return sorted(names - {NO_INSTANCE}) + ([NO_INSTANCE] if NO_INSTANCE in names else [])


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100.0 * share:.1f} %"


def _errors(errors: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} x{count}" for kind, count in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])))


def render_markdown(rows: Sequence[PhaseStats], *, title: str, t0: float, plots: Sequence[str],
                    sources: Sequence[str] = ()) -> str:
    """The report text; times are seconds from ``t0``, shares are of new sessions per site."""
    sites = site_order(rows)
    total_requests = sum(r.stats.requests for r in rows)
    total_sessions = sum(r.stats.sessions for r in rows)
    lines = [f"# {title}", "",
             f"{total_requests} requests in {total_sessions} sessions"
             + (f" from {', '.join(sources)}" if sources else "")
             + ". Times are seconds from the start of the first phase; a session belongs to the phase in which "
             "it started and to the instance that answered its first request.", "",
             "## Summary", "",
             "| phase | from (s) | length (s) | new sessions | " + " | ".join(f"share {s}" for s in sites)
             + " | p50 (ms) | p99 (ms) | failed requests | moved sessions |",
             "|---|---:|---:|---:|" + "---:|" * len(sites) + "---:|---:|---:|---:|"]
    for row in rows:
        shares = row.stats.shares
        cells = [row.name, f"{row.start - t0:.1f}", f"{row.end - row.start:.1f}", str(row.stats.sessions),
                 *(_pct(shares.get(s, 0.0) if shares else None) for s in sites),
                 _ms(row.stats.p50_ms), _ms(row.stats.p99_ms), str(row.stats.failures), str(row.stats.moves)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Phases", ""]
    for number, row in enumerate(rows, start=1):
        lines += _phase_section(number, row, sites)
    if plots:
        lines += ["## Plots", "", *(f"![{Path(p).stem}]({p})" for p in plots), ""]
    return "\n".join(lines)


def _phase_section(number: int, row: PhaseStats, sites: Sequence[str]) -> list[str]:
    stats = row.stats
    shares = stats.shares
    lines = [f"### {number}. {row.name}", ""]
    if row.description:
        lines += [row.description, ""]
    lines += ["| site | new sessions | share |", "|---|---:|---:|"]
    for site in sites:
        count = stats.new_sessions.get(site, 0)
        lines.append(f"| {site} | {count} | {_pct(shares.get(site, 0.0) if shares else None)} |")
    errors = _errors(stats.errors)
    lines += ["",
              f"Requests: {stats.requests}, failed: {stats.failures}" + (f" ({errors})" if errors else "")
              + f"; moved sessions: {stats.moves}; latency p50 {_ms(stats.p50_ms)} ms, p99 {_ms(stats.p99_ms)} ms.",
              ""]
    return lines


# ---------------------------------------------------------------- plots


@dataclass(frozen=True)
class Timeline:
    """Phases (sorted) drawn on every plot; x is seconds from ``t0``, the plots end at ``end``."""

    phases: Sequence[PhaseSpec]
    t0: float
    end: float


def _mark_phases(ax: Axes, timeline: Timeline) -> None:
    phases, t0 = timeline.phases, timeline.t0
    for i, (start, name, _) in enumerate(phases):
        finish = phases[i + 1][0] if i + 1 < len(phases) else timeline.end
        if i % 2:
            ax.axvspan(start - t0, finish - t0, color="0.92", zorder=0)
        ax.axvline(start - t0, color="0.25", linewidth=0.9, linestyle=":", zorder=5)
        ax.text(start - t0, 1.01, f" {name}", transform=ax.get_xaxis_transform(), fontsize=7, rotation=20,
                va="bottom", ha="left")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def plot_share(path: Path, buckets: Sequence[WindowStats], sites: Sequence[str], timeline: Timeline) -> Path:
    fig = Figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    if buckets and sites:
        # steps: each bucket's share holds from its start to its end
        xs = [b.start - timeline.t0 for b in buckets] + [buckets[-1].end - timeline.t0]
        ys = [[b.shares.get(site, 0.0) for b in [*buckets, buckets[-1]]] for site in sites]
        colors = ["0.6" if site == NO_INSTANCE else f"C{i}" for i, site in enumerate(sites)]
        ax.stackplot(xs, ys, labels=list(sites), colors=colors, step="post", alpha=0.85)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    _mark_phases(ax, timeline)
    ax.set_ylim(0, 1)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("share of new sessions")
    return _save(fig, path)


def plot_latency(path: Path, buckets: Sequence[WindowStats], timeline: Timeline) -> Path:
    fig = Figure(figsize=(9, 3.8))
    ax = fig.add_subplot()
    xs = [(b.start + b.end) / 2 - timeline.t0 for b in buckets]
    ax.plot(xs, [math.nan if b.p50_ms is None else b.p50_ms for b in buckets], label="p50", linewidth=1.2)
    ax.plot(xs, [math.nan if b.p99_ms is None else b.p99_ms for b in buckets], label="p99", linewidth=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)
    if any(b.failures or b.moves for b in buckets):
        counts = ax.twinx()
        width = (buckets[0].end - buckets[0].start) * 0.8
        counts.bar(xs, [b.failures for b in buckets], width=width, color="tab:red", alpha=0.35,
                   label="failed requests")
        counts.plot(xs, [b.moves or math.nan for b in buckets], "kx", label="moved sessions")
        counts.set_ylabel("failed requests / moved sessions per bucket")
        counts.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    _mark_phases(ax, timeline)
    return _save(fig, path)


def plot_series(path: Path, group: str, series: Mapping[str, Series], timeline: Timeline) -> Path:
    fig = Figure(figsize=(9, 3.4))
    ax = fig.add_subplot()
    for name, points in sorted(series.items()):
        ordered = sorted(points)
        ax.plot([t - timeline.t0 for t, _ in ordered], [v for _, v in ordered], label=name, linewidth=1.2, marker=".",
                markersize=3)
    if series:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(group)
    _mark_phases(ax, timeline)
    return _save(fig, path)


def plot_file_names(groups: Sequence[str]) -> dict[str, str]:
    """``<group>.png`` per series group; raises :class:`ReportError` on a clash with each other or a fixed plot."""
    names: dict[str, str] = {}
    taken = {f"{name}.png": name for name in RESERVED_PLOTS}
    for group in groups:
        file_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", group).strip("._") + ".png"
        if file_name == ".png" or file_name in taken:
            raise ReportError(f"series group {group!r} would be written to {file_name}, "
                              f"which {'is empty' if file_name == '.png' else repr(taken[file_name]) + ' uses'}")
        taken[file_name] = group
        names[group] = file_name
    return names


# ---------------------------------------------------------------- files


def load_event_files(paths: Sequence[str | Path]) -> list[RequestEvent]:
    """Events of all files; with several files, sessions without a client name are told apart by file."""
    events: list[RequestEvent] = []
    for number, path in enumerate(paths):
        file_events, _ = read_events(path, client=f"file{number}" if len(paths) > 1 else None)
        events.extend(file_events)
    return events


def write_report(out_dir: str | Path, event_files: Sequence[str | Path], phases: Sequence[PhaseSpec], *,
                 series: SeriesGroups | None = None, sites: Mapping[str, str] | None = None,
                 bucket_s: float = 1.0, title: str = "Dyncast lab report", end: float | None = None) -> ReportFiles:
    """Read the events files and write the report directory; returns the paths written."""
    return write_report_from_events(out_dir, load_event_files(event_files), phases, series=series, sites=sites,
                                    bucket_s=bucket_s, title=title, end=end,
                                    sources=[Path(p).name for p in event_files])


def write_report_from_events(out_dir: str | Path, events: Sequence[RequestEvent], phases: Sequence[PhaseSpec], *,
                             series: SeriesGroups | None = None, sites: Mapping[str, str] | None = None,
                             bucket_s: float = 1.0, title: str = "Dyncast lab report", end: float | None = None,
                             sources: Sequence[str] = ()) -> ReportFiles:
    ordered = checked_phases(phases)
    series = series or {}
    file_names = plot_file_names(list(series))
    directory = Path(out_dir)
    directory.mkdir(parents=True, exist_ok=True)
    rows = phase_stats(events, ordered, sites=sites, end=end)
    t0 = ordered[0][0]
    stop = rows[-1].end
    buckets = [b.grouped(sites or {}) for b in bucketize(events, bucket_s, start=rows[0].start, end=stop)]
    sites_seen = site_order(rows)
    timeline = Timeline(ordered, t0, stop)
    share = plot_share(directory / "share.png", buckets, sites_seen, timeline)
    latency = plot_latency(directory / "latency.png", buckets, timeline)
    extra = {group: plot_series(directory / file_names[group], group, group_series, timeline)
             for group, group_series in series.items()}
    plots = [share.name, latency.name, *(p.name for p in extra.values())]
    markdown = directory / "report.md"
    markdown.write_text(render_markdown(rows, title=title, t0=t0, plots=plots, sources=sources), encoding="utf-8")
    return ReportFiles(directory, markdown, share, latency, extra)
