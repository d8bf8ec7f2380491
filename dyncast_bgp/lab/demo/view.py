"""The demo's live terminal view (rich). Pure: a :class:`ViewState` in, a renderable out."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dyncast_bgp.lab.demo.routers import InstanceRow

BAR = 30


@dataclass(frozen=True, slots=True)
class Traffic:
    requests_per_second: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    failed: int = 0
    moved: int = 0
    sessions: int = 0


@dataclass(frozen=True, slots=True)
class ViewState:
    phase: str
    phase_index: int
    phases: int
    elapsed: float
    remaining: float
    expect: str
    site_share: Mapping[str, float]  # of new sessions in the last window
    instance_site: Mapping[str, str]
    rows: Mapping[str, Sequence[InstanceRow]]  # router -> instances
    traffic: Traffic
    events: Sequence[str] = field(default_factory=tuple)


def _bar(share: float) -> str:
    filled = round(max(0.0, min(1.0, share)) * BAR)
    return "█" * filled + "·" * (BAR - filled)


def _fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


_WEIGHTED = re.compile(r"free capacity ([\d.]+) x score ([\d.]+)")


def short_reason(row: InstanceRow) -> str:
    """The router's reason in a few words: why excluded, or what the weight grew from."""
    if not row.eligible:
        return row.reason
    match = _WEIGHTED.search(row.reason)
    if match:
        return f"free {float(match.group(1)):.0f} x {float(match.group(2)):.1f}"
    return row.reason.split(";", 1)[0]


def render(state: ViewState) -> RenderableType:
    title = Text.assemble((f"phase {state.phase_index}/{state.phases}: ", "bold"), (state.phase, "bold cyan"),
                          f"   {state.elapsed:5.1f} s in, {state.remaining:5.1f} s left")
    shares = Table(title="share of new sessions (last 5 s)", show_edge=False, expand=False, pad_edge=False)
    shares.add_column("site")
    shares.add_column("share", justify="right")
    shares.add_column("")
    for site in sorted(set(state.instance_site.values())):
        share = state.site_share.get(site, 0.0)
        shares.add_row(site, f"{share * 100:5.1f} %", _bar(share))

    routers = sorted(state.rows)
    instances = Table(title="instances as the ingress routers see them (w = weight at ingress N)", box=box.SIMPLE_HEAD,
                      show_edge=False, pad_edge=False, collapse_padding=True)
    instances.add_column("inst", no_wrap=True)
    instances.add_column("site", no_wrap=True)
    for router in routers:
        instances.add_column(f"w {router.removeprefix('ingress')}", justify="right", no_wrap=True)
    for header in ("load%", "sess", "delay", "rtt"):
        instances.add_column(header, justify="right", no_wrap=True)
    instances.add_column("why", no_wrap=True, overflow="ellipsis", max_width=34)
    by_router = {router: {row.instance: row for row in state.rows[router]} for router in routers}
    names = sorted({name for rows in by_router.values() for name in rows})
    for name in names:
        first = next(rows[name] for rows in by_router.values() if name in rows)
        weights = [(_fmt(by_router[r][name].weight * 100, ".0f") + "%") if name in by_router[r] else "-"
                   for r in routers]
        style = "" if first.eligible else "dim"
        instances.add_row(name, state.instance_site.get(name, "?"), *weights, _fmt(first.load),
                          _fmt(first.sessions), _fmt(first.delay_ms, ".0f"), _fmt(first.rtt_ms, ".1f"),
                          short_reason(first), style=style)

    traffic = state.traffic
    line = Text(f"{traffic.requests_per_second:.0f} req/s  p50 {_fmt(traffic.p50_ms, '.0f')} ms  "
                f"p99 {_fmt(traffic.p99_ms, '.0f')} ms  sessions {traffic.sessions}  ")
    line.append(f"failed {traffic.failed}", style="bold red" if traffic.failed else "green")
    line.append("  ")
    line.append(f"moved {traffic.moved}", style="bold red" if traffic.moved else "green")
    parts: list[RenderableType] = [title, Text(state.expect, style="italic"), shares, instances, line]
    if state.events:
        parts.append(Text("\n".join(state.events[-6:]), style="yellow"))
    return Panel(Group(*parts), title="dyncast-bgp lab demo: three-site", border_style="blue")
