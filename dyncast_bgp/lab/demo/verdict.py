"""Did the steering work? Checks of a demo run's client events against the story. Pure.

Each check compares what the clients saw (which instance took each new
session, which requests failed) with what the phase is meant to show, and
says so with the numbers, so the report states the result rather than
asserting it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dyncast_bgp.lab.demo.story import Story
from dyncast_bgp.lab.loadgen import RequestEvent, SessionFacts, SessionKey, session_facts, window_stats

SETTLE = 5.0  # seconds a phase is given before its share is compared
REACT = 1.0  # seconds after an action within which new sessions must have stopped


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _share(events: Sequence[RequestEvent], facts: Mapping[SessionKey, SessionFacts], start: float, end: float,
           *, sites: Mapping[str, str], site: str) -> tuple[float, int]:
    stats = window_stats(events, start, end, facts).grouped(sites)
    return stats.shares.get(site, 0.0), stats.sessions


def _new_sessions_to(facts: Mapping[SessionKey, SessionFacts], instance: str, start: float, end: float) -> int:
    return sum(1 for fact in facts.values() if fact.instance == instance and start <= fact.start < end)


def _failures(events: Sequence[RequestEvent], start: float, end: float, *, excluding: str | None = None) -> int:
    return sum(1 for event in events
               if start <= event.t < end and not event.ok and (excluding is None or event.instance != excluding))


def checks(events: Sequence[RequestEvent], story: Story, starts: Mapping[str, float], end: float) -> list[Check]:
    """The verdict; ``starts`` maps phase name -> wall-clock start, ``end`` is when the story ended."""
    facts = session_facts(events)
    sites = {instance: site.name for site in story.sites for instance in site.instances}
    names = [phase.name for phase in story.phases]
    bounds = {name: (starts[name], starts[names[i + 1]] if i + 1 < len(names) else end)
              for i, name in enumerate(names) if name in starts}
    result: list[Check] = []

    def share(phase: str, site: str) -> tuple[float, int]:
        start, stop = bounds[phase]
        return _share(events, facts, start + SETTLE, stop, sites=sites, site=site)

    if "steady" in bounds and "spike" in bounds:
        before, _ = share("steady", "site1")
        during, sessions = share("spike", "site1")
        result.append(Check("load spike moves new sessions away from site1", during < before * 0.8 and sessions > 0,
                            f"site1 share {before:.1%} in steady state, {during:.1%} during the spike "
                            f"({sessions} new sessions)"))
    if "failure" in bounds:
        start, stop = bounds["failure"]
        late = _new_sessions_to(facts, "s3b", start + REACT, stop)
        others = _failures(events, start, stop, excluding="s3b")
        result.append(Check(f"no new session to the failed instance after {REACT:g} s", late == 0,
                            f"{late} new sessions to s3b from {REACT:g} s after the failure to the phase end"))
        result.append(Check("no request to the other instances fails", others == 0,
                            f"{others} failed requests to instances other than s3b during the failure"))
    if "steady" in bounds and "degraded" in bounds:
        before, _ = share("steady", "site2")
        during, sessions = share("degraded", "site2")
        result.append(Check("a degraded link moves new sessions away from site2",
                            during < before * 0.8 and sessions > 0,
                            f"site2 share {before:.1%} in steady state, {during:.1%} with 60 ms and 2 % loss"))
    if "drain" in bounds:
        start, stop = bounds["drain"]
        late = _new_sessions_to(facts, "s3a", start + REACT, stop)
        failed = _failures(events, start, stop)
        result.append(Check("a drained instance takes no new session", late == 0,
                            f"{late} new sessions to s3a from {REACT:g} s after the drain"))
        result.append(Check("the drain breaks no request", failed == 0, f"{failed} failed requests while draining"))
    if "recovery" in bounds:
        start, stop = bounds["recovery"]
        stats = window_stats(events, start + SETTLE, stop, facts)
        idle = sorted(set(story.instance_address) - {name for name, n in stats.new_sessions.items() if n})
        result.append(Check("after recovery every instance takes new sessions", not idle,
                            "idle: " + ", ".join(idle) if idle else
                            "new sessions: " + ", ".join(f"{k} {v}" for k, v in sorted(stats.new_sessions.items()))))
    moved = sum(1 for fact in facts.values() if fact.moved_at is not None)
    result.append(Check("no open session ever changed instance", moved == 0, f"{moved} sessions moved"))
    return result


def markdown(results: Sequence[Check]) -> str:
    lines = ["## Verdict", "", "| check | result | numbers |", "|---|---|---|"]
    for check in results:
        lines.append(f"| {check.name} | {'ok' if check.ok else '**FAILED**'} | {check.detail} |")
    passed = sum(check.ok for check in results)
    lines += ["", f"{passed} of {len(results)} checks passed.", ""]
    return "\n".join(lines)
