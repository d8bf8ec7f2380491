"""Per-site mode: one route per D-SID summarising the site's instances. Pure.

ETSI GR NFV-EVE 020 clause 5.2: the egress (this site) spreads flows over its
local instances, so the network only needs one route per service per site,
carrying the site's aggregate. How each metric is combined:

- ``capacity``: sum over instances that take new flows (active, canary);
- utilisations, ``service_delay`` and scores: mean weighted by capacity over the
  announced instances (plain mean when no instance reports capacity);
- ``active_sessions``, ``queued_requests``: sum;
- flags: draining only when every announced instance is draining; canary when
  any is; overloaded when every instance taking new flows is; reduced-redundancy
  when some configured instance is not announced or is draining while others
  are not (REL006 5.2: reduced redundancy must be indicated);
- version: announced only when all announced instances agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dyncast_bgp.model import MetricsView, StateFlag

SUMMED = ("active_sessions", "queued_requests")


@dataclass(frozen=True, slots=True)
class Member:
    """One announced instance of the site as seen by the aggregation."""

    metrics: MetricsView
    flags: StateFlag
    version: int | None


@dataclass(frozen=True, slots=True)
class Aggregate:
    metrics: MetricsView
    flags: StateFlag
    version: int | None


def aggregate(members: Sequence[Member], configured: int) -> Aggregate | None:
    """Combine the announced ``members`` of a site; None when there is none.

    ``configured`` is how many instances the site has in all (for reduced redundancy).
    """
    if not members:
        return None
    taking = [m for m in members if not m.flags & StateFlag.DRAINING]
    values: dict[str, float] = {}
    capacity = sum(m.metrics.get("capacity", 0.0) for m in taking)
    if any("capacity" in m.metrics for m in members):
        values["capacity"] = capacity
    names = {name for m in members for name in m.metrics} - {"capacity"}
    for name in sorted(names):
        having = [m for m in members if name in m.metrics]
        if name in SUMMED:
            values[name] = sum(m.metrics[name] for m in having)
        else:
            values[name] = _weighted_mean(having, name)
    return Aggregate(MetricsView(values), _flags(members, taking, configured), _version(members))


def _weighted_mean(members: Sequence[Member], name: str) -> float:
    weights = [m.metrics.get("capacity", 0.0) for m in members]
    total = sum(weights)
    if total <= 0.0:
        return sum(m.metrics[name] for m in members) / len(members)
    return sum(w * m.metrics[name] for w, m in zip(weights, members, strict=True)) / total


def _flags(members: Sequence[Member], taking: Sequence[Member], configured: int) -> StateFlag:
    flags = StateFlag.NONE
    if not taking:
        flags |= StateFlag.DRAINING
    if any(m.flags & StateFlag.CANARY for m in members):
        flags |= StateFlag.CANARY
    if taking and all(m.flags & StateFlag.OVERLOADED for m in taking):
        flags |= StateFlag.OVERLOADED
    if len(taking) < configured and taking:
        flags |= StateFlag.REDUCED_REDUNDANCY
    return flags


def _version(members: Sequence[Member]) -> int | None:
    versions = {m.version for m in members}
    return versions.pop() if len(versions) == 1 else None
