"""Policy routing and tunnels as ``ip -batch`` lines (pure).

Per instance (slot ``s``), in its service's address family::

    ip route replace <D-SID> via <next hop> [dev D]                       table T(s)   direct
    ip route replace <D-SID> dev dc<hash>                                 table T(s)   ipip / gre
    ip route replace <D-SID> encap seg6 mode encap segs <SID> dev D      table T(s)   srv6
    ip rule add priority P fwmark M(s) lookup T(s)

and once per family the guard pair, so that unmarked packets skip the
per-instance rules (one comparison instead of one per instance)::

    ip rule add priority P+1 nop
    ip rule add priority P-1 not fwmark mark_base/0xffff0000 goto P+1

A table holds only its D-SID: a marked packet to any other destination (a
reply toward the client carries the flow's mark too) finds no route there
and falls through to the main table.

Lines are grouped into batches because ``ip -batch`` lines cannot carry
``-6``: :attr:`Batches.links` (tunnel devices, first), :attr:`Batches.v4`
(IPv4 routes and rules) and :attr:`Batches.v6` (run as ``ip -6 -batch``).
:func:`render_setup` adds before the nftables transaction (so a new mark
has its route before the first flow gets it), :func:`render_teardown`
removes after it.

Reverse-path filtering: replies come from the D-SID, which the main table
does not route. With ``net.ipv4.conf.all.src_valid_mark=1`` (set by the
backend) the kernel checks the source with the packet's mark, which the
reply carries from its conntrack entry, so the check finds the instance's
table: strict mode (``rp_filter=1``) passes when replies return on the
interface the route leaves by (direct and srv6 routes name the underlay
device); tunnel devices need loose mode (``rp_filter=2``) on the interface
replies arrive on unless they come back through the tunnel.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dyncast_bgp.dataplane.desired import Encap, Forwarding
from dyncast_bgp.dataplane.layout import MARK_MASK, Layout
from dyncast_bgp.dataplane.plan import Plan
from dyncast_bgp.dataplane.state import InstanceEntry, Tunnel, tunnel_for

_V6_KINDS = ("ip6tnl", "ip6gre")


@dataclass(slots=True)
class Batches:
    links: list[str] = field(default_factory=list)
    v4: list[str] = field(default_factory=list)
    v6: list[str] = field(default_factory=list)

    def family(self, version: int) -> list[str]:
        return self.v4 if version == 4 else self.v6

    def __bool__(self) -> bool:
        return bool(self.links or self.v4 or self.v6)

    def text(self) -> str:
        """All three batches, labelled (golden files, debugging)."""
        parts = []
        for label, lines in (("ip -batch (links)", self.links), ("ip -batch", self.v4), ("ip -6 -batch", self.v6)):
            if lines:
                parts.append(f"# {label}\n" + "\n".join(lines) + "\n")
        return "".join(parts)


class RouteError(ValueError):
    """A route cannot be rendered (e.g. an srv6 route without a device)."""


def route_line(entry: InstanceEntry, layout: Layout) -> str:
    forwarding = entry.forwarding
    if forwarding is None:
        raise RouteError(f"{entry.key}: forwarding unknown")
    prefix, table = entry.key.service.prefix, layout.table(entry.slot)
    if forwarding.mode is Encap.DIRECT:
        dev = f" dev {forwarding.device}" if forwarding.device else ""
        return f"route replace {prefix} via {forwarding.next_hop}{dev} table {table}"
    if forwarding.mode is Encap.SRV6:
        if not forwarding.device:
            raise RouteError(f"{entry.key}: srv6 route needs a device (resolve it from the route to the SID)")
        return (f"route replace {prefix} encap seg6 mode encap segs {forwarding.remote} dev {forwarding.device} "
                f"table {table}")
    tunnel = _tunnel(forwarding, entry.family)
    return f"route replace {prefix} dev {tunnel.name} table {table}"


def _tunnel(forwarding: Forwarding, version: int) -> Tunnel:
    tunnel = tunnel_for(forwarding, version)
    if tunnel is None:
        raise RouteError(f"{forwarding.mode} forwarding needs a tunnel")
    return tunnel


def delete_line(entry: InstanceEntry, layout: Layout) -> str:
    """Remove an instance's route by prefix (``route flush`` dumps every route of the host: avoided)."""
    return f"route del {entry.key.service.prefix} table {layout.table(entry.slot)}"


def rule_line(verb: str, slot: int, layout: Layout) -> str:
    return f"rule {verb} priority {layout.rule_priority} fwmark {layout.mark(slot):#010x} lookup {layout.table(slot)}"


def guard_lines(verb: str, layout: Layout) -> list[str]:
    lines = [f"rule {verb} priority {layout.end_priority} nop",
             f"rule {verb} priority {layout.guard_priority} not fwmark {layout.mark_base:#010x}/{MARK_MASK:#010x} "
             f"goto {layout.end_priority}"]
    return lines if verb == "add" else lines[::-1]


def _guard_delete(kind: str, layout: Layout) -> str:
    add_nop, add_goto = guard_lines("add", layout)
    return (add_nop if kind == "nop" else add_goto).replace("rule add", "rule del", 1)


def tunnel_lines(tunnel: Tunnel) -> list[str]:
    v6 = tunnel.kind in _V6_KINDS
    mode = " mode any" if tunnel.kind == "ip6tnl" else ""
    local = f" local {tunnel.local}" if tunnel.local is not None else ""
    dev = f" dev {tunnel.device}" if tunnel.device else ""
    hops = "hoplimit 64" if v6 else "ttl 64"
    return [f"link add {tunnel.name} type {tunnel.kind}{mode}{local} remote {tunnel.remote}{dev} {hops}",
            f"link set {tunnel.name} up"]


def render_setup(plan: Plan, layout: Layout) -> Batches:
    """What goes in before the nftables transaction: tunnels, routes, rules, guards."""
    batches = Batches()
    for tunnel in plan.add_tunnels:
        batches.links += tunnel_lines(tunnel)
    for family, kind in sorted(plan.installed.stale.guards):
        batches.family(family).append(_guard_delete(kind, layout))
    for entry in plan.routes:
        batches.family(entry.family).append(route_line(entry, layout))
    for version in plan.add_guards:
        batches.family(version).extend(guard_lines("add", layout))
    for version, slot in plan.add_rules:
        batches.family(version).append(rule_line("add", slot, layout))
    return batches


def installed_entry(plan: Plan, entry: InstanceEntry) -> InstanceEntry | None:
    """The installed version of ``entry`` (looked up in its own service only), or None when it is new."""
    service = plan.installed.services.get(entry.key.service)
    if service is None:
        return None
    return next((old for old in service.instances if old.slot == entry.slot), None)


def render_teardown(plan: Plan, layout: Layout) -> Batches:
    """What goes after the nftables transaction: rules and routes of removed instances, unused tunnels.

    Run with ``ip -force``: every line only removes, and one already gone must
    not keep the others.
    """
    batches = Batches()
    for version, slot in plan.remove_rules:
        batches.family(version).append(rule_line("del", slot, layout))
    for entry in plan.delete_routes:
        batches.family(entry.family).append(delete_line(entry, layout))
    for version, slot in plan.flush_tables:
        batches.family(version).append(f"route flush table {layout.table(slot)}")
    for tunnel in plan.remove_tunnels:
        batches.links.append(f"link del {tunnel.name}")
    return batches


def render_install(entries: Iterable[InstanceEntry], layout: Layout) -> Batches:
    """Routes, rules and guards for ``entries`` as a fresh install (golden files, benchmarks)."""
    batches = Batches()
    tunnels = sorted({t for e in entries if e.forwarding is not None
                      and (t := tunnel_for(e.forwarding, e.family)) is not None}, key=lambda t: t.name)
    for tunnel in tunnels:
        batches.links += tunnel_lines(tunnel)
    for version in (4, 6):
        batches.family(version).extend(guard_lines("add", layout))
    for entry in sorted(entries, key=lambda e: e.slot):
        batches.family(entry.family).append(route_line(entry, layout))
        batches.family(entry.family).append(rule_line("add", entry.slot, layout))
    return batches
