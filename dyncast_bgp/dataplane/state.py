"""The dataplane's view of the kernel: what is (or should be) installed, per object (pure).

A :class:`KernelState` is what :mod:`~dyncast_bgp.dataplane.plan` diffs: it
is built either from a :class:`~dyncast_bgp.dataplane.desired.DesiredState`
(plus the slots allocated to its instances) or read back from the kernel by
:mod:`~dyncast_bgp.dataplane.readback`. Read-back state does not know the
routes (they are re-asserted, see :class:`InstanceEntry`), and may hold
*stale* objects (ours, but part of nothing consistent) that the next plan
removes.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from dyncast_bgp.dataplane.desired import Affinity, Encap, Forwarding
from dyncast_bgp.dataplane.layout import chain_name, tunnel_name
from dyncast_bgp.model import InstanceKey, IPAddress, IPNetwork, ServiceId


@dataclass(frozen=True, slots=True, eq=False)
class Tunnel:
    """One tunnel device: ``ip link add NAME type KIND [mode any] local L remote R [dev D]``.

    Tunnels are equal when their names are: the name is a hash of kind,
    endpoints and device (:func:`~dyncast_bgp.dataplane.layout.tunnel_name`),
    and a tunnel read back from the kernel may not know every field.
    """

    name: str
    kind: str  # ipip, sit, gre, ip6tnl, ip6gre
    remote: IPAddress | None
    local: IPAddress | None
    device: str | None = None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tunnel) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


def tunnel_for(forwarding: Forwarding, service_version: int) -> Tunnel | None:
    """The tunnel device ``forwarding`` needs for a service of IP version ``service_version`` (None: no device).

    IPv4 endpoints carry IPv4 in ``ipip`` and IPv6 in ``sit``; IPv6 endpoints
    use ``ip6tnl`` (mode any) for both; GRE uses ``gre``/``ip6gre`` for both.
    """
    if forwarding.mode not in (Encap.IPIP, Encap.GRE) or forwarding.remote is None:
        return None
    remote, v6_underlay = forwarding.remote, forwarding.remote.version == 6
    if forwarding.mode is Encap.GRE:
        kind = "ip6gre" if v6_underlay else "gre"
    elif v6_underlay:
        kind = "ip6tnl"
    else:
        kind = "sit" if service_version == 6 else "ipip"
    return Tunnel(tunnel_name(kind, forwarding.local, remote, forwarding.device), kind, remote, forwarding.local,
                  forwarding.device)


class InstanceEntry(NamedTuple):
    """One instance as installed: its slot, its share of new flows, how packets reach it.

    ``forwarding`` is None when read back from the kernel (routes are not
    read at start; the first apply re-asserts them with ``ip route replace``).
    A named tuple, not a dataclass: an apply of 10,000 services builds tens
    of thousands of them, and tuples are built and compared in C.
    """

    key: InstanceKey
    slot: int
    buckets: int
    forwarding: Forwarding | None = None
    name: str | None = None

    @property
    def family(self) -> int:
        return self.key.service.version


class AudienceEntry(NamedTuple):
    """A client-prefix canary as installed: new flows from ``clients`` (canonical text, sorted) are drawn
    by ``buckets`` (aligned with the service's instances) before the service's own draw."""

    clients: tuple[str, ...]
    buckets: tuple[int, ...]


def canonical_clients(clients: Iterable[IPNetwork]) -> tuple[str, ...]:
    """Client prefixes as nftables keeps them in a set: overlaps merged, sorted, as text."""
    nets = list(clients)
    merged = [*ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv4Network)),
              *ipaddress.collapse_addresses(n for n in nets if isinstance(n, ipaddress.IPv6Network))]
    return tuple(str(net) for net in merged)


class ServiceEntry(NamedTuple):
    """One D-SID: its affinity and its instances in draw order (sorted by key).

    ``label`` is ``str(service)``, kept because formatting an ``ipaddress``
    network is slow and every rendered rule names it.
    """

    service: ServiceId
    affinity: Affinity
    timeout_ms: int
    instances: tuple[InstanceEntry, ...]
    label: str
    audience: AudienceEntry | None = None

    @property
    def chain(self) -> str:
        return chain_name(self.label)

    @property
    def is_host(self) -> bool:
        return self.service.prefix.prefixlen == self.service.prefix.max_prefixlen

    def same_chain(self, other: ServiceEntry) -> bool:
        """Whether both render the same chain (forwarding and names do not change the chain)."""
        return (self.affinity is other.affinity and self.timeout_ms == other.timeout_ms
                and self.audience == other.audience and len(self.instances) == len(other.instances)
                and all(a[:3] == b[:3] for a, b in zip(self.instances, other.instances, strict=True)))

    def same_buckets(self, other: ServiceEntry) -> bool:
        """:meth:`same_chain` for two entries known to hold the same instances in the same order."""
        return (self.affinity is other.affinity and self.timeout_ms == other.timeout_ms
                and self.audience == other.audience
                and [entry.buckets for entry in self.instances] == [entry.buckets for entry in other.instances])

    def nft_view(self) -> tuple[object, ...]:
        """What the service's chain depends on, as one comparable value."""
        return (self.service, self.affinity, self.timeout_ms,
                tuple(entry[:3] for entry in self.instances), self.audience)


@dataclass(frozen=True, slots=True)
class Meta:
    """Bookkeeping kept in the kernel with the ruleset (the registry's slot-0 element)."""

    schema: int = 1
    saved_src_valid_mark: int | None = None  # net.ipv4.conf.all.src_valid_mark before we set it


@dataclass(frozen=True, slots=True)
class Stale:
    """Our objects that belong to nothing consistent; the next plan removes them."""

    chains: frozenset[str] = frozenset()
    dispatch: frozenset[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]] = frozenset()
    registry: frozenset[tuple[int, str]] = frozenset()  # (slot, comment)
    guards: frozenset[tuple[int, str]] = frozenset()  # (family, "nop" | "goto"): half of a guard pair
    rules: frozenset[tuple[int, int]] = frozenset()  # (family, slot) of a rule no registered instance explains

    def __bool__(self) -> bool:
        return bool(self.chains or self.dispatch or self.registry or self.guards or self.rules)


@dataclass(frozen=True, slots=True)
class KernelState:
    """Everything the dataplane has (or wants) in the kernel.

    ``rules`` holds ``(family, slot)`` for each per-instance ``ip rule`` of
    an instance in ``services`` (others are in ``stale.rules``);
    ``guards`` the families whose two guard rules are in place; ``table``
    whether ``inet dyncast`` exists at all.
    """

    services: Mapping[ServiceId, ServiceEntry] = field(default_factory=dict)
    tunnels: frozenset[Tunnel] = frozenset()
    rules: frozenset[tuple[int, int]] = frozenset()
    guards: frozenset[int] = frozenset()
    table: bool = False
    meta: Meta = Meta()
    stale: Stale = Stale()

    def instances(self) -> Iterator[InstanceEntry]:
        for entry in self.services.values():
            yield from entry.instances

    def slots(self) -> dict[InstanceKey, int]:
        return {entry.key: entry.slot for entry in self.instances()}

    @property
    def empty(self) -> bool:
        return not (self.services or self.tunnels or self.rules or self.guards or self.table or self.stale)
