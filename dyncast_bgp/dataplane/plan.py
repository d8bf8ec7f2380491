"""Desired state -> kernel objects, and the difference to what is installed (pure).

Three steps, all without I/O:

1. :func:`validate` lists every problem of a :class:`DesiredState` that the
   kernel objects cannot express (a prefix that would steer all traffic,
   overlapping service prefixes, a next hop of the wrong family ...).
2. :class:`Builder` turns a valid desired state into a :class:`KernelState`:
   slots are kept for instances that have one and allocated (lowest free, never
   a slot still installed) for new ones, weights become buckets
   (:mod:`~dyncast_bgp.dataplane.buckets`). Services whose target did not
   change since the last build are reused, so an apply costs O(changed)
   conversions plus one equality check per service.
3. :func:`diff` compares installed and desired state and returns the
   :class:`Plan`: which chains, dispatch and registry elements, routes, rules
   and tunnels to add, rewrite or remove, and which marks to evict.

Removing an instance from the desired state is a hard removal: its routes go,
so its flows could no longer be delivered, and its conntrack and affinity
entries are deleted so they re-pin at once (and its mark is safe to reuse).
A soft drain is weight 0: the instance keeps its slot, route and flows.
"""

from __future__ import annotations

import ipaddress
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dyncast_bgp.dataplane import buckets as bucketing
from dyncast_bgp.dataplane.desired import DesiredState, Encap, Forwarding, InstanceTarget, ServiceTarget
from dyncast_bgp.dataplane.layout import MAX_SLOT, Layout
from dyncast_bgp.dataplane.state import (
    AudienceEntry,
    InstanceEntry,
    KernelState,
    Meta,
    ServiceEntry,
    Stale,
    Tunnel,
    canonical_clients,
    tunnel_for,
)
from dyncast_bgp.model import InstanceKey

DEVICE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
NAME = re.compile(r"^[A-Za-z0-9_.:@/+-]{1,64}$")
FAMILIES = (4, 6)


# -- validation ---------------------------------------------------------------------------------


def validate(desired: DesiredState, layout: Layout, changes: Changes | None = None) -> list[str]:
    """Every reason the kernel objects cannot express ``desired`` (empty: valid).

    ``changes``: what changed since a state that was valid (see
    :meth:`Builder.changes`); only that is checked again: the changed
    targets, and of a target whose previous version is known only its new
    or re-routed instances. Overlaps are checked whenever the list of
    services changed and a changed target is a prefix wider than one address.
    """
    problems: list[str] = []
    if changes is None:
        for target in desired.services:
            problems += _service_problems(target, layout, None)
    else:
        previous = changes.previous or (None,) * len(changes.targets)
        reweighted = changes.reweighted or (False,) * len(changes.targets)
        for target, before, only_weights in zip(changes.targets, previous, reweighted, strict=True):
            if only_weights:  # instances, names and forwarding as validated before
                problems += _weight_problems(target, layout)
            else:
                problems += _service_problems(target, layout, before)
    if changes is None or (changes.positions is None and any(
            t.service.prefix.prefixlen < t.service.prefix.max_prefixlen for t in changes.targets)):
        problems += _overlaps(desired)  # (with positions, the prefixes are those of a valid state)
    count = sum(target.size for target in desired.services)
    if count > MAX_SLOT:
        problems.append(f"{count} instances: at most {MAX_SLOT} fit the mark range")
    return problems


def _service_problems(target: ServiceTarget, layout: Layout, before: ServiceTarget | None) -> list[str]:
    service, net = target.service, target.service.prefix
    problems: list[str] = []
    if before is None and net.prefixlen == 0:
        problems.append(f"service {service}: a default prefix would steer all traffic")
    if before is None and (net.is_multicast or net.is_loopback or net.is_link_local
                           or net.network_address.is_unspecified):
        problems.append(f"service {service}: not a unicast service prefix")
    problems += _weight_problems(target, layout)
    checked = before.instances if before is not None and len(before.instances) == len(target.instances) else ()
    for index, instance in enumerate(target.instances):
        if checked:
            old = checked[index]
            if (old.key is instance.key or old.key.binding == instance.key.binding) and old.name == instance.name \
                    and same_forwarding(old.forwarding, instance.forwarding):
                continue  # checked when it was installed
        problems += [f"instance {instance.key}: {text}" for text in _instance_problems(instance, target)]
    return problems


def _weight_problems(target: ServiceTarget, layout: Layout) -> list[str]:
    weights = target.columns.weights
    if len(weights) <= layout.resolution:
        return []
    weighted = sum(1 for weight in weights if weight > 0)
    if weighted > layout.resolution:
        return [f"service {target.service}: {weighted} weighted instances exceed the resolution {layout.resolution}"]
    if target.audience is not None:
        weighted = sum(1 for weight in target.audience.weights.values() if weight > 0)
        if weighted > layout.resolution:
            return [f"service {target.service}: {weighted} weighted instances of its audience exceed the resolution "
                    f"{layout.resolution}"]
    return []


def _instance_problems(instance: InstanceTarget, target: ServiceTarget) -> list[str]:
    problems: list[str] = []
    if instance.key.service != target.service:
        problems.append(f"unknown instance: listed under service {target.service}")
    if instance.name is not None and not NAME.match(instance.name):
        problems.append(f"name {instance.name!r}: use 1-64 of A-Z a-z 0-9 _ . : @ / + -")
    problems += _forwarding_problems(instance.forwarding, target.service.version)
    return problems


def _forwarding_problems(forwarding: Forwarding, version: int) -> list[str]:
    problems: list[str] = []
    if forwarding.device is not None and not DEVICE.match(forwarding.device):
        problems.append(f"device {forwarding.device!r} is not an interface name")
    if forwarding.mode is Encap.DIRECT:
        hop = forwarding.next_hop
        if hop is not None and hop.version != version:
            problems.append(f"next hop {hop} is not IPv{version} like the service")
        if hop is not None and (hop.is_multicast or hop.is_unspecified or hop.is_loopback):
            problems.append(f"next hop {hop} is not a unicast address")
    else:
        remote = forwarding.remote
        if remote is not None and (remote.is_multicast or remote.is_unspecified or remote.is_loopback):
            problems.append(f"tunnel endpoint {remote} is not a unicast address")
    return problems


def _overlaps(desired: DesiredState) -> list[str]:
    """Non-host prefixes of one family must not overlap (host prefixes inside them are fine: they win)."""
    problems: list[str] = []
    for version in FAMILIES:
        nets = sorted((t.service.prefix for t in desired.services
                       if t.service.version == version and t.service.prefix.prefixlen < t.service.prefix.max_prefixlen),
                      key=lambda n: (int(n.network_address), n.prefixlen))
        for first, second in itertools.pairwise(nets):
            if int(second.network_address) <= int(first.broadcast_address):
                problems.append(f"services {first} and {second} overlap")
    return problems


# -- building the desired kernel state ------------------------------------------------------------


def allocate(keys: Iterable[InstanceKey], installed: Mapping[InstanceKey, int], reserved: Iterable[int] = ()
             ) -> dict[InstanceKey, int]:
    """Slots for ``keys``: the installed slot if there is one, else the lowest slot nobody holds.

    ``installed`` and ``reserved`` slots are never handed to a new instance,
    so a slot is reused only after the instance that held it is gone from the
    kernel (its conntrack entries evicted).
    """
    slots: dict[InstanceKey, int] = {}
    taken = set(installed.values()) | set(reserved)
    fresh = (slot for slot in range(1, MAX_SLOT + 1) if slot not in taken)
    for key in sorted(keys, key=lambda k: k.sort_key):
        if key in installed:
            slots[key] = installed[key]
            continue
        try:
            slots[key] = next(fresh)
        except StopIteration:
            raise ValueError(f"no free slot for {key}") from None
    return slots


def timeout_ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def draw_order(target: ServiceTarget) -> tuple[InstanceTarget, ...]:
    """A target's instances in the order their buckets are laid out: sorted by key."""
    if len(target.instances) < 2:
        return target.instances
    return tuple(sorted(target.instances, key=lambda instance: instance.key.sort_key))


def entry_for(target: ServiceTarget, slots: Sequence[int], layout: Layout,
              resolve: Callable[[Forwarding], Forwarding] | None = None, *,
              ordered: Sequence[InstanceTarget] | None = None, label: str | None = None) -> ServiceEntry:
    """The kernel view of one service target; ``slots`` are those of :func:`draw_order`'s instances.

    ``resolve`` completes a forwarding (e.g. the device of an SRv6 route) before it is installed;
    ``ordered`` and ``label`` save recomputing :func:`draw_order` and ``str(target.service)``.
    """
    ordered = draw_order(target) if ordered is None else ordered
    shares = bucketing.split([instance.weight for instance in ordered], layout.resolution)
    instances = tuple(InstanceEntry(instance.key, slot, share,
                                    resolve(instance.forwarding) if resolve else instance.forwarding, instance.name)
                      for instance, slot, share in zip(ordered, slots, shares, strict=True))
    return ServiceEntry(target.service, target.affinity, timeout_ms(target.affinity_timeout), instances,
                        str(target.service) if label is None else label, audience_entry(target, ordered, layout))


def audience_entry(target: ServiceTarget, ordered: Sequence[InstanceTarget], layout: Layout) -> AudienceEntry | None:
    """The installed form of ``target.audience`` for instances in ``ordered`` (draw) order; None without one."""
    audience = target.audience
    if audience is None:
        return None
    weights = audience.weights
    buckets = bucketing.split([weights.get(instance.key, 0.0) for instance in ordered], layout.resolution)
    if not any(buckets):
        return None  # no audience draw is rendered (its clients take the service's): none is read back either
    return AudienceEntry(canonical_clients(audience.clients), tuple(buckets))



SAME, REWEIGHTED, REBUILT = 0, 1, 2  # what compare_targets found


def compare_targets(a: ServiceTarget, b: ServiceTarget) -> int:
    """How two targets of one service differ, several times faster than the dataclass equality.

    ``SAME``: ``a == b``. ``REWEIGHTED``: the same instances (keys, names,
    forwarding) in the same order, only weights, affinity or its timeout
    differ, so only the service's chain can change. ``REBUILT``: anything else.

    A router rebuilds its whole desired state for every change, so every
    apply compares every service with its previous target: this is the
    per-service cost of an apply in which nothing else happens.
    """
    if a is b:
        return SAME
    keys_a, weights_a, forwardings_a, names_a = a.columns
    keys_b, weights_b, forwardings_b, names_b = b.columns
    if len(keys_a) != len(keys_b):
        return REBUILT
    result = SAME if (a.affinity is b.affinity and a.affinity_timeout == b.affinity_timeout
                      and a.audience == b.audience) else REWEIGHTED
    if keys_a is not keys_b or forwardings_a is not forwardings_b or names_a is not names_b:  # else: one
        for x, y, f, g, m, n in zip(keys_a, keys_b, forwardings_a, forwardings_b,  # reweighted from the other
                                    names_a, names_b, strict=True):
            if m != n or not same_forwarding(f, g) or (x is not y and (x.binding != y.binding
                                                                       or x.path_id != y.path_id)):
                return REBUILT
    return result if weights_a == weights_b else REWEIGHTED


def reweighted_entry(target: ServiceTarget, old: ServiceEntry, layout: Layout) -> ServiceEntry:
    """:func:`entry_for` of a target whose instances are ``old``'s (same order, names, forwarding).

    Slots, resolved forwarding and names are taken from ``old``: only the
    buckets (and the affinity settings) are computed.
    """
    columns = target.columns  # no instance made for the router's reweighted targets (desired.py)
    shares = bucketing.split(columns.weights, layout.resolution)
    instances = tuple([InstanceEntry(key, entry.slot, share, entry.forwarding, entry.name)
                       for key, entry, share in zip(columns.keys, old.instances, shares, strict=True)])
    return ServiceEntry(target.service, target.affinity, timeout_ms(target.affinity_timeout), instances, old.label,
                        None if target.audience is None else audience_entry(target, target.instances, layout))


def same_forwarding(a: Forwarding | None, b: Forwarding | None) -> bool:
    """``a == b``, cheaper than the dataclass equality (identity first, then field by field)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return (a.mode is b.mode and (a.next_hop is b.next_hop or a.next_hop == b.next_hop)
            and (a.remote is b.remote or a.remote == b.remote) and (a.local is b.local or a.local == b.local)
            and a.device == b.device)


@dataclass(frozen=True, slots=True)
class Changes:
    """The targets of a desired state that differ from the last committed build.

    ``positions`` are their indices in ``desired.services`` when the list of
    services is the same as last time (the common case: only weights move),
    else None.
    """

    targets: tuple[ServiceTarget, ...]
    positions: tuple[int, ...] | None
    previous: tuple[ServiceTarget | None, ...] = ()  # the committed target of each (when positions is set)
    reweighted: tuple[bool, ...] = ()  # per target (when positions is set): compare_targets said REWEIGHTED


@dataclass(slots=True)
class Builder:
    """Builds desired :class:`KernelState` objects; the work is proportional to what changed.

    The entries of targets equal to the last committed build are reused as
    they are (the same objects), which lets :func:`diff` skip them. When the
    list of services is unchanged the builder works by position and never
    hashes a :class:`ServiceId` of an unchanged service (hashing an
    ``ipaddress`` network costs about a microsecond). A build is remembered
    only after :meth:`commit` (call it once the state is installed), so a
    refused or failed apply leaves no trace.
    """

    layout: Layout
    touched: tuple[tuple[ServiceEntry | None, ServiceEntry | None], ...] = ()  # (installed, new) of the last build
    reweighted: tuple[tuple[ServiceEntry, ServiceEntry], ...] = ()  # (installed, new): only the buckets may differ
    _targets: tuple[ServiceTarget, ...] = ()
    _entries: tuple[ServiceEntry, ...] = ()
    _pending: tuple[tuple[ServiceTarget, ...], tuple[ServiceEntry, ...]] = ((), ())

    def changes(self, desired: DesiredState) -> Changes:
        """What differs from the last committed build (everything, the first time)."""
        previous, current = self._targets, desired.services
        if len(previous) == len(current):
            positions: list[int] = []
            reweighted: list[bool] = []
            for index, (old, new) in enumerate(zip(previous, current, strict=True)):
                if old is new:
                    continue
                if old.service is not new.service and old.service != new.service:
                    break
                found = compare_targets(old, new)
                if found != SAME:
                    positions.append(index)
                    reweighted.append(found == REWEIGHTED)
            else:
                return Changes(tuple(current[i] for i in positions), tuple(positions),
                               tuple(previous[i] for i in positions), tuple(reweighted))
        by_service = {target.service: target for target in previous}
        return Changes(tuple(target for target in current if (before := by_service.get(target.service)) is None
                             or compare_targets(before, target) != SAME), None)

    def build(self, desired: DesiredState, installed: KernelState, meta: Meta | None = None,
              changes: Changes | None = None, resolve: Callable[[Forwarding], Forwarding] | None = None
              ) -> KernelState:
        """The kernel state for ``desired`` with slots reconciled against ``installed``.

        ``installed`` must be the state of the last committed build (or, after
        :meth:`forget`, anything: every target is then rebuilt). ``changes``
        is :meth:`changes` when the caller computed it already; ``meta``
        replaces the installed bookkeeping (e.g. the sysctl value saved at
        first install); ``resolve`` completes forwardings (see
        :func:`entry_for`); targets are remembered as given, before resolution.
        """
        changes = self.changes(desired) if changes is None else changes
        aligned = changes.positions is not None and len(self._entries) == len(desired.services)
        if aligned and changes.positions is not None:
            olds: list[ServiceEntry | None] = [self._entries[index] for index in changes.positions]
        else:
            olds = [installed.services.get(target.service) for target in changes.targets]
        quick: dict[int, ServiceEntry] = {}  # only the buckets are new: see reweighted_entry
        if aligned and changes.reweighted:
            for index, (target, before, old, only_weights) in enumerate(
                    zip(changes.targets, changes.previous, olds, changes.reweighted, strict=True)):
                # the old entry lists the instances of the previous target in its order (then of the new one)
                if only_weights and old is not None and before is not None and (
                        _built_from(old, before) or _same_keys(old.instances, target.instances)):
                    quick[index] = reweighted_entry(target, old, self.layout)
        slow = [index for index in range(len(olds)) if index not in quick] if quick else list(range(len(olds)))
        slow_targets = [changes.targets[index] for index in slow]
        slow_olds = [olds[index] for index in slow]
        orders, slots = self._slots(slow_targets, slow_olds, installed)
        slow_built = [entry_for(target, target_slots, self.layout, resolve, ordered=ordered,
                                label=old.label if old else None)
                      for target, target_slots, ordered, old in zip(slow_targets, slots, orders, slow_olds,
                                                                    strict=True)]
        structural = not installed.table or not all(
            old is not None and _same_shape(old, new) for old, new in zip(slow_olds, slow_built, strict=True))
        built = dict(zip(slow, slow_built, strict=True))
        built.update(quick)
        self.reweighted = tuple((old, quick[index]) for index, old in enumerate(olds) if index in quick
                                and old is not None)
        slow_pairs = tuple(zip(slow_olds, slow_built, strict=True))
        if aligned and changes.positions is not None:
            entries = list(self._entries)
            services = dict(installed.services)
            for index, position in enumerate(changes.positions):
                entry = built[index]
                entries[position] = services[entry.service] = entry
            self.touched = slow_pairs
        else:
            rebuilt = {entry.service: entry for entry in built.values()}
            entries = [rebuilt.get(target.service) or installed.services[target.service]
                       for target in desired.services]
            services = {entry.service: entry for entry in entries}
            dropped = [old for service, old in installed.services.items() if service not in services]
            self.touched = (*slow_pairs, *((old, None) for old in dropped))
            structural = True
        self._pending = (desired.services, tuple(entries))
        if structural:
            tunnels = frozenset(tunnel for entry in entries for instance in entry.instances
                                if instance.forwarding is not None
                                and (tunnel := tunnel_for(instance.forwarding, entry.service.version)) is not None)
            rules = frozenset((entry.service.version, instance.slot) for entry in entries
                              for instance in entry.instances)
        else:
            tunnels, rules = installed.tunnels, installed.rules
        return KernelState(services=services, tunnels=tunnels, rules=rules, guards=frozenset(FAMILIES), table=True,
                           meta=meta or installed.meta, stale=Stale())

    def _slots(self, targets: Sequence[ServiceTarget], olds: Sequence[ServiceEntry | None], installed: KernelState
               ) -> tuple[list[tuple[InstanceTarget, ...]], list[list[int]]]:
        """Each target's instances in draw order, and their slots: kept when installed, else new.

        When a target lists the same instances as its old entry (only weights
        moved), its order is the draw order already and the slots are taken by
        position, without sorting or hashing any key.
        """
        orders: list[tuple[InstanceTarget, ...]] = []
        result: list[list[int] | None] = []
        pending: list[tuple[int, tuple[InstanceTarget, ...], dict[InstanceKey, int]]] = []
        for index, (target, old) in enumerate(zip(targets, olds, strict=True)):
            previous = old.instances if old is not None else ()
            same = _same_keys(previous, target.instances)
            ordered = target.instances if same else draw_order(target)
            orders.append(ordered)
            if same or (ordered is not target.instances and _same_keys(previous, ordered)):
                result.append([entry.slot for entry in previous])
            else:
                result.append(None)
                pending.append((index, ordered, {entry.key: entry.slot for entry in previous}))
        if pending:
            new_keys = [i.key for _, ordered, known in pending for i in ordered if i.key not in known]
            reserved = [slot for slot, _ in installed.stale.registry] + [slot for _, slot in installed.stale.rules]
            fresh = allocate(new_keys, {}, [*installed.slots().values(), *reserved]) if new_keys else {}
            for index, ordered, known in pending:
                result[index] = [known[i.key] if i.key in known else fresh[i.key] for i in ordered]
        return orders, [slots for slots in result if slots is not None]

    def commit(self) -> None:
        self._targets, self._entries = self._pending
        self._pending = ((), ())

    def forget(self) -> None:
        self._targets, self._entries, self._pending = (), (), ((), ())


def _built_from(entry: ServiceEntry, target: ServiceTarget) -> bool:
    """Whether ``entry`` holds ``target``'s very key objects in ``target``'s order (identity only: cheap)."""
    return len(entry.instances) == len(target.instances) and all(
        a.key is b.key for a, b in zip(entry.instances, target.instances, strict=True))


def _same_keys(previous: Sequence[InstanceEntry], instances: Sequence[InstanceTarget]) -> bool:
    """Whether ``instances`` are ``previous``'s instances in the same order (within one service)."""
    return len(previous) == len(instances) and all(
        a.key is b.key or (a.key.path_id == b.key.path_id and a.key.binding == b.key.binding)
        for a, b in zip(previous, instances, strict=True))


def _same_shape(old: ServiceEntry, new: ServiceEntry) -> bool:
    """Whether the rules and tunnels of both are the same: same slots (one slot is one key), same forwarding."""
    return len(old.instances) == len(new.instances) and all(
        a.slot == b.slot and same_forwarding(a.forwarding, b.forwarding)
        for a, b in zip(old.instances, new.instances, strict=True))


# -- the difference ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything that changes from ``installed`` to ``desired``, grouped by where it is applied."""

    installed: KernelState
    desired: KernelState
    create_table: bool = False
    add_services: tuple[ServiceEntry, ...] = ()
    change_services: tuple[ServiceEntry, ...] = ()
    remove_services: tuple[ServiceEntry, ...] = ()
    register: tuple[InstanceEntry, ...] = ()
    unregister: tuple[int, ...] = ()  # slots whose registry element goes
    write_meta: bool = False
    remove_stale_chains: tuple[str, ...] = ()
    remove_stale_dispatch: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = ()
    routes: tuple[InstanceEntry, ...] = ()  # ip route replace
    add_rules: tuple[tuple[int, int], ...] = ()
    remove_rules: tuple[tuple[int, int], ...] = ()
    add_guards: tuple[int, ...] = ()
    delete_routes: tuple[InstanceEntry, ...] = ()  # routes of removed instances (ip route del)
    flush_tables: tuple[tuple[int, int], ...] = ()  # (family, slot) of stale slots whose prefix is unknown
    add_tunnels: tuple[Tunnel, ...] = ()
    remove_tunnels: tuple[Tunnel, ...] = ()
    evict_slots: tuple[int, ...] = ()  # conntrack and affinity entries of removed instances

    @property
    def nft_changes(self) -> bool:
        return bool(self.create_table or self.add_services or self.change_services or self.remove_services
                    or self.register or self.unregister or self.write_meta or self.remove_stale_chains
                    or self.remove_stale_dispatch)

    @property
    def route_changes(self) -> bool:
        return bool(self.routes or self.add_rules or self.remove_rules or self.add_guards or self.flush_tables
                    or self.delete_routes
                    or self.add_tunnels or self.remove_tunnels)

    @property
    def empty(self) -> bool:
        return not (self.nft_changes or self.route_changes or self.evict_slots)

    def details(self) -> dict[str, int]:
        """Counts for :class:`~dyncast_bgp.dataplane.desired.ApplyResult` and logs."""
        counts = {
            "services_added": len(self.add_services), "services_changed": len(self.change_services),
            "services_removed": len(self.remove_services), "instances_added": len(self.add_rules),
            "instances_removed": len(self.evict_slots), "routes": len(self.routes),
            "tunnels_added": len(self.add_tunnels), "tunnels_removed": len(self.remove_tunnels),
            "stale_removed": len(self.remove_stale_chains) + len(self.remove_stale_dispatch)
            + len(self.installed.stale.registry),
        }
        return {name: value for name, value in counts.items() if value}

    def summary(self) -> str:
        parts = [f"{name.replace('_', ' ')} {value}" for name, value in self.details().items()]
        return ", ".join(parts) if parts else "no change"


def diff(installed: KernelState, desired: KernelState,
         touched: Iterable[tuple[ServiceEntry | None, ServiceEntry | None]] | None = None,
         reweighted: Sequence[tuple[ServiceEntry, ServiceEntry]] = ()) -> Plan:
    """The plan turning ``installed`` into ``desired`` (both for one :class:`Layout`).

    ``touched``: the only ``(installed, desired)`` entry pairs that may differ
    (:attr:`Builder.touched`); None compares all services. Pairs of one
    object are skipped. An instance key belongs to one service, so every
    instance-level change is found within its service. ``reweighted``:
    further pairs (:attr:`Builder.reweighted`) that hold the same instances
    (keys, slots, forwarding, names) in the same order, so that only their
    chains can differ (by buckets or affinity settings).
    """
    if touched is None:
        old_services, new_services = installed.services, desired.services
        touched = [(old_services.get(sid), new_services.get(sid)) for sid in set(new_services) | set(old_services)]
    add: list[ServiceEntry] = []
    change: list[ServiceEntry] = []
    remove: list[ServiceEntry] = []
    delta = _Delta()
    for old, new in touched:
        if old is new:
            continue
        if old is None and new is not None:
            add.append(new)
        elif new is None and old is not None:
            remove.append(old)
        elif old is not None and new is not None and not old.same_chain(new):
            change.append(new)
        delta.compare(old, new)
    for old, new in reweighted:
        if old is not new and not old.same_buckets(new):
            change.append(new)
    stale_slots = {slot for slot, _ in installed.stale.registry}
    delta.unregister |= stale_slots
    delta.remove_rules |= installed.stale.rules
    kept = delta.kept_slots
    if reweighted and (delta.evict or stale_slots or installed.stale.rules):  # only needed to subtract from these
        kept.update(entry.slot for _, new in reweighted for entry in new.instances)
    flush = installed.stale.rules | {(family, slot) for slot in stale_slots for family in FAMILIES}
    evict = (delta.evict | stale_slots | {slot for _, slot in installed.stale.rules}) - kept
    tunnels_changed = desired.tunnels is not installed.tunnels
    return Plan(
        installed=installed, desired=desired, create_table=desired.table and not installed.table,
        add_services=_sorted(add), change_services=_sorted(change), remove_services=_sorted(remove),
        register=tuple(sorted(delta.register, key=lambda entry: entry.key.sort_key)),
        unregister=tuple(sorted(delta.unregister)),
        write_meta=desired.table and (not installed.table or installed.meta != desired.meta),
        remove_stale_chains=tuple(sorted(installed.stale.chains)),
        remove_stale_dispatch=tuple(sorted(installed.stale.dispatch, key=lambda item: (item[0].version, str(item)))),
        routes=tuple(sorted(delta.routes, key=lambda entry: entry.key.sort_key)),
        add_rules=tuple(sorted(delta.add_rules)), remove_rules=tuple(sorted(delta.remove_rules)),
        add_guards=tuple(sorted(desired.guards - installed.guards)),
        delete_routes=tuple(sorted((entry for entry in delta.gone if entry.slot not in kept), key=lambda e: e.slot)),
        flush_tables=tuple(sorted(pair for pair in flush if pair[1] not in kept)),
        add_tunnels=tuple(sorted(desired.tunnels - installed.tunnels, key=lambda t: t.name)) if tunnels_changed else (),
        remove_tunnels=tuple(sorted(installed.tunnels - desired.tunnels, key=lambda t: t.name))
        if tunnels_changed else (),
        evict_slots=tuple(sorted(evict)),
    )


@dataclass(slots=True)
class _Delta:
    """Instance-level differences, collected service by service."""

    register: list[InstanceEntry] = field(default_factory=list)
    unregister: set[int] = field(default_factory=set)
    routes: list[InstanceEntry] = field(default_factory=list)
    add_rules: set[tuple[int, int]] = field(default_factory=set)
    remove_rules: set[tuple[int, int]] = field(default_factory=set)
    gone: list[InstanceEntry] = field(default_factory=list)
    evict: set[int] = field(default_factory=set)
    kept_slots: set[int] = field(default_factory=set)

    def compare(self, old: ServiceEntry | None, new: ServiceEntry | None) -> None:
        if old is not None and new is not None and len(old.instances) == len(new.instances) and all(
                a.slot == b.slot for a, b in zip(old.instances, new.instances, strict=True)):
            self._same_instances(old, new)  # one slot is one key: the same instances, maybe re-weighted
            return
        before = {entry.key: entry for entry in old.instances} if old is not None else {}
        after = {entry.key: entry for entry in new.instances} if new is not None else {}
        for key, entry in after.items():
            previous = before.get(key)
            self.kept_slots.add(entry.slot)
            if previous is None or previous.name != entry.name:
                self.register.append(entry)
                if previous is not None:
                    self.unregister.add(previous.slot)
            if previous is None or previous.forwarding != entry.forwarding:
                self.routes.append(entry)
            if previous is None:
                self.add_rules.add((entry.family, entry.slot))
        for key, entry in before.items():
            if key not in after:
                self.unregister.add(entry.slot)
                self.remove_rules.add((entry.family, entry.slot))
                self.gone.append(entry)
                self.evict.add(entry.slot)


    def _same_instances(self, old: ServiceEntry, new: ServiceEntry) -> None:
        for previous, entry in zip(old.instances, new.instances, strict=True):
            self.kept_slots.add(entry.slot)
            if previous.name != entry.name:
                self.register.append(entry)
                self.unregister.add(previous.slot)
            if not same_forwarding(previous.forwarding, entry.forwarding):
                self.routes.append(entry)


def _sorted(entries: Iterable[ServiceEntry]) -> tuple[ServiceEntry, ...]:
    return tuple(sorted(entries, key=lambda entry: entry.service.sort_key))


def empty_state(meta: Meta | None = None) -> KernelState:
    return KernelState(meta=meta or Meta())


def clean(state: KernelState) -> KernelState:
    """``state`` without its stale objects: what a reconcile keeps (``diff(state, clean(state))`` removes the rest)."""
    slots = {(entry.family, entry.slot) for entry in state.instances()}
    return KernelState(services=state.services, tunnels=state.tunnels, rules=frozenset(state.rules & slots),
                       guards=state.guards, table=state.table, meta=state.meta, stale=Stale())
