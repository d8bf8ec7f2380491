"""What the ingress kernel should hold: the dataplane's whole desired state.

The router turns every service's :class:`~dyncast_bgp.model.Decision` into one
:class:`DesiredState` and hands it, whole, to a :class:`Dataplane` (STYLE.md
habit 5): the backend diffs it against what it installed, applies the
difference atomically, and can re-apply everything after a restart. The same
types are read from a file by `dyncast dataplane apply`.

A service's instances are reached by one of the :class:`Forwarding` modes:
``direct`` (a connected next hop, e.g. intra-site server access) or an
encapsulation (``ipip``, ``gre``: a tunnel device per endpoint pair, ``sit``,
``ip6tnl`` or ``ip6gre`` chosen by the address families; ``srv6``: an SRv6
H.Encaps route toward a SID) from this ingress to a tunnel endpoint at the
instance's site, so the transit between ingress and egress needs no route for
the D-SID (DESIGN.md section 4).
"""

from __future__ import annotations

import enum
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any, NamedTuple, Protocol

from dyncast_bgp.model import InstanceKey, IPAddress, IPNetwork, ServiceId


class Affinity(enum.StrEnum):
    """How a flow keeps its instance."""

    FLOW = "flow"  # 5-tuple: the conntrack entry carries the pick (default)
    CLIENT = "client"  # source address + D-SID: all flows of one client go to one instance


class Encap(enum.StrEnum):
    DIRECT = "direct"
    IPIP = "ipip"
    GRE = "gre"
    SRV6 = "srv6"  # seg6 lwtunnel encap toward the SID in ``remote`` (the egress decapsulates: End.DX4/DX6)


@dataclass(frozen=True, slots=True)
class Forwarding:
    """How packets for one instance leave the ingress.

    ``direct``: route the D-SID to ``next_hop`` (on a connected network) via
    ``device`` if given. ``ipip``/``gre``: encapsulate toward ``remote`` (the
    egress or the instance) from ``local``, bound to the underlay ``device`` if
    given; the instance side decapsulates. ``srv6``: encapsulate in IPv6 toward
    the SID ``remote`` (``local`` is optional and informative: the kernel takes
    the outer source from ``ip sr tunsrc`` or the route), leaving by ``device``
    (default: the interface of the main-table route to the SID).
    """

    mode: Encap
    next_hop: IPAddress | None = None
    device: str | None = None
    remote: IPAddress | None = None
    local: IPAddress | None = None

    def __post_init__(self) -> None:
        if self.mode is Encap.DIRECT and self.next_hop is None:
            raise ValueError("direct forwarding needs a next_hop")
        if self.mode in (Encap.IPIP, Encap.GRE) and (self.remote is None or self.local is None):
            raise ValueError(f"{self.mode} forwarding needs remote and local tunnel endpoints")
        if self.mode is Encap.SRV6 and (self.remote is None or self.remote.version != 6):
            raise ValueError("srv6 forwarding needs an IPv6 SID as remote")
        if self.remote is not None and self.local is not None and self.remote.version != self.local.version:
            raise ValueError("tunnel endpoints must be of one IP version")


class _InstanceFields(NamedTuple):
    key: InstanceKey
    weight: float
    forwarding: Forwarding
    name: str | None = None


class InstanceTarget(_InstanceFields):
    """One instance of a service target: its weight for new flows and how its packets leave.

    A named tuple, not a dataclass: the router builds one per instance of every changed service (160,000 in a
    full recompute at 10,000 x 16), and :meth:`ServiceTarget.reweighted` builds them in C (``tuple.__new__`` over
    the columns), about 2.5x faster than even a written-out slotted ``__init__``. The constructor checks the
    weight; ``_replace`` goes through it too. Equality is a tuple's (field by field, in order)."""

    __slots__ = ()

    def __new__(cls, key: InstanceKey, weight: float, forwarding: Forwarding,
                name: str | None = None) -> InstanceTarget:
        if not (0.0 <= weight <= _FLOAT_MAX):  # False for NaN and infinity too
            raise ValueError(f"{key}: weight must be a finite number >= 0, got {weight!r}")
        return tuple.__new__(cls, (key, weight, forwarding, name))

    def _replace(self, **changes: Any) -> InstanceTarget:
        values = [changes.pop(name, value) for name, value in zip(self._fields, self, strict=True)]
        if changes:
            raise TypeError(f"InstanceTarget has no field {', '.join(map(repr, changes))}")
        return InstanceTarget(*values)


_FLOAT_MAX = sys.float_info.max


@dataclass(frozen=True, slots=True)
class Audience:
    """New flows from ``clients`` are spread by ``weights`` instead of the service's own (a client-prefix
    canary: the new version for these clients only). Instances not in ``weights`` get none of them."""

    clients: tuple[IPNetwork, ...]
    weights: Mapping[InstanceKey, float]

    def __post_init__(self) -> None:
        if not self.clients:
            raise ValueError("an audience needs at least one client prefix")
        for key, weight in self.weights.items():
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"{key}: audience weight must be a finite number >= 0, got {weight!r}")


class TargetColumns(NamedTuple):
    """A service target's instances as columns, in the instances' order."""

    keys: tuple[InstanceKey, ...]
    weights: tuple[float, ...]
    forwardings: tuple[Forwarding, ...]
    names: tuple[str | None, ...]


_NO_COLUMNS = TargetColumns((), (), (), ())


class ServiceTarget:
    """One D-SID: how new flows are spread over its instances and how flows stick.

    Immutable, with the fields of a frozen dataclass (``service``, ``instances``, ``affinity``,
    ``affinity_timeout``, ``audience``): equality, hash and repr are theirs (it is not a dataclass: setting a
    field raises ``AttributeError``, and :meth:`replace` stands for ``dataclasses.replace``). The instances are held as
    :class:`InstanceTarget` tuples, as :class:`TargetColumns`, or both, each form made from the other when first
    read. The router's usual new target (:meth:`reweighted`) holds columns only: it shares the key, forwarding and
    name columns of the target before and brings a weight column, where 16 instance tuples per service (160,000
    in a full recompute) took most of the router's ``desired()``; the dataplane compares and re-buckets such a
    target by its columns (``dataplane/plan.py``), and what reads ``instances`` gets them made once.
    """

    __slots__ = ("_columns", "_instances", "affinity", "affinity_timeout", "audience", "service")
    service: ServiceId
    affinity: Affinity
    affinity_timeout: float  # seconds an idle client keeps its instance (client affinity)
    audience: Audience | None
    _instances: tuple[InstanceTarget, ...] | None
    _columns: TargetColumns | None

    def __init__(self, service: ServiceId, instances: Iterable[InstanceTarget], affinity: Affinity = Affinity.FLOW,
                 affinity_timeout: float = 300.0, audience: Audience | None = None) -> None:
        made = tuple(instances)
        _set_service(self, service)
        _set_affinity(self, affinity)
        _set_timeout(self, affinity_timeout)
        _set_audience(self, audience)
        _set_instances(self, made)
        _set_columns(self, None)
        keys = [target.key for target in made]
        if len(set(keys)) != len(keys):
            raise ValueError(f"{service}: an instance is listed twice")
        for key in keys:
            if key.service is not service and key.service != service:  # the router's keys share one object
                raise ValueError(f"{key} is not an instance of {service}")
        if not (math.isfinite(affinity_timeout) and affinity_timeout > 0):
            raise ValueError(f"{service}: affinity_timeout must be > 0")
        if audience is not None:
            unknown = set(audience.weights) - set(keys)
            if unknown:
                raise ValueError(f"{service}: audience weights for instances not listed: "
                                 f"{', '.join(sorted(map(str, unknown)))}")
            wrong = [str(net) for net in audience.clients if net.version != service.version]
            if wrong:
                raise ValueError(f"{service}: audience clients of the other address family: {', '.join(wrong)}")

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"ServiceTarget is immutable: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"ServiceTarget is immutable: cannot delete {name}")

    @property
    def instances(self) -> tuple[InstanceTarget, ...]:
        made = self._instances
        if made is None:
            keys, weights, forwardings, names = self._columns or _NO_COLUMNS
            made = tuple(map(tuple.__new__, repeat(InstanceTarget), zip(keys, weights, forwardings, names,
                                                                             strict=True)))
            _set_instances(self, made)  # the same value whoever makes it first (a worker thread, say)
        return made

    @property
    def columns(self) -> TargetColumns:
        made = self._columns
        if made is None:
            instances = self._instances
            made = TargetColumns(*zip(*instances, strict=True)) if instances else _NO_COLUMNS
            _set_columns(self, made)
        return made

    @property
    def weights(self) -> Mapping[InstanceKey, float]:
        columns = self.columns
        return dict(zip(columns.keys, columns.weights, strict=True))

    @property
    def size(self) -> int:
        """How many instances (no ``__len__``: a target without instances is still a target, and true)."""
        held = self._instances
        return len(held) if held is not None else len(self.columns.keys)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        if type(other) is not ServiceTarget:
            return NotImplemented
        if not (self.service == other.service and self.affinity == other.affinity
                and self.affinity_timeout == other.affinity_timeout and self.audience == other.audience):
            return False
        mine, theirs = self._columns, other._columns
        if mine is not None and theirs is not None:  # column by column, identity first (a shared column: at once)
            return mine == theirs
        return self.instances == other.instances

    def __hash__(self) -> int:
        return hash((self.service, self.instances, self.affinity, self.affinity_timeout, self.audience))

    def __repr__(self) -> str:
        return (f"ServiceTarget(service={self.service!r}, instances={self.instances!r}, affinity={self.affinity!r}, "
                f"affinity_timeout={self.affinity_timeout!r}, audience={self.audience!r})")

    def replace(self, **changes: Any) -> ServiceTarget:
        """A copy with ``changes`` (fields by name), checked as the constructor checks."""
        fields: dict[str, Any] = {"service": self.service, "instances": self.instances, "affinity": self.affinity,
                                  "affinity_timeout": self.affinity_timeout, "audience": self.audience}
        unknown = set(changes) - set(fields)
        if unknown:
            raise TypeError(f"ServiceTarget has no field {', '.join(sorted(unknown))}")
        return ServiceTarget(**{**fields, **changes})

    def __reduce__(self) -> tuple[type[ServiceTarget], tuple[object, ...]]:
        return ServiceTarget, (self.service, self.instances, self.affinity, self.affinity_timeout, self.audience)

    @classmethod
    def reweighted(cls, like: ServiceTarget, weights: Sequence[float], affinity: Affinity,
                   affinity_timeout: float) -> ServiceTarget:
        """``like`` (a target built and checked before) with new ``weights`` for its instances, in their order,
        and no audience: what the router builds for the usual new decision. It shares ``like``'s key, forwarding
        and name columns, so the checks of the keys (each listed once, each of the service: 16 hashes in Python
        per service) still hold and are not run again. The weights are trusted, not checked: the router passes
        the weights a :class:`~dyncast_bgp.model.Decision` holds (checked finite and >= 0 when it was made) or 0.
        No instance is made here (see the class)."""
        keys, _, forwardings, names = like.columns
        if len(weights) != len(keys):
            raise ValueError(f"{like.service}: {len(weights)} weights for {len(keys)} instances")
        if not (math.isfinite(affinity_timeout) and affinity_timeout > 0):
            raise ValueError(f"{like.service}: affinity_timeout must be > 0")
        target = object.__new__(cls)
        _set_service(target, like.service)
        _set_affinity(target, affinity)
        _set_timeout(target, affinity_timeout)
        _set_audience(target, None)
        _set_instances(target, None)
        _set_columns(target, TargetColumns(keys, tuple(weights), forwardings, names))
        return target


_set_service, _set_affinity, _set_timeout, _set_audience, _set_instances, _set_columns = (
    ServiceTarget.__dict__[name].__set__
    for name in ("service", "affinity", "affinity_timeout", "audience", "_instances", "_columns"))


@dataclass(frozen=True, slots=True)
class DesiredState:
    services: tuple[ServiceTarget, ...] = ()

    def __post_init__(self) -> None:
        seen = [target.service for target in self.services]
        if len(set(seen)) != len(seen):
            raise ValueError("a service is listed twice")

    @classmethod
    def of(cls, services: Iterable[ServiceTarget]) -> DesiredState:
        return cls(tuple(sorted(services, key=lambda s: s.service.sort_key)))


class DataplaneError(Exception):
    """The backend refused a desired state (nothing changed) or failed to apply it."""


class DataplaneInputError(DataplaneError):
    """The input was refused before anything in the kernel changed (bad prefix, unknown instance ...)."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    changed: bool
    seconds: float
    summary: str = ""
    details: Mapping[str, int] = field(default_factory=dict)


class Dataplane(Protocol):
    """Kernel programming, as the router sees it."""

    def apply(self, desired: DesiredState) -> ApplyResult:
        """Install ``desired`` whole (diffed against what is installed); on error nothing changes."""
        ...

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        """Live flows (conntrack entries) per instance."""
        ...

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        """Hard removal: delete these instances' conntrack and affinity entries; returns how many."""
        ...
