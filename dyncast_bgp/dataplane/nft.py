"""The nftables ruleset as text for ``nft -f`` (pure).

Everything lives in one table, ``inet dyncast``, that only this project
writes (names prefixed ``dc_``)::

    chain dc_pre  (hook prerouting, priority mangle: after conntrack, before routing)
      ct mark in our range   -> meta mark set ct mark, done      every packet of a steered flow
      ct state != new        -> done
      ip daddr  vmap @dc_host4 / @dc_net4   -> goto dc_s_<D-SID>   new flow to a D-SID
      ip6 daddr vmap @dc_host6 / @dc_net6

    chain dc_s_203_0_113_10_32   (one per service)
      counter comment "dc service <D-SID> <flow|client> <timeout ms>"
      [client] ct mark set ip saddr . ip daddr map @dc_aff4  ct mark @dc_instances
               -> meta mark set ct mark, refresh the entry, done
      meta mark set numgen random mod 10000                  the draw (meta mark is scratch)
      meta mark < 7000 -> meta mark set M1 ct mark set M1 [update @dc_aff4], done
      meta mark set M2 ct mark set M2 [update @dc_aff4]      the last weighted instance takes the rest

    with a client-prefix canary (an audience), before the draw:
      ip saddr { 198.51.100.0/24 } meta mark set numgen random mod 10000     the audience's own draw
      ip saddr { ... } meta mark < 1000 -> meta mark set M3 ct mark set M3, done
      ip saddr { ... } -> meta mark set M1 ct mark set M1, done

A weight change rewrites only the service's chain (``flush chain`` + its
rules) in one transaction: atomic, no other object touched, affinity
entries and conntrack kept. Weights live in rules, not in one big interval
map, because deleting elements of a large concatenated interval map costs
milliseconds per element on this kernel (docs/decisions/0002). The registry
set ``dc_instances`` holds one element per instance (its mark, commented with
its key) so that a restarted backend can read back every allocation; its
element for slot 0 carries the schema version and the saved sysctl.

``nft`` 1.0.6 sends all elements of one statement in one netlink attribute
(at most 64 KiB): element lists are split into statements of
:attr:`Layout.nft_chunk` elements.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from dyncast_bgp.dataplane.desired import Affinity
from dyncast_bgp.dataplane.layout import FAMILY, MARK_MASK, META_SLOT, SCHEMA, TABLE_NAME, Layout
from dyncast_bgp.dataplane.plan import Plan
from dyncast_bgp.dataplane.state import InstanceEntry, KernelState, Meta, ServiceEntry

TABLE = f"{FAMILY} {TABLE_NAME}"
REGISTRY = "dc_instances"
BASE_CHAIN = "dc_pre"
COMMENT_MAX = 128  # nft refuses longer comments
TABLE_COMMENT = "dyncast-bgp dataplane: managed by dyncast, do not edit"
_FAMILY = {4: ("ip", "ipv4_addr"), 6: ("ip6", "ipv6_addr")}


def dispatch_map(entry: ServiceEntry) -> str:
    kind = "host" if entry.is_host else "net"
    return f"dc_{kind}{entry.service.version}"


def affinity_map(version: int) -> str:
    return f"dc_aff{version}"


def dispatch_key(entry: ServiceEntry) -> str:
    return entry.label.partition("/")[0] if entry.is_host else entry.label


# -- comments (read back by readback.py) ------------------------------------------------------------


def registry_comment(entry: InstanceEntry) -> str:
    """``<key> [<name>]``: the key always fits; the name only when the whole comment does."""
    base = str(entry.key)
    if entry.name and len(base) + 1 + len(entry.name) <= COMMENT_MAX:
        return f"{base} {entry.name}"
    return base


def meta_comment(meta: Meta) -> str:
    saved = "-" if meta.saved_src_valid_mark is None else str(meta.saved_src_valid_mark)
    return f"dyncast-bgp schema={SCHEMA} src_valid_mark={saved}"


def header_comment(entry: ServiceEntry) -> str:
    return f"dc service {entry.label} {entry.affinity} {entry.timeout_ms}"  # a StrEnum formats as its value


# -- rules -------------------------------------------------------------------------------------------


def base_rules(layout: Layout) -> list[str]:
    rules = [f"ct mark and {MARK_MASK:#010x} == {layout.mark_base:#010x} meta mark set ct mark return",
             "ct state != new return"]
    for version in (4, 6):
        proto = _FAMILY[version][0]
        rules += [f"{proto} daddr vmap @dc_host{version}", f"{proto} daddr vmap @dc_net{version}"]
    return rules


def service_rules(entry: ServiceEntry, layout: Layout) -> list[str]:
    """The rules of one service chain, in order.

    Runs once per changed service (10,000 times for a change of every
    service), hence written out flat: no per-rule helper calls.
    """
    rules = [f'counter comment "{header_comment(entry)}"']
    version = entry.service.prefix.version
    remember = ""
    if entry.affinity is Affinity.CLIENT:
        proto, amap = _FAMILY[version][0], affinity_map(version)
        key = f"{proto} saddr . {proto} daddr"
        remember = f" update @{amap} {{ {key} timeout {entry.timeout_ms}ms : "
        rules.append(f"ct mark set {key} map @{amap} ct mark @{REGISTRY} counter meta mark set ct mark"
                     f"{remember}ct mark }} return comment \"dc affinity\"")
    if entry.audience is not None:
        rules += audience_rules(entry, layout, remember)
    weighted = [instance for instance in entry.instances if instance.buckets]
    if not weighted:
        return rules
    rules.append(f'meta mark set numgen random mod {layout.resolution} comment "dc draw"')
    base, low, last = layout.mark_base, 0, weighted[-1]
    for instance in weighted:
        mark = f"{base | instance.slot:#010x}"
        high = low + instance.buckets
        update = f"{remember}{mark} }}" if remember else ""
        comment = f'comment "dc pick {mark} {low}-{high - 1}"'
        if instance is last:
            rules.append(f"counter meta mark set {mark} ct mark set {mark}{update} {comment}")
        else:
            rules.append(f"meta mark < {high} counter meta mark set {mark} ct mark set {mark}{update} return {comment}")
        low = high
    return rules


def audience_rules(entry: ServiceEntry, layout: Layout, remember: str) -> list[str]:
    """A client-prefix canary: new flows from the audience's clients take their own draw, and return."""
    audience = entry.audience
    assert audience is not None
    weighted = [(instance, buckets) for instance, buckets in zip(entry.instances, audience.buckets, strict=True)
                if buckets]
    if not weighted:
        return []
    match = f"{_FAMILY[entry.service.prefix.version][0]} saddr {{ {', '.join(audience.clients)} }}"
    rules = [f'{match} meta mark set numgen random mod {layout.resolution} comment "dc audience draw"']
    base, low, last = layout.mark_base, 0, weighted[-1][0]
    for instance, buckets in weighted:
        mark = f"{base | instance.slot:#010x}"
        high = low + buckets
        update = f"{remember}{mark} }}" if remember else ""
        limit = "" if instance is last else f" meta mark < {high}"
        rules.append(f"{match}{limit} counter meta mark set {mark} ct mark set {mark}{update} return "
                     f'comment "dc audience pick {mark} {low}-{high - 1}"')
        low = high
    return rules


# -- whole table --------------------------------------------------------------------------------------


def render_table(state: KernelState, layout: Layout) -> str:
    """The complete ruleset for ``state``: a table block, then its elements in chunks."""
    lines = [f"table {TABLE} {{", f'\tcomment "{TABLE_COMMENT}"', f"\tset {REGISTRY} {{", "\t\ttype mark", "\t}"]
    for version in (4, 6):
        addr = _FAMILY[version][1]
        lines += [f"\tmap dc_host{version} {{", f"\t\ttype {addr} : verdict", "\t}",
                  f"\tmap dc_net{version} {{", f"\t\ttype {addr} : verdict", "\t\tflags interval", "\t}",
                  f"\tmap {affinity_map(version)} {{", f"\t\ttype {addr} . {addr} : mark",
                  f"\t\tsize {layout.affinity_size}", "\t\tflags dynamic,timeout", "\t}"]
    lines += [f"\tchain {BASE_CHAIN} {{", "\t\ttype filter hook prerouting priority mangle; policy accept;",
              *(f"\t\t{rule}" for rule in base_rules(layout)), "\t}"]
    for entry in sorted(state.services.values(), key=lambda e: e.service):
        lines += [f"\tchain {entry.chain} {{",
                  *(f"\t\t{rule}" for rule in service_rules(entry, layout)), "\t}"]
    lines.append("}")
    lines += _registry_elements(state.meta, list(state.instances()), layout)
    for name, entries in _by_dispatch_map(state.services.values()).items():
        lines += add_elements(name, [f"{dispatch_key(e)} : goto {e.chain}" for e in entries],
                              layout.nft_chunk)
    return "\n".join(lines) + "\n"


def _registry_elements(meta: Meta | None, instances: Sequence[InstanceEntry], layout: Layout) -> list[str]:
    items = [] if meta is None else [f'{layout.mark(META_SLOT):#010x} comment "{meta_comment(meta)}"']
    items += [f'{layout.mark(i.slot):#010x} comment "{registry_comment(i)}"' for i in sorted(instances, key=_slot)]
    return add_elements(REGISTRY, items, layout.nft_chunk)


def _slot(entry: InstanceEntry) -> int:
    return entry.slot


def _by_dispatch_map(entries: Iterable[ServiceEntry]) -> dict[str, list[ServiceEntry]]:
    grouped: dict[str, list[ServiceEntry]] = {}
    for entry in sorted(entries, key=lambda e: e.service):
        grouped.setdefault(dispatch_map(entry), []).append(entry)
    return grouped


def add_elements(set_name: str, items: Sequence[str], chunk: int, *, verb: str = "add") -> list[str]:
    """``add element`` (or ``delete``) statements of at most ``chunk`` elements each."""
    return [f"{verb} element {TABLE} {set_name} {{ {', '.join(items[i:i + chunk])} }}"
            for i in range(0, len(items), chunk)]


# -- one transaction from a plan ----------------------------------------------------------------------


def render_transaction(plan: Plan, layout: Layout) -> str:
    """The ``nft -f`` text applying the nft part of ``plan`` atomically ("" when there is none)."""
    if not plan.nft_changes:
        return ""
    if plan.create_table:
        return render_table(plan.desired, layout)
    lines: list[str] = []
    for prefix, _chain in plan.remove_stale_dispatch:
        kind = "host" if prefix.prefixlen == prefix.max_prefixlen else "net"
        key = str(prefix.network_address) if kind == "host" else str(prefix)
        lines.append(f"delete element {TABLE} dc_{kind}{prefix.version} {{ {key} }}")
    for name, entries in _by_dispatch_map(plan.remove_services).items():
        lines += add_elements(name, [dispatch_key(e) for e in entries], layout.nft_chunk, verb="delete")
    lines += [f"delete chain {TABLE} {name}" for name in plan.remove_stale_chains]
    lines += [f"delete chain {TABLE} {entry.chain}" for entry in plan.remove_services]
    marks = [f"{layout.mark(slot):#010x}" for slot in plan.unregister]
    if plan.write_meta and plan.installed.table:
        marks.insert(0, f"{layout.mark(META_SLOT):#010x}")
    lines += add_elements(REGISTRY, marks, layout.nft_chunk, verb="delete")
    lines += _registry_elements(plan.desired.meta if plan.write_meta else None, plan.register, layout)
    for entry in plan.add_services:
        chain = entry.chain
        lines.append(f"add chain {TABLE} {chain}")
        lines += [f"add rule {TABLE} {chain} {rule}" for rule in service_rules(entry, layout)]
    for name, entries in _by_dispatch_map(plan.add_services).items():
        lines += add_elements(name, [f"{dispatch_key(e)} : goto {e.chain}" for e in entries],
                              layout.nft_chunk)
    for entry in plan.change_services:  # one string per chain: its flush and its rules
        chain = entry.chain
        head = f"\nadd rule {TABLE} {chain} "
        lines.append(f"flush chain {TABLE} {chain}{head}{head.join(service_rules(entry, layout))}")
    return "\n".join(lines) + "\n"


def render_affinity_purge(version: int, keys: Sequence[str], layout: Layout) -> str:
    """Delete client-affinity entries (``keys`` as ``saddr . daddr`` text) in one transaction."""
    return "\n".join(add_elements(affinity_map(version), list(keys), layout.nft_chunk, verb="delete")) + "\n"


def render_cleanup() -> str:
    return f"delete table {TABLE}\n"
