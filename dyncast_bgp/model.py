"""Frozen value types shared by every part of dyncast-bgp.

Terms follow draft-li-dyncast-architecture (D-SID, D-BID) with the CATS names in
DESIGN.md section 1. Nothing here does I/O; everything is hashable and comparable
so that decisions are pure functions of these values.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
import math
import operator
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final, TypeVar, overload

from dyncast_bgp.slots import slot_setters

_T = TypeVar("_T")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class InstanceState(enum.StrEnum):
    """Lifecycle of one service instance (ETSI GS NFV-REL 006 REQ.VNF.M.12)."""

    ACTIVE = "active"
    CANARY = "canary"
    DRAINING = "draining"
    DRAINED = "drained"
    DOWN = "down"

    @property
    def takes_new_flows(self) -> bool:
        return self in (InstanceState.ACTIVE, InstanceState.CANARY)


class StateFlag(enum.IntFlag):
    """Bits of the state-flags metric (sub-type 0x30), DESIGN.md section 3."""

    NONE = 0
    DRAINING = 1 << 0
    CANARY = 1 << 1
    OVERLOADED = 1 << 2
    REDUCED_REDUNDANCY = 1 << 3
    DRAINED = 1 << 4  # with DRAINING: the drain is over (no live sessions left, its deadline, or a hard drain)


_KNOWN_FLAGS = functools.reduce(operator.or_, (int(member) for member in StateFlag), 0)
"""Every bit this version names (derived: a flag added to :class:`StateFlag` is known at once)."""


def state_flags(value: int) -> StateFlag:
    """``StateFlag(value)`` for a received state-flags value, bits this version does not know kept.

    The enum keeps every value it is called with in its own table for good; a peer sending ever new
    unknown bits (32 of them) would grow that table without bound. So a value with unknown bits is made
    and then left out of the table (the next such value is made again: equal, not the same object);
    values of known bits only, 32 at most, are the enum's members as usual.
    """
    flags = StateFlag(value)
    if value & ~_KNOWN_FLAGS:
        StateFlag._value2member_map_.pop(value, None)
    return flags


@dataclass(frozen=True, slots=True)
class ServiceId:
    """A D-SID: the anycast prefix of a service (usually a /32 or /128).

    Ordered IPv4 before IPv6, then by address and length, so mixed lists sort.
    Its hash is computed once: an ``ipaddress`` network hashes in Python, and the
    router puts service ids in sets and dicts for every update it receives.
    """

    prefix: IPNetwork
    _hash: int = field(init=False, repr=False, compare=False)
    sort_key: tuple[int, int, int] = field(init=False, repr=False, compare=False)
    """(IP version, network address, prefix length): computed once, read as a plain attribute."""
    order: int = field(init=False, repr=False, compare=False)
    """``sort_key`` as one int that sorts alike (version, then the address, then the length, in their own bits):
    an int compares in one step where a tuple compares item by item (the router sorts 10,000 services by it)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.prefix,)))
        version, address, length = self.prefix.version, int(self.prefix.network_address), self.prefix.prefixlen
        object.__setattr__(self, "sort_key", (version, address, length))
        object.__setattr__(self, "order", (version << 136) | (address << 8) | length)

    def __hash__(self) -> int:
        return self._hash

    def __lt__(self, other: ServiceId) -> bool:
        return self.sort_key < other.sort_key

    @classmethod
    def parse(cls, text: str) -> ServiceId:
        """Parse ``203.0.113.10`` or ``203.0.113.10/32``; host bits must be zero."""
        try:
            net = ipaddress.ip_network(text.strip(), strict=True)
        except ValueError as exc:
            raise ValueError(f"not a service prefix: {text!r} ({exc})") from None
        return cls(net)

    @property
    def version(self) -> int:
        return self.prefix.version

    def __str__(self) -> str:
        return str(self.prefix)


@dataclass(frozen=True, slots=True)
class InstanceKey:
    """Identifies one instance of one service as the network sees it.

    ``binding`` is the D-BID (the BGP next hop); ``path_id`` is the ADD-PATH
    path identifier, 0 when ADD-PATH is not in use.

    Its hash and its sort key are computed once, when it is made: an
    ``ipaddress`` object hashes and converts to ``int`` in Python, and the
    router compares, sorts and looks up a decision's keys every time the
    decision changes (the RIB keeps one key per path, so they are made once
    per instance, not once per decision).
    """

    service: ServiceId
    binding: IPAddress
    path_id: int = 0
    _hash: int = field(init=False, repr=False, compare=False)
    sort_key: tuple[tuple[int, int, int], int, int, int] = field(init=False, repr=False, compare=False)
    """(the service's sort key, IP version, D-BID, path id): computed once, read as a plain attribute."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "_hash", hash((self.service, self.binding, self.path_id)))
        object.__setattr__(self, "sort_key", (self.service.sort_key, self.binding.version, int(self.binding),
                                              self.path_id))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[InstanceKey], tuple[ServiceId, IPAddress, int]]:
        """Pickled as its fields, so another process computes the hash anew (an address hashes as a string,
        which differs between processes)."""
        return (InstanceKey, (self.service, self.binding, self.path_id))

    def __lt__(self, other: InstanceKey) -> bool:
        return self.sort_key < other.sort_key

    def __str__(self) -> str:
        suffix = f"#{self.path_id}" if self.path_id else ""
        return f"{self.service}@{self.binding}{suffix}"


by_order = operator.attrgetter("order")
"""A sort key function for :class:`ServiceId`: :attr:`ServiceId.order`, read in C (sorts as ``by_sort_key``)."""
by_sort_key = operator.attrgetter("sort_key")
"""A sort key function for :class:`InstanceKey` and :class:`ServiceId` (and anything with ``sort_key``): read in C,
where ``sorted()`` of the keys themselves calls their Python ``__lt__`` per comparison."""


class MetricsView(Mapping[str, float]):
    """An immutable, hashable mapping of metric name to finite value.

    The values sit in a private plain dict (never handed out): its ``get`` is
    a C call, where a ``mappingproxy``'s or the ``Mapping`` mixin's costs
    several Python-level steps, and the decision reads ~10 metrics per
    instance (:mod:`~dyncast_bgp.engine.assess` reads ``_data`` directly).
    """

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[str, float] | None = None) -> None:
        clean: dict[str, float] = {}
        for name, value in (data or {}).items():
            number = float(value)
            if not math.isfinite(number):
                raise ValueError(f"metric {name!r} is not finite: {value!r}")
            clean[name] = number
        self._data: dict[str, float] = dict(sorted(clean.items()))
        self._hash: int | None = None

    @classmethod
    def trusted(cls, data: dict[str, float]) -> MetricsView:
        """A view of ``data`` as it is, taking it over: for callers that guarantee it already is what
        ``__init__`` makes (every value a finite ``float``, the names in sorted order) and will not touch it
        again. The router's metric decoder builds 160,000 of these in a full recompute, where the checks
        and the sort of ``__init__`` cost as much as the decoding."""
        view = object.__new__(cls)
        view._data = data
        view._hash = None
        return view

    @overload
    def get(self, key: str, /) -> float | None: ...
    @overload
    def get(self, key: str, default: float | _T, /) -> float | _T: ...
    def get(self, key: str, default: object = None, /) -> object:
        return self._data.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __getitem__(self, key: str) -> float:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(tuple(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._data) == dict(other)
        return NotImplemented

    def __repr__(self) -> str:
        return f"MetricsView({dict(self._data)!r})"


@dataclass(frozen=True, slots=True)
class ComputeMetrics:
    """Compute-side metrics of one instance as announced by its agent.

    ``values`` holds the named metrics of the wire registry (``cpu_utilization``,
    ``active_sessions``, ``capacity`` ...). ``flags`` and ``version`` are the
    state-flags and software-version metrics, kept apart because they are not
    quantities. ``unknown`` counts communities that were carried but not
    understood (they are passed through on the wire, never interpreted).
    """

    values: MetricsView = field(default_factory=MetricsView)
    flags: StateFlag = StateFlag.NONE
    version: int | None = None

    def get(self, name: str) -> float | None:
        return self.values.get(name)

    @classmethod
    def trusted(cls, values: MetricsView, flags: StateFlag, version: int | None) -> ComputeMetrics:
        """The same as ``ComputeMetrics(values, flags, version)``, built without the frozen dataclass's
        three ``object.__setattr__`` calls (the router's metric decoder builds one per path)."""
        metrics = object.__new__(cls)
        set_values, set_flags, set_version = _METRICS_SLOTS
        set_values(metrics, values)
        set_flags(metrics, flags)
        set_version(metrics, version)
        return metrics


_METRICS_SLOTS: Final = slot_setters(ComputeMetrics)


@dataclass(frozen=True, slots=True)
class PathMetrics:
    """Network metrics of the path from an ingress to one instance over a window.

    The parameters of ETSI GR NFV-EVE 020 Table 5.1.3-1: mean and peak latency,
    mean and peak loss, available throughput. ``reachable`` is False when probes
    stopped answering.
    """

    rtt_mean_us: float | None = None
    rtt_peak_us: float | None = None
    loss_mean: float | None = None
    loss_peak: float | None = None
    throughput_bps: float | None = None
    reachable: bool = True


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a service, as the decision engine and dataplane see it."""

    key: InstanceKey
    state: InstanceState = InstanceState.ACTIVE
    metrics: ComputeMetrics = field(default_factory=ComputeMetrics)
    path: PathMetrics = field(default_factory=PathMetrics)
    name: str | None = None

    @property
    def service(self) -> ServiceId:
        return self.key.service

    @property
    def binding(self) -> IPAddress:
        return self.key.binding


def state_from_flags(flags: StateFlag, *, healthy: bool = True) -> InstanceState:
    """The lifecycle state an instance advertises through its state flags.

    DRAINED wins over DRAINING, which wins over CANARY; other bits do not matter. Read from a table by
    the three bits that count, as plain ``int`` arithmetic: ``&`` on an ``enum.Flag`` runs Python code
    and the router asks this once per instance of every service it decides.
    """
    if not healthy:
        return InstanceState.DOWN
    return _STATE_BY_BITS[int(flags) & _STATE_BITS]


_STATE_BITS: Final = int(StateFlag.DRAINED | StateFlag.DRAINING | StateFlag.CANARY)
_STATE_BY_BITS: Final = tuple(
    InstanceState.DRAINED if bits & StateFlag.DRAINED else InstanceState.DRAINING if bits & StateFlag.DRAINING
    else InstanceState.CANARY if bits & StateFlag.CANARY else InstanceState.ACTIVE
    for bits in range(_STATE_BITS + 1))
"""The state of every value of the bits in :data:`_STATE_BITS` (index: those bits of the flags)."""


def flags_for_state(state: InstanceState, *, overloaded: bool = False,
                    reduced_redundancy: bool = False) -> StateFlag:
    """State flags an agent announces for an instance in ``state``."""
    flags = StateFlag.NONE
    if state in (InstanceState.DRAINING, InstanceState.DRAINED):
        flags |= StateFlag.DRAINING
    if state is InstanceState.DRAINED:
        flags |= StateFlag.DRAINED
    if state is InstanceState.CANARY:
        flags |= StateFlag.CANARY
    if overloaded:
        flags |= StateFlag.OVERLOADED
    if reduced_redundancy:
        flags |= StateFlag.REDUCED_REDUNDANCY
    return flags


@dataclass(frozen=True, slots=True)
class Decision:
    """How new flows of one service are spread: weights summing to 1 (or empty).

    ``reasons`` explains every weight, ``excluded`` every instance that got none.
    """

    service: ServiceId
    weights: Mapping[InstanceKey, float]
    reasons: Mapping[InstanceKey, str] = field(default_factory=dict)
    excluded: Mapping[InstanceKey, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The common case, checked in C where possible: every key of this service (by identity first:
        # ``ServiceId.__eq__`` runs in Python), weights that sum to a finite total (so none is NaN or
        # infinite) with a non-negative least one. Anything else takes the loop below, which finds and
        # words the first problem exactly as before.
        service = self.service
        weights = self.weights
        values = list(weights.values())
        total = sum(values)
        if (math.isfinite(total) and (not values or min(values) >= 0.0)
                and all([key.service is service or key.service == service for key in weights])):
            if values and not math.isclose(total, 1.0, abs_tol=1e-9):
                raise ValueError(f"weights of {self.service} sum to {total}, not 1")
            return
        for key, weight in self.weights.items():
            if key.service != self.service:
                raise ValueError(f"{key} is not an instance of {self.service}")
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"weight of {key} is not a finite non-negative number: {weight!r}")
        total = sum(self.weights.values())
        if self.weights and not math.isclose(total, 1.0, abs_tol=1e-9):
            raise ValueError(f"weights of {self.service} sum to {total}, not 1")

    @classmethod
    def checked(cls, service: ServiceId, weights: Mapping[InstanceKey, float], sound: bool,
                reasons: Mapping[InstanceKey, str], excluded: Mapping[InstanceKey, str]) -> Decision:
        """A decision whose keys the caller knows are all of ``service`` (the batch decision reads them so) and
        whose weights it has checked as ``__post_init__`` checks them: ``sound`` (the batch decision checks
        every service of a block at once, ``engine.vector.sound_weights``). Built without running the checks
        again; a decision not ``sound`` goes through the normal constructor and its errors."""
        if not sound:
            return cls(service, weights, reasons, excluded)
        decision = object.__new__(cls)
        set_service, set_weights, set_reasons, set_excluded = _DECISION_SLOTS
        set_service(decision, service)
        set_weights(decision, weights)
        set_reasons(decision, reasons)
        set_excluded(decision, excluded)
        return decision


_DECISION_SLOTS: Final = slot_setters(Decision)
