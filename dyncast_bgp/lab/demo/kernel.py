"""What an ingress's kernel steers: each instance's share of new flows, read from nftables in its namespace."""

from __future__ import annotations

from dyncast_bgp.dataplane.layout import Layout
from dyncast_bgp.dataplane.readback import parse_key, parse_nft
from dyncast_bgp.lab.demo.actions import LabControl
from dyncast_bgp.lab.errors import LabError

TABLE = ("inet", "dyncast")


def kernel_shares(lab: LabControl, node: str, service: str, layout: Layout | None = None) -> dict[str, float]:
    """D-BID -> share of ``service``'s new flows as installed in ``node``'s nftables (empty: not installed)."""
    layout = layout or Layout()
    done = lab.exec(node, ["nft", "-j", "list", "table", *TABLE], check=False, timeout=10.0)
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return {}
        raise LabError(f"{node}: nft -j list table {' '.join(TABLE)}: {done.stderr.strip()}")
    nft = parse_nft(done.stdout, layout)
    binding_of = {slot: str(parse_key(comment.split()[0]).binding) for slot, comment in nft.registry.items()
                  if comment}
    for dsid, chain in nft.dispatch.items():
        if str(dsid) != service or chain not in nft.chains:
            continue
        _header, picks = nft.chains[chain]
        return {binding_of[slot]: buckets / layout.resolution for slot, buckets in picks.items()
                if slot in binding_of}
    return {}
