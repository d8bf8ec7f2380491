"""Score every candidate of a service and decide its eligibility, in a canonical order.

This is the decision's hot path: 10,000 services x 16 instances must be
assessed in a fraction of a second, so the per-instance work is one loop with
the formulas of :mod:`~dyncast_bgp.engine.scoring` written out inline (no
call per factor, no object per instance) and the results kept as columns.
The rarely taken paths (agent-supplied scores, exclusions and their reasons)
call out to small functions.

Candidates are sorted by :data:`~dyncast_bgp.engine.candidate.Ident` first:
every later sum and tie-break runs in that order, so the order in which the
RIB lists candidates can never change a decision (not even in the last bit of
a float).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import pairwise
from operator import lt
from typing import NamedTuple

from dyncast_bgp.engine.candidate import IPV6_BIT, PATH_ID_BITS, Candidate, Ident
from dyncast_bgp.engine.eligibility import (
    NO_CAPACITY,
    UNREACHABLE,
    Exclusion,
    limit_exclusion,
    state_exclusion,
    unknown_exclusion,
)
from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.scoring import (
    AGENT_COMPUTE,
    AGENT_OVERALL,
    BACKLOG_PSEUDOCOUNT,
    COMPUTED,
    FREE_FLOOR,
    SCORE_FLOOR,
    Fleet,
    clamp_score,
    fleet,
)
from dyncast_bgp.model import InstanceKey, InstanceState, PathMetrics, ServiceId, StateFlag

_ACTIVE = InstanceState.ACTIVE
_CANARY = InstanceState.CANARY
_NONE: tuple[str, ...] = ()


@dataclass(slots=True)
class Assessment:
    """Every candidate of one service, scored and checked, as columns in canonical (ident) order.

    Column ``x[i]`` belongs to ``candidates[i]``. ``compute``/``network`` are
    the L1 scores, ``overall`` the L2 (0-10); ``load`` the utilisation used
    for free capacity (percent, measured or assumed), ``capacity`` the one
    used (reported or assumed), ``free = capacity * max(1 - load/100, 0.01)``;
    ``merit = free * max(overall, 0.1)``, what the weighted policies share by.
    ``exclusions[i]`` is why instance ``i`` may not take new flows (None: it
    may); ``eligible`` and ``excluded`` list the indices of those that may and
    of those that may not. ``unknown`` and
    ``sources`` are sparse: the inputs instance ``i`` lacked, and where its
    score came from when not computed here.
    """

    service: ServiceId
    candidates: list[Candidate]
    idents: list[Ident]
    compute: list[float]
    network: list[float]
    overall: list[float]
    load: list[float]
    capacity: list[float]
    free: list[float]
    merit: list[float]
    exclusions: list[Exclusion | None]
    eligible: list[int]
    excluded: list[int]
    fleet: Fleet
    unknown: dict[int, tuple[str, ...]]
    sources: dict[int, str]

    def key(self, index: int) -> InstanceKey:
        return self.candidates[index].key

    def source(self, index: int) -> str:
        return self.sources.get(index, COMPUTED)


class Columns(NamedTuple):
    """The candidates as read, sorted by ident: what the hot loop needs first, one list per field.

    ``values`` are the metric dicts, ``reported`` the reported capacities (None: not reported), ``backlog``
    the requests in the system plus one, ``(n + 1)``, for instances that report them with a capacity > 0.
    """

    idents: list[Ident]
    candidates: list[Candidate]
    values: list[dict[str, float]]
    reported: list[float | None]
    backlog: list[float | None]


def read(service: ServiceId, candidates: Sequence[Candidate]) -> tuple[Columns, Fleet]:
    """Every candidate with what the hot loop needs first, sorted by ident; and the fleet figures.

    Column by column (a comprehension per field costs a fraction of a loop that appends to several lists),
    in the caller's order, then sorted unless already in order (the RIB lists candidates sorted). The
    fleet's sums are exact, so order-independent. ValueError for a foreign or duplicate instance.
    """
    cands = candidates if isinstance(candidates, list) else list(candidates)
    keys = [candidate.key for candidate in cands]
    if not all([key.service is service for key in keys]):
        for key in keys:
            if key.service != service:
                raise ValueError(f"{key} is not an instance of {service}")
    idents = [int(key.binding) << PATH_ID_BITS | key.path_id for key in keys]  # candidate.ident_of, inline
    if not all([key.binding.__class__ is IPv4Address for key in keys]):
        idents = [ident if key.binding.__class__ is IPv4Address else ident | IPV6_BIT
                  for ident, key in zip(idents, keys, strict=True)]
    # MetricsView's own get() goes through the Mapping machinery; its private dict's get is one C call
    values = [candidate.metrics.values._data for candidate in cands]
    reported = [data.get("capacity") for data in values]
    active = [data.get("active_sessions") for data in values]
    queued = [data.get("queued_requests") for data in values]
    backlog = [((a if a is not None and a > 0.0 else 0.0) + (q if q is not None and q > 0.0 else 0.0)
                + BACKLOG_PSEUDOCOUNT) if c is not None and c > 0.0 and (a is not None or q is not None) else None
               for c, a, q in zip(reported, active, queued, strict=True)]
    capacities = [c for c in reported if c is not None and c > 0.0]
    requests = [b for b in backlog if b is not None]
    backlog_capacities = [c for c, b in zip(reported, backlog, strict=True) if b is not None and c is not None]
    columns = Columns(idents, cands, values, reported, backlog)
    if not all(map(lt, idents, idents[1:])):  # not strictly increasing: sort, then look for twins
        order = sorted(range(len(idents)), key=idents.__getitem__)
        columns = Columns([idents[i] for i in order], [cands[i] for i in order], [values[i] for i in order],
                          [reported[i] for i in order], [backlog[i] for i in order])
        idents = columns.idents
        if not all(map(lt, idents, idents[1:])):  # a duplicate is next to its twin
            twice = next(b for a, b in pairwise(range(len(idents))) if idents[a] == idents[b])
            raise ValueError(f"{columns.candidates[twice].key} is listed twice")
    return columns, fleet(capacities, requests, backlog_capacities)


def assess(service: ServiceId, candidates: Sequence[Candidate], p: Params,  # noqa: PLR0915 - one loop, inline on purpose
           limited: Collection[Ident] = frozenset()) -> Assessment:
    """Scores and eligibility of every candidate, in canonical order (docs/control-law.md).

    ``limited``: the instances a limit excluded in the previous decision (they
    are re-admitted with hysteresis, see :mod:`~dyncast_bgp.engine.eligibility`).
    """
    columns, fleet = read(service, candidates)
    idents, cands = columns.idents, columns.candidates
    count = len(idents)
    compute_of, network_of, overall_of = [0.0] * count, [0.0] * count, [0.0] * count
    load_of, capacity_of, free_of, merit_of = [0.0] * count, [0.0] * count, [0.0] * count, [0.0] * count
    exclusions: list[Exclusion | None] = [None] * count
    result = Assessment(service, cands, idents, compute_of, network_of, overall_of, load_of, capacity_of, free_of,
                        merit_of,                         exclusions, [], [], fleet, {}, {})
    add_eligible, add_excluded = result.eligible.append, result.excluded.append
    unknown_of, sources = result.unknown, result.sources

    latency_ref, loss_ref = p.latency_ref_us, p.loss_ref
    compute_share, network_share = p.compute_share, p.network_share
    use_agent, unknown_score, unknown_load = p.use_agent_score, p.unknown_score, p.unknown_load
    exclude_unknown = p.unknown == "exclude"
    backlog_ref = fleet.backlog_ref
    assumed_capacity = fleet.worst_capacity if p.unknown == "pessimistic" else fleet.neutral_capacity
    screen_u, screen_rtt, screen_loss = p.screen_utilisation, p.screen_rtt_us, p.screen_loss

    for index, (ident, candidate, values, reported_capacity, backlog) in enumerate(zip(*columns, strict=True)):
        get = values.get
        unknown = _NONE
        # L0 -> compute L1: 10 * min(known factors); a factor is at most 1, so 2.0 means "none known"
        utilisation = get("cpu_utilization")
        other = get("memory_utilization")
        if other is not None and (utilisation is None or other > utilisation):
            utilisation = other
        other = get("gpu_utilization")
        if other is not None and (utilisation is None or other > utilisation):
            utilisation = other
        if utilisation is not None:
            utilisation = 0.0 if utilisation < 0.0 else 100.0 if utilisation > 100.0 else utilisation
        agent = get("compute_score") if use_agent else None
        if agent is not None:
            compute = clamp_score(agent)
            sources[index] = AGENT_COMPUTE
        else:
            factor = 2.0 if utilisation is None else 1.0 - utilisation / 100.0  # f_u
            delay = get("service_delay")
            if delay is not None:
                delay_factor = latency_ref / (latency_ref + (delay if delay > 0.0 else 0.0))  # f_d
                factor = delay_factor if delay_factor < factor else factor  # min() costs a call
            if backlog is not None and backlog_ref is not None:
                relative = backlog / reported_capacity / backlog_ref  # type: ignore[operator]  # > 0 with a backlog
                backlog_factor = 1.0 if relative <= 1.0 else 1.0 / relative  # f_b
                factor = backlog_factor if backlog_factor < factor else factor
            if factor > 1.0:
                compute, unknown = unknown_score, ("compute",)
            else:
                compute = 10.0 * factor
        # network L1: 10 * f_rtt * f_loss
        path = candidate.path
        rtt, loss = path.rtt_mean_us, path.loss_mean
        if not path.reachable:
            network = 0.0
        elif rtt is not None or loss is not None:
            network = 10.0
            if rtt is not None:
                network *= latency_ref / (latency_ref + (rtt if rtt > 0.0 else 0.0))
            if loss is not None:
                network *= loss_ref / (loss_ref + (0.0 if loss < 0.0 else 1.0 if loss > 1.0 else loss))
        else:
            agent = get("network_score") if use_agent else None
            if agent is not None:
                network = clamp_score(agent)
            else:
                network, unknown = unknown_score, (*unknown, "network")
        # L2
        agent = get("overall_score") if use_agent else None
        if agent is not None:
            overall = clamp_score(agent)
            sources[index] = AGENT_OVERALL
        else:
            overall = compute_share * compute + network_share * network
        # free capacity
        load = utilisation if utilisation is not None else unknown_load
        reported = reported_capacity is not None
        if reported_capacity is None:
            capacity = assumed_capacity
            if fleet.capacity_known:
                unknown = (*unknown, "capacity")
        else:
            capacity = reported_capacity if reported_capacity > 0.0 else 0.0
        spare = 1.0 - load / 100.0
        free = capacity * (spare if spare > FREE_FLOOR else FREE_FLOOR)
        # eligibility: the usual case (active, reachable, nothing held, below every limit's screen) inline
        state = candidate.state
        if ((state is _ACTIVE or state is _CANARY) and path.reachable and candidate.hold is None
                and not (unknown and exclude_unknown) and not (reported and capacity <= 0.0)
                and not candidate.metrics.flags and (utilisation is None or utilisation < screen_u)
                and (rtt is None or rtt < screen_rtt) and (loss is None or loss < screen_loss)):
            exclusion = None
        else:
            exclusion = exclusion_of(Standing.of(candidate), p, utilisation=utilisation, unknown=unknown,
                                     agent_overall=sources.get(index) == AGENT_OVERALL,
                                     reported=capacity if reported else None, limited=ident in limited)
        if exclusion is None:
            add_eligible(index)
        else:
            add_excluded(index)
            exclusions[index] = exclusion
        if unknown:
            unknown_of[index] = unknown
        compute_of[index] = compute
        network_of[index] = network
        overall_of[index] = overall
        load_of[index] = load
        capacity_of[index] = capacity
        free_of[index] = free
        merit_of[index] = free * (overall if overall > SCORE_FLOOR else SCORE_FLOOR)
    return result


class Standing(NamedTuple):
    """What :func:`exclusion_of` reads of a candidate: its state, path, the router's hold and its state flags
    (the batch decision takes them from a step's rows without building the candidate)."""

    state: InstanceState
    path: PathMetrics
    hold: Exclusion | None
    flags: StateFlag

    @classmethod
    def of(cls, candidate: Candidate) -> Standing:
        return cls(candidate.state, candidate.path, candidate.hold, candidate.metrics.flags)


def exclusion_of(candidate: Standing, p: Params, *, utilisation: float | None, unknown: tuple[str, ...],
                 agent_overall: bool, reported: float | None, limited: bool) -> Exclusion | None:
    """Why ``candidate`` may not take new flows (None: it may), in the order of
    :mod:`~dyncast_bgp.engine.eligibility`: state and reachability, the router's hold, unknown inputs under
    ``exclude``, a reported capacity of 0, then the limits.

    The scored inputs come in as the assessment computed them: ``utilisation`` the busiest one (clamped;
    None: unknown), ``unknown`` the inputs it lacked, ``agent_overall`` whether its L2 is the agent's,
    ``reported`` the capacity used when the instance reported one (else None). ``limited``: a limit
    excluded it in the previous decision (re-admission hysteresis). :func:`assess` calls this only when its
    inline pre-check cannot rule every exclusion out; the batch path
    (:mod:`~dyncast_bgp.engine.batch`) likewise, so both share these rules.
    """
    path = candidate.path
    state = candidate.state
    if state is _ACTIVE or state is _CANARY:
        if not path.reachable:
            return UNREACHABLE
    else:
        exclusion = state_exclusion(state, path.reachable)
        if exclusion is not None:
            return exclusion
    if candidate.hold is not None:
        return candidate.hold
    if unknown and p.unknown == "exclude" and (relevant := _relevant(unknown, agent_overall, p)):
        return unknown_exclusion(relevant)
    if reported is not None and reported <= 0.0:
        return NO_CAPACITY
    flags = candidate.flags
    rtt, loss = path.rtt_mean_us, path.loss_mean
    if (flags or (utilisation is not None and utilisation >= p.screen_utilisation)
            or (rtt is not None and rtt >= p.screen_rtt_us) or (loss is not None and loss >= p.screen_loss)):
        return limit_exclusion(utilisation, flags, path, p, limited=limited)
    return None


def _relevant(unknown: tuple[str, ...], agent_overall: bool, p: Params) -> tuple[str, ...]:
    """The unknown inputs that matter under ``exclude`` (a category weighted 0, or replaced by the agent's L2, not)."""
    skip = []
    if p.compute_share == 0.0 or agent_overall:
        skip.append("compute")
    if p.network_share == 0.0 or agent_overall:
        skip.append("network")
    return tuple(name for name in unknown if name not in skip)
