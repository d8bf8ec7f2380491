"""What an ingress's kernel steers: each instance's share of new flows, read from nftables in its namespace, and
the flows it holds on each instance, read from conntrack there."""

from __future__ import annotations

from collections.abc import Mapping

from dyncast_bgp.dataplane import conntrack
from dyncast_bgp.dataplane.layout import Layout
from dyncast_bgp.dataplane.readback import NftReadback, parse_key, parse_nft
from dyncast_bgp.lab.demo.actions import LabControl
from dyncast_bgp.lab.errors import LabError

TABLE = ("inet", "dyncast")


def _read_table(lab: LabControl, node: str, layout: Layout) -> NftReadback | None:
    """Our nftables table in ``node``'s namespace; None when nothing is installed."""
    done = lab.exec(node, ["nft", "-j", "list", "table", *TABLE], check=False, timeout=10.0)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise LabError(f"{node}: nft -j list table {' '.join(TABLE)}: {done.stderr.strip()}")
    return parse_nft(done.stdout, layout)


def _binding(comment: str) -> str:
    """The D-BID of a registry comment (``D-SID@D-BID [name]``)."""
    return str(parse_key(comment.split(maxsplit=1)[0]).binding)


def kernel_shares(lab: LabControl, node: str, service: str, layout: Layout | None = None) -> dict[str, float]:
    """D-BID -> share of ``service``'s new flows as installed in ``node``'s nftables (empty: not installed)."""
    layout = layout or Layout()
    nft = _read_table(lab, node, layout)
    if nft is None:
        return {}
    binding_of = {slot: _binding(comment) for slot, comment in nft.registry.items() if comment}
    for dsid, chain in nft.dispatch.items():
        if str(dsid) != service or chain not in nft.chains:
            continue
        _header, picks = nft.chains[chain]
        return {binding_of[slot]: buckets / layout.resolution for slot, buckets in picks.items()
                if slot in binding_of}
    return {}


def live_flows(registry: Mapping[int, str], listing: str, layout: Layout | None = None) -> dict[str, int]:
    """D-BID -> live conntrack entries steered to it (pure): ``registry`` is the nft registry (slot -> comment),
    ``listing`` the ``conntrack -L`` output of our mark range.

    Every flow the kernel pinned to an instance counts from its first packet (a SYN whose connection is not
    even established yet) until it ends (TIME_WAIT and CLOSE do not count, see ``conntrack.count_marks``).
    """
    layout = layout or Layout()
    counts = conntrack.count_marks(listing)
    flows: dict[str, int] = {}
    for slot, comment in registry.items():
        if comment:
            binding = _binding(comment)
            flows[binding] = flows.get(binding, 0) + counts.get(layout.mark(slot), 0)
    return flows


def kernel_flows(lab: LabControl, node: str, layout: Layout | None = None) -> dict[str, int]:
    """D-BID -> live flows ``node``'s kernel steers to it (IPv4 conntrack; empty when nothing is installed)."""
    layout = layout or Layout()
    nft = _read_table(lab, node, layout)
    if nft is None:
        return {}
    listed = lab.exec(node, conntrack.list_argv(4, layout), check=False, timeout=10.0)
    if listed.returncode != 0:
        raise LabError(f"{node}: {' '.join(conntrack.list_argv(4, layout))}: {listed.stderr.strip()}")
    return live_flows(nft.registry, listed.stdout, layout)
