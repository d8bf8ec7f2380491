"""A set of metrics <-> the extended communities that carry it (DESIGN.md section 3).

:func:`encode_metrics` turns an agent's metrics into one community per metric;
:func:`decode_metrics` turns the communities of a received route back into
:class:`~dyncast_bgp.model.ComputeMetrics` and never raises: a malformed metric
becomes unknown (its problem is recorded, in the spirit of RFC 7606), and
everything not understood is kept verbatim for pass-through. No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from dyncast_bgp.model import ComputeMetrics, MetricsView, StateFlag, state_flags
from dyncast_bgp.wire.community import (
    BY_NAME,
    DEFAULT_METRIC_TYPE,
    UINT32_MAX,
    Community,
    LinkBandwidth,
    MetricCommunity,
    Source,
    WireError,
    to_hex,
)

STATE = "state"
VERSION = "version"
_NOT_QUANTITIES = frozenset({STATE, VERSION})


@dataclass(frozen=True, slots=True)
class DecodedMetrics:
    """What a receiver learns from the extended communities of one route.

    ``unknown`` holds, in arrival order, every community that was carried but not
    read as a metric: unknown sub-types, other types (opaque) and link bandwidth,
    so that they can be passed on verbatim. ``link_bandwidth`` is the usable
    link-bandwidth community with the lowest value (RFC 10005), if any.
    """

    metrics: ComputeMetrics
    problems: tuple[str, ...] = ()
    unknown: tuple[Community, ...] = ()
    link_bandwidth: LinkBandwidth | None = None


# ------------------------------------------------------------------ encode


def encode_metrics(values: Mapping[str, float], *, flags: StateFlag = StateFlag.NONE,
                   version: int | None = None, type_code: int = DEFAULT_METRIC_TYPE,
                   sources: Mapping[str, Source] | None = None) -> list[MetricCommunity]:
    """One community per metric, ordered by sub-type; the state flags always, the version when given.

    Raises :class:`WireError` (action ``reject``) naming the metric whose value
    cannot be encoded.
    """
    chosen = dict(sources or {})
    _check_names(values, chosen)
    communities = [MetricCommunity.of(name, value, source=chosen.get(name), type_code=type_code)
                   for name, value in values.items()]
    communities.append(MetricCommunity.of(STATE, _flags_value(flags), source=chosen.get(STATE),
                                          type_code=type_code))
    if version is not None:
        communities.append(MetricCommunity.of(VERSION, _version_value(version), source=chosen.get(VERSION),
                                              type_code=type_code))
    return sorted(communities, key=lambda community: community.subtype)


def _check_names(values: Mapping[str, float], sources: Mapping[str, Source]) -> None:
    """Metric values must name registry quantities; sources may name any registry metric.

    A source for a registry metric that is not being encoded is ignored (callers
    pass one source table for a changing set of metrics); an unknown name is a typo.
    """
    for name in values:
        if name in _NOT_QUANTITIES:
            raise WireError(f"{name}: pass it as {name if name == VERSION else 'flags'}=, not as a metric value",
                            action="reject")
        if name not in BY_NAME:
            raise WireError(f"unknown metric name {name!r} (known: {', '.join(BY_NAME)})", action="reject")
    for name in sources:
        if name not in BY_NAME:
            raise WireError(f"unknown metric name {name!r} in sources", action="reject")


def _flags_value(flags: StateFlag) -> int:
    value = int(flags)
    if not 0 <= value <= UINT32_MAX:
        raise WireError(f"{STATE}: flags {value:#x} do not fit 32 bits", action="reject")
    return value


def _version_value(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise WireError(f"{VERSION}: must be an integer, got {version!r}", action="reject")
    return version


def exabgp_list(communities: Iterable[Community]) -> str:
    """The ExaBGP text form of a list of extended communities: ``[ 0x... 0x... ]``."""
    return "[ " + "".join(to_hex(community) + " " for community in communities) + "]"


# ------------------------------------------------------------------ decode


@dataclass(slots=True)
class _Reader:
    """Accumulates one route's communities; only :func:`decode_metrics` uses it."""

    values: dict[str, float] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    unknown: list[Community] = field(default_factory=list)
    bandwidths: list[LinkBandwidth] = field(default_factory=list)
    seen: set[int] = field(default_factory=set)  # sub-types already read (first one wins)
    flags: StateFlag = StateFlag.NONE
    version: int | None = None

    def read(self, community: Community) -> None:
        if isinstance(community, MetricCommunity):
            self._metric(community)
        elif isinstance(community, LinkBandwidth):
            self._link_bandwidth(community)
        else:
            self.unknown.append(community)

    def _metric(self, community: MetricCommunity) -> None:
        if not _packable(community):
            self.problems.append(f"{community!r}: not a valid extended community, ignored")
            return
        spec = community.spec
        if spec is None:  # a sub-type from a newer registry: carried, never an error
            self.unknown.append(community)
            return
        if spec.subtype in self.seen:
            self.problems.append(f"{spec.name} ({to_hex(community)}): duplicate sub-type, the first one is used")
            return
        self.seen.add(spec.subtype)
        issues = _issues(community)
        if issues:
            self.problems.append(f"{spec.name} ({to_hex(community)}): {'; '.join(issues)}; metric ignored")
            return
        self._use(spec.name, community.value)

    def _use(self, name: str, value: float) -> None:
        if name == STATE:
            self.flags = state_flags(int(value))
        elif name == VERSION:
            self.version = int(value)
        else:
            self.values[name] = float(value)

    def _link_bandwidth(self, community: LinkBandwidth) -> None:
        label = _label(community)
        if label is None:
            self.problems.append(f"{community!r}: not a valid extended community, ignored")
            return
        self.unknown.append(community)  # carried on whatever its value: it is not ours to judge
        bandwidth = community.bytes_per_second
        if not (math.isfinite(bandwidth) and bandwidth >= 0):
            self.problems.append(f"link-bandwidth ({label}): {bandwidth!r} bytes/s is not usable; ignored")
            return
        self.bandwidths.append(community)


def decode_metrics(communities: Iterable[Community]) -> DecodedMetrics:
    """Read the metrics of one route from its decoded extended communities; never raises."""
    reader = _Reader()
    for community in communities:
        reader.read(community)
    lowest = min(reader.bandwidths, key=lambda community: community.bytes_per_second, default=None)
    metrics = ComputeMetrics(values=MetricsView(reader.values), flags=reader.flags, version=reader.version)
    return DecodedMetrics(metrics=metrics, problems=tuple(reader.problems), unknown=tuple(reader.unknown),
                          link_bandwidth=lowest)


def _packable(community: MetricCommunity) -> bool:
    """Whether the fields fit their octets (always true for decoded ones); cheaper than packing."""
    return (0 <= community.type_code <= 0xFF and 0 <= community.subtype <= 0xFF
            and 0 <= community.raw_value <= UINT32_MAX and 0 <= community.level <= 3 and 0 <= community.fmt <= 1
            and 0 <= community.unit <= 15 and 0 <= community.source <= 7 and 0 <= community.statistic <= 3
            and 0 <= community.reserved <= 15)


def _label(community: MetricCommunity | LinkBandwidth) -> str | None:
    """The hex form, or None when the object's fields cannot be packed (built by hand, not decoded)."""
    try:
        return to_hex(community)
    except WireError:
        return None


def _issues(community: MetricCommunity) -> list[str]:
    issues = community.problems()
    if not issues and community.name in _NOT_QUANTITIES:
        value = community.value
        if value != int(value) or not 0 <= value <= UINT32_MAX:
            issues.append(f"{community.name} value {value!r} is not a 32-bit unsigned integer")
    return issues
