"""Read what the dataplane installed back from the kernel's own listings (pure parsers).

A restarted backend adopts the kernel state instead of rebuilding it:

* ``nft -j list table inet dyncast``: the registry set gives every instance's
  slot (element = mark, comment = instance key and name), the slot-0 element
  the schema and saved sysctl; each service chain's rule comments give the
  service's affinity, timeout and every instance's bucket range; the
  dispatch maps which D-SID enters which chain.
* ``ip -j rule show`` (IPv4 and IPv6): the per-instance rules and guards,
  recognised by priority, mark range and table range.
* ``ip -j -d link show``: tunnel devices named ``dc<10 hex digits>`` of a
  tunnel kind.

Routes are not read (the first apply re-asserts them with ``ip route
replace``, which changes nothing when they are right), so ``forwarding`` is
None in read-back instances. Anything of ours that belongs to nothing
consistent (a chain no D-SID enters, a registry element of a service that
has no chain, half a guard pair) is returned as :class:`Stale`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dyncast_bgp.dataplane.desired import Affinity
from dyncast_bgp.dataplane.layout import MARK_MASK, META_SLOT, SCHEMA, Layout, is_service_chain, is_tunnel_name
from dyncast_bgp.dataplane.state import (
    AudienceEntry,
    InstanceEntry,
    KernelState,
    Meta,
    ServiceEntry,
    Stale,
    Tunnel,
    canonical_clients,
)
from dyncast_bgp.model import InstanceKey, IPAddress, ServiceId

TUNNEL_KINDS = frozenset({"ipip", "sit", "gre", "ip6tnl", "ip6gre"})
_HEADER = re.compile(r"^dc service (\S+) (flow|client) (\d+)$")
_PICK = re.compile(r"^dc pick (0x[0-9a-f]+) (\d+)-(\d+)$")
_AUDIENCE_PICK = re.compile(r"^dc audience pick (0x[0-9a-f]+) (\d+)-(\d+)$")
_AUDIENCE_DRAW = "dc audience draw"
_META = re.compile(r"^dyncast-bgp schema=(\d+) src_valid_mark=(-|\d+)(?: [a-z_]+=\S*)*$")  # later fields: ignored


class ReadbackError(ValueError):
    """The kernel holds something under our names that this version cannot interpret."""


@dataclass(slots=True)
class _Chain:
    header: tuple[ServiceId, Affinity, int] | None = None
    picks: dict[int, int] = field(default_factory=dict)  # slot -> buckets
    clients: tuple[str, ...] | None = None  # a client-prefix canary's clients (its draw rule)
    audience: dict[int, int] = field(default_factory=dict)  # slot -> buckets of the audience's draw


@dataclass(frozen=True, slots=True)
class NftReadback:
    """The parts of ``inet dyncast`` a backend needs, straight from ``nft -j``."""

    meta: Meta | None
    registry: Mapping[int, str]  # slot -> comment
    chains: Mapping[str, tuple[tuple[ServiceId, Affinity, int] | None, Mapping[int, int]]]  # picks by slot
    dispatch: Mapping[ipaddress.IPv4Network | ipaddress.IPv6Network, str]  # D-SID -> chain
    audiences: Mapping[str, tuple[tuple[str, ...], Mapping[int, int]]] = field(default_factory=dict)
    """Chain -> its client-prefix canary: the clients and the audience's buckets by slot."""


# -- nft -------------------------------------------------------------------------------------------


def parse_nft(text: str, layout: Layout) -> NftReadback:
    """Parse ``nft -j list table inet dyncast``."""
    try:
        objects = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ReadbackError(f"nft -j output not understood: {exc}") from None
    meta: Meta | None = None
    registry: dict[int, str] = {}
    chains: dict[str, _Chain] = {}
    dispatch: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for item in objects:
        if "set" in item and item["set"].get("name") == "dc_instances":
            meta = _registry(item["set"].get("elem", []), layout, registry) or meta
        elif "map" in item and str(item["map"].get("name", "")).startswith(("dc_host", "dc_net")):
            dispatch.update(_dispatch(item["map"].get("elem", [])))
        elif "chain" in item and is_service_chain(str(item["chain"].get("name", ""))):
            chains.setdefault(item["chain"]["name"], _Chain())
        elif "rule" in item and is_service_chain(str(item["rule"].get("chain", ""))):
            _rule(chains.setdefault(item["rule"]["chain"], _Chain()), item["rule"], layout)
    return NftReadback(meta, registry, {name: (c.header, c.picks) for name, c in chains.items()}, dispatch,
                       {name: (c.clients, c.audience) for name, c in chains.items() if c.clients is not None})


def _registry(elements: Sequence[Any], layout: Layout, out: dict[int, str]) -> Meta | None:
    meta = None
    for element in elements:
        value, comment = _element(element)
        if not isinstance(value, int) or value & MARK_MASK != layout.mark_base:
            continue
        slot = value & ~MARK_MASK
        if slot == META_SLOT:
            meta = parse_meta(comment)
        else:
            out[slot] = comment
    return meta


def _element(element: Any) -> tuple[Any, str]:
    if isinstance(element, dict) and "elem" in element:
        inner = element["elem"]
        return inner.get("val"), str(inner.get("comment", ""))
    return element, ""


def parse_meta(comment: str) -> Meta:
    match = _META.match(comment)
    if not match:
        raise ReadbackError(f"table inet dyncast has no dyncast-bgp bookkeeping element (found {comment!r})")
    schema = int(match.group(1))
    if schema != SCHEMA:
        raise ReadbackError(f"table inet dyncast has schema {schema}, this version reads {SCHEMA}: "
                            "run `dyncast dataplane cleanup` with the version that installed it")
    saved = None if match.group(2) == "-" else int(match.group(2))
    return Meta(schema, saved)


def _dispatch(elements: Sequence[Any]) -> dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str]:
    out: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, str] = {}
    for element in elements:
        if not (isinstance(element, list) and len(element) == 2):
            continue
        key, verdict = element
        key = key.get("elem", {}).get("val", key) if isinstance(key, dict) and "elem" in key else key
        if isinstance(key, dict) and "prefix" in key:
            net = ipaddress.ip_network(f"{key['prefix']['addr']}/{key['prefix']['len']}")
        elif isinstance(key, str):
            net = ipaddress.ip_network(key)
        else:
            continue
        jump = (verdict.get("goto") or verdict.get("jump")) if isinstance(verdict, dict) else None
        target = jump.get("target") if isinstance(jump, dict) else None
        if isinstance(target, str):
            out[net] = target
    return out


def _rule(chain: _Chain, rule: Mapping[str, Any], layout: Layout) -> None:
    comment = str(rule.get("comment", ""))
    if (match := _HEADER.match(comment)) is not None:
        chain.header = (ServiceId(ipaddress.ip_network(match.group(1))), Affinity(match.group(2)),
                        int(match.group(3)))
    elif (match := _PICK.match(comment)) is not None:
        slot, low, high = layout.slot_of_mark(int(match.group(1), 16)), int(match.group(2)), int(match.group(3))
        if slot is not None and high >= low:
            chain.picks[slot] = high - low + 1
    elif (match := _AUDIENCE_PICK.match(comment)) is not None:
        slot, low, high = layout.slot_of_mark(int(match.group(1), 16)), int(match.group(2)), int(match.group(3))
        if slot is not None and high >= low:
            chain.audience[slot] = high - low + 1
    elif comment == _AUDIENCE_DRAW:
        chain.clients = _source_prefixes(rule.get("expr"))


def _source_prefixes(expr: Any) -> tuple[str, ...]:
    """The ``ip saddr { ... }`` match of an audience rule, as canonical prefixes (merged and sorted)."""
    for statement in expr if isinstance(expr, list) else ():
        match = statement.get("match") if isinstance(statement, dict) else None
        left = match.get("left") if isinstance(match, dict) else None
        if not (isinstance(left, dict) and (left.get("payload") or {}).get("field") == "saddr"):
            continue
        right = match.get("right") if isinstance(match, dict) else None
        items = right["set"] if isinstance(right, dict) and "set" in right else [right]
        nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in items:
            try:
                if isinstance(item, dict) and "prefix" in item:
                    nets.append(ipaddress.ip_network(f"{item['prefix']['addr']}/{item['prefix']['len']}"))
                elif isinstance(item, dict) and "range" in item:
                    low, high = (ipaddress.ip_address(x) for x in item["range"])
                    nets.extend(ipaddress.summarize_address_range(low, high))
                elif isinstance(item, str):
                    nets.append(ipaddress.ip_network(item))
                else:
                    raise ValueError(f"{item!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise ReadbackError(f"audience rule: client {item!r} not understood: {exc}") from None
        return canonical_clients(nets)
    raise ReadbackError(f"audience rule without an ip saddr match: {expr!r}")


def parse_key(text: str) -> InstanceKey:
    """The inverse of ``str(InstanceKey)``: ``203.0.113.10/32@192.0.2.1#7``."""
    service_text, _, rest = text.partition("@")
    binding_text, _, path = rest.partition("#")
    try:
        return InstanceKey(ServiceId(ipaddress.ip_network(service_text)), ipaddress.ip_address(binding_text),
                           int(path) if path else 0)
    except ValueError as exc:
        raise ReadbackError(f"registry comment {text!r} is not an instance key: {exc}") from None


# -- ip rule / ip link --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuleReadback:
    slots: frozenset[int]
    nop: bool
    goto: bool


def parse_rules(text: str, layout: Layout) -> RuleReadback:
    """Our per-instance rules and guard halves in ``ip -j rule show`` of one family."""
    slots: set[int] = set()
    nop = goto = False
    for rule in _json_list(text, "ip -j rule show"):
        priority = rule.get("priority")
        if priority == layout.end_priority and "nop" in rule:
            nop = True
        elif priority == layout.guard_priority and _is_guard(rule, layout):
            goto = True
        elif priority == layout.rule_priority:
            slot = _instance_rule_slot(rule, layout)
            if slot is not None:
                slots.add(slot)
    return RuleReadback(frozenset(slots), nop, goto)


def _is_guard(rule: Mapping[str, Any], layout: Layout) -> bool:
    return ("not" in rule and _int(rule.get("fwmark")) == layout.mark_base
            and _int(rule.get("fwmask")) == MARK_MASK and rule.get("goto") == layout.end_priority)


def _instance_rule_slot(rule: Mapping[str, Any], layout: Layout) -> int | None:
    mark, mask, table = _int(rule.get("fwmark")), _int(rule.get("fwmask", "0xffffffff")), _int(rule.get("table"))
    if mark is None or table is None or mask != 0xFFFFFFFF or "not" in rule or ("src" in rule and rule["src"] != "all"):
        return None
    slot = layout.slot_of_mark(mark)
    return slot if slot is not None and layout.slot_of_table(table) == slot else None


def _int(value: Any) -> int | None:
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 0)
        except ValueError:
            return None
    return None


def parse_tunnels(text: str) -> frozenset[Tunnel]:
    """Our tunnel devices in ``ip -j -d link show``."""
    tunnels = set()
    for link in _json_list(text, "ip -j -d link show"):
        name, info = str(link.get("ifname", "")), link.get("linkinfo") or {}
        kind = info.get("info_kind")
        if is_tunnel_name(name) and kind in TUNNEL_KINDS:
            data = info.get("info_data") or {}
            tunnels.add(Tunnel(name, str(kind), _address(data.get("remote")), _address(data.get("local")),
                               link.get("link") if isinstance(link.get("link"), str) else None))
    return frozenset(tunnels)


def _address(value: Any) -> IPAddress | None:
    try:
        return ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _json_list(text: str, what: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text or "[]")
    except ValueError as exc:
        raise ReadbackError(f"{what} output not understood: {exc}") from None
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


# -- assembling ---------------------------------------------------------------------------------------


def assemble(nft: NftReadback | None, rules: Mapping[int, RuleReadback], tunnels: Iterable[Tunnel],
             layout: Layout) -> KernelState:
    """The :class:`KernelState` these listings describe; inconsistent parts of ours go to ``stale``."""
    guards = frozenset(family for family, r in rules.items() if r.nop and r.goto)
    stale_guards = frozenset((family, kind) for family, r in rules.items() if r.nop != r.goto
                             for kind, present in (("nop", r.nop), ("goto", r.goto)) if present)
    rule_pairs = frozenset((family, slot) for family, r in rules.items() for slot in r.slots)
    if nft is None:
        return KernelState(tunnels=frozenset(tunnels), guards=guards,
                           stale=Stale(guards=stale_guards, rules=rule_pairs))
    if nft.meta is None:
        raise ReadbackError("table inet dyncast exists but was not created by dyncast-bgp (no bookkeeping element)")
    services, used_chains, used_slots = _services(nft)
    explained = {(entry.family, entry.slot) for service in services.values() for entry in service.instances}
    stale = Stale(
        chains=frozenset(name for name in nft.chains if name not in used_chains),
        dispatch=frozenset((net, chain) for net, chain in nft.dispatch.items() if chain not in used_chains),
        registry=frozenset((slot, comment) for slot, comment in nft.registry.items() if slot not in used_slots),
        guards=stale_guards, rules=rule_pairs - explained)
    return KernelState(services=services, tunnels=frozenset(tunnels), rules=rule_pairs & explained, guards=guards,
                       table=True, meta=nft.meta, stale=stale)


def _services(nft: NftReadback) -> tuple[dict[ServiceId, ServiceEntry], set[str], set[int]]:
    """Services whose dispatch element, chain and header agree, with their registered instances."""
    by_service: dict[ServiceId, list[tuple[int, InstanceKey, str | None]]] = {}
    for slot, comment in nft.registry.items():
        key_text, _, name = comment.partition(" ")
        key = parse_key(key_text)
        by_service.setdefault(key.service, []).append((slot, key, name or None))
    services: dict[ServiceId, ServiceEntry] = {}
    used_chains: set[str] = set()
    used_slots: set[int] = set()
    for net, chain in nft.dispatch.items():
        header, picks = nft.chains.get(chain, (None, {}))
        if header is None or header[0].prefix != net:
            continue
        service, affinity, timeout = header
        members = sorted(by_service.get(service, []), key=lambda item: item[1])
        instances = tuple(InstanceEntry(key, slot, picks.get(slot, 0), None, name) for slot, key, name in members)
        audience = None
        if chain in nft.audiences:
            clients, buckets = nft.audiences[chain]
            audience = AudienceEntry(clients, tuple(buckets.get(slot, 0) for slot, _, _ in members))
        services[service] = ServiceEntry(service, affinity, timeout, instances, str(service), audience)
        used_chains.add(chain)
        used_slots.update(slot for slot, _, _ in members)
    return services, used_chains, used_slots

