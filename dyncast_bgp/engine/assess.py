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

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import pairwise
from operator import itemgetter

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
    Fleet,
    clamp_score,
    fleet,
)
from dyncast_bgp.model import InstanceKey, InstanceState, ServiceId

_FIRST = itemgetter(0)
_ACTIVE = InstanceState.ACTIVE
_CANARY = InstanceState.CANARY
_NONE: tuple[str, ...] = ()


@dataclass(slots=True)
class Assessment:
    """Every candidate of one service, scored and checked, as columns in canonical (ident) order.

    Column ``x[i]`` belongs to ``candidates[i]``. ``compute``/``network`` are
    the L1 scores, ``overall`` the L2 (0-10); ``load`` the utilisation used
    for free capacity (percent, measured or assumed), ``capacity`` the one
    used (reported or assumed), ``free = capacity * max(1 - load/100, 0.01)``.
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


Row = tuple[Ident, Candidate, Mapping[str, float], "float | None", "float | None"]
"""One candidate as read: ident, candidate, metric values, reported capacity, and its backlog per unit of
capacity ``(n + 1)/c`` when it reports one (with a capacity > 0)."""


def read(service: ServiceId, candidates: Sequence[Candidate]) -> tuple[list[Row], Fleet]:
    """Every candidate with what the hot loop needs first, sorted by ident; and the fleet figures.

    One pass in the caller's order (the fleet's sums are exact, so order-independent), then a sort.
    ValueError for a foreign or duplicate instance.
    """
    rows: list[Row] = []
    add = rows.append
    capacities: list[float] = []
    requests: list[float] = []
    backlog_capacities: list[float] = []
    for candidate in candidates:
        key = candidate.key
        owner = key.service
        if owner is not service and owner != service:
            raise ValueError(f"{key} is not an instance of {service}")
        binding = key.binding
        ident = int(binding) << PATH_ID_BITS | key.path_id  # candidate.ident_of, inline
        if type(binding) is not IPv4Address:
            ident |= IPV6_BIT
        # MetricsView's own get() goes through the Mapping mixin (two Python calls, and a caught KeyError
        # for each absent metric): reading its underlying mappingproxy is 4x faster on this path
        values = candidate.metrics.values._data
        get = values.get
        capacity = get("capacity")
        per_capacity = None
        if capacity is not None and capacity > 0.0:
            capacities.append(capacity)
            active, queued = get("active_sessions"), get("queued_requests")
            if active is not None or queued is not None:
                backlog = ((active if active is not None and active > 0.0 else 0.0)
                           + (queued if queued is not None and queued > 0.0 else 0.0) + BACKLOG_PSEUDOCOUNT)
                requests.append(backlog)
                backlog_capacities.append(capacity)
                per_capacity = backlog / capacity
        add((ident, candidate, values, capacity, per_capacity))
    rows.sort(key=_FIRST)
    if len({row[0] for row in rows}) != len(rows):
        twice = next(b for a, b in pairwise(rows) if a[0] == b[0])
        raise ValueError(f"{twice[1].key} is listed twice")
    return rows, fleet(capacities, requests, backlog_capacities)


def assess(service: ServiceId, candidates: Sequence[Candidate], p: Params,  # noqa: PLR0915 - one loop, inline on purpose
           limited: Collection[Ident] = frozenset()) -> Assessment:
    """Scores and eligibility of every candidate, in canonical order (docs/control-law.md).

    ``limited``: the instances a limit excluded in the previous decision (they
    are re-admitted with hysteresis, see :mod:`~dyncast_bgp.engine.eligibility`).
    """
    rows, fleet = read(service, candidates)
    count = len(rows)
    cands = [row[1] for row in rows]
    idents = [row[0] for row in rows]
    compute_of, network_of, overall_of = [0.0] * count, [0.0] * count, [0.0] * count
    load_of, capacity_of, free_of = [0.0] * count, [0.0] * count, [0.0] * count
    exclusions: list[Exclusion | None] = [None] * count
    result = Assessment(service, cands, idents, compute_of, network_of, overall_of, load_of, capacity_of, free_of,
                        exclusions, [], [], fleet, {}, {})
    add_eligible, add_excluded = result.eligible.append, result.excluded.append
    unknown_of, sources = result.unknown, result.sources

    latency_ref, loss_ref = p.latency_ref_us, p.loss_ref
    compute_share, network_share = p.compute_share, p.network_share
    use_agent, unknown_score, unknown_load = p.use_agent_score, p.unknown_score, p.unknown_load
    exclude_unknown = p.unknown == "exclude"
    backlog_ref = fleet.backlog_ref
    assumed_capacity = fleet.worst_capacity if p.unknown == "pessimistic" else fleet.neutral_capacity
    screen_u, screen_rtt, screen_loss = p.screen_utilisation, p.screen_rtt_us, p.screen_loss

    for index, (ident, candidate, values, reported_capacity, backlog) in enumerate(rows):
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
                relative = backlog / backlog_ref
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
        # eligibility
        state = candidate.state
        if state is _ACTIVE or state is _CANARY:
            exclusion = None if path.reachable else UNREACHABLE
        else:
            exclusion = state_exclusion(state, path.reachable)
        if exclusion is None:
            if unknown and exclude_unknown and (relevant := _relevant(unknown, sources.get(index), p)):
                exclusion = unknown_exclusion(relevant)
            elif reported and capacity <= 0.0:
                exclusion = NO_CAPACITY
            else:
                flags = candidate.metrics.flags
                if (flags or (utilisation is not None and utilisation >= screen_u)
                        or (rtt is not None and rtt >= screen_rtt) or (loss is not None and loss >= screen_loss)):
                    exclusion = limit_exclusion(utilisation, flags, path, p, limited=ident in limited)
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
    return result


def _relevant(unknown: tuple[str, ...], source: str | None, p: Params) -> tuple[str, ...]:
    """The unknown inputs that matter under ``exclude`` (a category weighted 0, or replaced by the agent's L2, not)."""
    agent_overall = source == AGENT_OVERALL
    skip = []
    if p.compute_share == 0.0 or agent_overall:
        skip.append("compute")
    if p.network_share == 0.0 or agent_overall:
        skip.append("network")
    return tuple(name for name in unknown if name not in skip)
