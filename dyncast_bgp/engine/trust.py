"""What the RIB lets in: per-neighbour trust rules and the plausibility of metrics. Pure.

Two checks, both at RIB intake (docs/hardening.md):

- **Announcements** (:func:`refusal`): a neighbour's rule may restrict the
  D-SIDs it announces, the D-BIDs (next hops) it uses, and how many paths and
  distinct D-SIDs it may hold in the RIB. An announcement outside its rule is
  refused: it never enters the RIB, so it never reaches a decision; a path
  already held under the same key goes (treat-as-withdraw, RFC 7606).
- **Metrics** (:func:`screen`): metrics that cannot be true (capacity 0 while
  reporting sessions, values beyond any real instance) are discarded as a
  whole, the route staying usable with unknown metrics; then the rule's
  ``metrics`` mode: ``trusted`` as announced, ``clamped`` held to plausible
  bounds (no instance can claim to be idle or infinitely large), ``ignored``
  discarded (the instance is used with neutral metrics). The state flags are
  always kept: they can only take traffic away from the instance.

Every refusal and every discarded or clamped metric set is a :class:`Rejection`
with a stable ``reason`` (counted and logged by the router) and a ``detail``.
A malformed metric community is handled earlier, by the wire decoder: that
one metric is unknown (reason ``metric-invalid``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dyncast_bgp.config.schema import Trust, TrustRule
from dyncast_bgp.model import ComputeMetrics, IPAddress, IPNetwork, MetricsView
from dyncast_bgp.slots import slot_setters

DSID_NOT_ALLOWED = "dsid-not-allowed"
DBID_NOT_ALLOWED = "dbid-not-allowed"
MAX_INSTANCES = "max-instances"
MAX_PREFIXES = "max-prefixes"
METRIC_INVALID = "metric-invalid"
METRICS_IMPLAUSIBLE = "metrics-implausible"
METRICS_CLAMPED = "metrics-clamped"
MALFORMED_LINE = "malformed-line"
REASONS = (MALFORMED_LINE, METRIC_INVALID, METRICS_IMPLAUSIBLE, METRICS_CLAMPED, DSID_NOT_ALLOWED,
           DBID_NOT_ALLOWED, MAX_INSTANCES, MAX_PREFIXES)
"""Every reason a :class:`Rejection` can carry (stable: counters and log lines use them)."""

PLAUSIBLE_MAX: Mapping[str, float] = {
    "capacity": 1e8,  # requests/s of one instance
    "active_sessions": 1e8,
    "queued_requests": 1e8,
    "service_delay": 3.6e9,  # microseconds: an hour
}
"""Above these no real instance reports: the route's metrics are discarded (``metrics-implausible``)."""
UTILISATIONS = ("cpu_utilization", "memory_utilization", "gpu_utilization")
SCORES = ("compute_score", "network_score", "overall_score")


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused announcement or discarded/adjusted metric set, for the counters and the log."""

    reason: str
    peer: str
    service: str
    binding: str
    detail: str
    rule: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """A :class:`~dyncast_bgp.config.schema.TrustRule` ready for checking; ``label`` names it in logs."""

    label: str
    dsids: tuple[IPNetwork, ...] | None = None
    dbids: tuple[IPNetwork, ...] | None = None
    max_instances: int | None = None
    max_prefixes: int | None = None
    metrics: str = "trusted"
    min_utilization: float = 0.0
    max_capacity: float | None = None
    max_score: float = 10.0

    @classmethod
    def of(cls, rule: TrustRule, label: str) -> Rule:
        clamp = rule.clamp
        return cls(label, rule.dsids, rule.dbids, rule.max_instances, rule.max_prefixes, rule.metrics,
                   clamp.min_utilization, clamp.max_capacity, clamp.max_score)

    @property
    def limits_announcements(self) -> bool:
        return (self.dsids is not None or self.dbids is not None or self.max_instances is not None
                or self.max_prefixes is not None)


TRUST_ALL = Rule("default")


class TrustPolicy:
    """The rule of every neighbour: the first of ``peers`` whose prefix holds it, else ``default``."""

    def __init__(self, default: Rule = TRUST_ALL, peers: Sequence[tuple[IPNetwork, Rule]] = ()) -> None:
        self.default = default
        self.peers = tuple(peers)
        self._memo: dict[str, Rule] = {}

    @classmethod
    def from_config(cls, trust: Trust) -> TrustPolicy:
        peers = [(rule.peer, Rule.of(rule, rule.name or f"peer {rule.peer}")) for rule in trust.peers]
        return cls(Rule.of(trust.default, "default"), peers)

    @property
    def limits_announcements(self) -> bool:
        """Whether any rule restricts announcements (if not, the RIB skips the checks)."""
        return self.default.limits_announcements or any(rule.limits_announcements for _, rule in self.peers)

    def rule_for(self, peer: str) -> Rule:
        """The rule of the neighbour whose address is ``peer`` (canonical text), memoised."""
        rule = self._memo.get(peer)
        if rule is None:
            rule = self._lookup(peer)
            if len(self._memo) >= 4096:
                self._memo.clear()
            self._memo[peer] = rule
        return rule

    def _lookup(self, peer: str) -> Rule:
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return self.default
        for network, rule in self.peers:
            if address.version == network.version and address in network:
                return rule
        return self.default


def _inside(prefix: IPNetwork, networks: tuple[IPNetwork, ...]) -> bool:
    return any(prefix.version == network.version and prefix.subnet_of(network)  # type: ignore[arg-type]
               for network in networks)


def _holds(address: IPAddress, networks: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def refusal(rule: Rule, prefix: IPNetwork, next_hop: IPAddress) -> str | None:
    """Why ``rule`` refuses an announcement of ``prefix`` via ``next_hop`` (None: it does not).

    The counted limits (``max_instances``, ``max_prefixes``) depend on what the RIB holds: the RIB checks them.
    """
    if rule.dsids is not None and not _inside(prefix, rule.dsids):
        return DSID_NOT_ALLOWED
    if rule.dbids is not None and not _holds(next_hop, rule.dbids):
        return DBID_NOT_ALLOWED
    return None


def describe_refusal(reason: str, rule: Rule) -> str:
    """The detail of a refusal: the limit it broke."""
    if reason == DSID_NOT_ALLOWED:
        return "D-SID outside " + ", ".join(str(net) for net in rule.dsids or ())
    if reason == DBID_NOT_ALLOWED:
        return "next hop outside " + ", ".join(str(net) for net in rule.dbids or ())
    if reason == MAX_INSTANCES:
        return f"peer already holds max_instances {rule.max_instances} paths"
    if reason == MAX_PREFIXES:
        return f"peer already holds max_prefixes {rule.max_prefixes} D-SIDs"
    return reason


# ------------------------------------------------------------------ metrics


@dataclass(frozen=True, slots=True)
class Screened:
    """The metrics the decision may use, and what was done to get them: ``(reason, detail)`` pairs."""

    metrics: ComputeMetrics
    findings: tuple[tuple[str, str], ...] = ()


def neutral(metrics: ComputeMetrics) -> ComputeMetrics:
    """No quantities (every metric unknown), the state flags and version kept."""
    return ComputeMetrics(flags=metrics.flags, version=metrics.version)


_LOWEST_PLAUSIBLE_MAX: Final = min(PLAUSIBLE_MAX.values())
"""No value at or below this is above any bound of :data:`PLAUSIBLE_MAX` (derived from it, once)."""


def implausible(values: Mapping[str, float]) -> str | None:
    """Why a set of (individually well-formed) metric values cannot be true, or None."""
    if type(values) is MetricsView:
        return _implausible_view(values._data)
    return _implausible(values)


def _implausible_view(values: Mapping[str, float]) -> str | None:
    """:func:`implausible` of a :class:`MetricsView`'s plain dict, and only of one.

    Its ``get`` is one C call where the view's runs in Python, and the RIB screens every path it decodes.
    Its values are finite floats, so when the largest is at most the lowest bound, none is above its own.
    """
    if values and max(values.values()) > _LOWEST_PLAUSIBLE_MAX:
        return _implausible(values)
    return _capacity_zero(values)


def _implausible(values: Mapping[str, float]) -> str | None:
    """:func:`implausible` of any mapping, name by name."""
    for name, bound in PLAUSIBLE_MAX.items():
        value = values.get(name)
        if value is not None and value > bound:
            return f"{name} {value:g} above the plausible {bound:g}"
    return _capacity_zero(values)


def _capacity_zero(values: Mapping[str, float]) -> str | None:
    """The implausibility that no single value shows: no capacity while serving."""
    if values.get("capacity") == 0.0 and (values.get("active_sessions", 0.0) > 0.0
                                         or values.get("queued_requests", 0.0) > 0.0):
        return "capacity 0 while reporting sessions"
    return None


def clamp(values: Mapping[str, float], rule: Rule) -> tuple[dict[str, float], list[str]]:
    """``values`` held to the rule's bounds, and a note per value changed."""
    result = dict(values)
    notes = []
    for name in UTILISATIONS:
        value = result.get(name)
        if value is not None and value < rule.min_utilization:
            result[name] = rule.min_utilization
            notes.append(f"{name} {value:g} -> {rule.min_utilization:g}")
    capacity = result.get("capacity")
    if capacity is not None and rule.max_capacity is not None and capacity > rule.max_capacity:
        result["capacity"] = rule.max_capacity
        notes.append(f"capacity {capacity:g} -> {rule.max_capacity:g}")
    for name in SCORES:
        value = result.get(name)
        if value is not None and value > rule.max_score:
            result[name] = rule.max_score
            notes.append(f"{name} {value:g} -> {rule.max_score:g}")
    return result, notes


_MAY_CHANGE: Final = frozenset({"ignored", "clamped"})
"""Metric modes under which screening may change metrics that are plausible."""


def passes_as_announced(metrics: ComputeMetrics, rule: Rule) -> bool:
    """Whether :func:`screen` passes ``metrics`` as they are, with no finding, decided without building
    anything: no quantities at all; or, unless the rule ignores or clamps metrics, a :class:`MetricsView`
    with nothing implausible as :func:`_implausible_view` finds it (no value above the lowest bound, no zero
    capacity). The common case, once per path in a full recompute; False means "ask :func:`screen`"."""
    values = metrics.values
    if type(values) is not MetricsView:
        return not values
    data = values._data
    if not data:
        return True
    mode = rule.metrics
    return (mode not in _MAY_CHANGE and max(data.values()) <= _LOWEST_PLAUSIBLE_MAX
            and data.get("capacity") != 0.0)


def may_change(rule: Rule) -> bool:
    """Whether screening under ``rule`` may change metrics that are plausible (it ignores or clamps them)."""
    return rule.metrics in _MAY_CHANGE


def pass_as_announced(values: Mapping[str, npt.NDArray[np.float64]], size: int,
                      changing: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """:func:`passes_as_announced` of ``size`` rows at once: ``values`` the metric columns (NaN: absent; every
    value present finite), ``changing[r]`` whether row ``r``'s rule :func:`may_change` its metrics."""
    present = np.zeros(size, np.bool_)
    highest = np.full(size, -np.inf)
    for column in values.values():
        present |= ~np.isnan(column)
        np.fmax(highest, column, out=highest)  # NaN-ignoring
    capacity = values.get("capacity")
    plausible = highest <= _LOWEST_PLAUSIBLE_MAX
    if capacity is not None:
        plausible &= capacity != 0.0  # NaN (absent) is not zero
    return ~present | (~changing & plausible)


def screen(metrics: ComputeMetrics, rule: Rule) -> Screened:
    """The metrics of one route as the decision may use them under ``rule``."""
    if passes_as_announced(metrics, rule):
        return _as_announced(metrics)
    values = metrics.values
    data: Mapping[str, float] = values._data if type(values) is MetricsView else values  # see _implausible_view
    mode = rule.metrics
    if mode == "ignored":
        return Screened(neutral(metrics))
    why = _implausible_view(data) if data is not values else _implausible(data)
    if why is not None:
        return Screened(neutral(metrics), ((METRICS_IMPLAUSIBLE, why + "; metrics discarded"),))
    if mode == "clamped":
        clamped, notes = clamp(data, rule)
        if notes:
            adjusted = ComputeMetrics(MetricsView(clamped), metrics.flags, metrics.version)
            return Screened(adjusted, ((METRICS_CLAMPED, "; ".join(notes)),))
    return _as_announced(metrics)


_SCREENED_SLOTS: Final = slot_setters(Screened)


def _as_announced(metrics: ComputeMetrics) -> Screened:
    """``Screened(metrics)``, built without the frozen dataclass's ``__init__`` (half the cost of screening a
    path that needs nothing done: the common case, once per path in a full recompute)."""
    screened = object.__new__(Screened)
    set_metrics, set_findings = _SCREENED_SLOTS
    set_metrics(screened, metrics)
    set_findings(screened, ())
    return screened
