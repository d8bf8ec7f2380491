"""FRR 8.4 (Debian ``frr``) zebra + bgpd in a namespace, queried with vtysh JSON.

Facts this module relies on (FRR 8.4.4 from Debian 12):

- zebra refuses ``-u root`` (``privs_init: user(root) is not part of vty
  group specified(frrvty)``) and has no ``-S``: run it as ``-u frr -g frr``,
  with its own ``-z <zserv.api>``, ``-i <pid>``, ``--vty_socket <dir>`` in a
  directory owned by ``frr``. bgpd runs as root with ``-S`` (skip the user
  change and capability checks) and the same ``-z``/``--vty_socket``. ``-P 0``
  keeps both off the TCP vty ports; ``--log stdout`` sends logs to our file.
- bgpd retries a missing zebra only after a second or more, so zebra's
  ``zserv.api`` socket is awaited before bgpd starts (about 0.1 s).
- Routes need a resolvable next hop (zebra nexthop tracking) to be valid,
  best, or reflected: the lab puts D-BIDs on a connected subnet.
- ``no bgp ebgp-requires-policy`` (else eBGP routes are neither accepted nor
  sent), ``no bgp default ipv4-unicast`` with explicit ``activate`` per family,
  ``timers connect 1`` on active neighbors (the default retry is 120 s).
- A route reflector sends a client every path only with
  ``neighbor X addpath-tx-all-paths``; FRR always offers ADD-PATH receive.
- ``show bgp ipv4 unicast json detail`` gives, per prefix, a header object
  then one object per path with ``nexthops[].ip``, ``addpathRxId`` (the
  received path id), ``addpathTxId`` and ``extendedCommunity.string``.
  Unknown extended communities show as ``UNK:<type>, <subtype>`` without the
  value (``UNK:131, 1`` for 0x8301...), so :meth:`Frr.rib` returns
  ``ext_communities=None`` and the text; check values at a client.
- ``show bgp neighbors json``: ``{<peer>: {"bgpState": "Established", ...}}``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer
from dyncast_bgp.lab.errors import CommandError, DaemonError, ParseError
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.rib import Family, Route, normalize_address, normalize_prefix

FRR_LIB = "/usr/lib/frr"
FRR_USER = "frr"
_DENY = "LAB-EXPORT-NONE"


def render_bgpd(name: str, local: Local, peers: Sequence[Peer]) -> str:
    """bgpd.conf for ``local`` with ``peers`` (families activated per peer)."""
    lines = [f"hostname {name}", "!", f"router bgp {local.asn}", f" bgp router-id {local.router_id}",
             " no bgp ebgp-requires-policy", " no bgp default ipv4-unicast", " no bgp network import-check"]
    for peer in peers:
        lines.append(f" neighbor {peer.address} remote-as {peer.asn}")
        if peer.description:
            lines.append(f" neighbor {peer.address} description {peer.description}")
        lines.append(f" neighbor {peer.address} update-source {local.address_for(peer.address)}")
        lines.append(f" neighbor {peer.address} passive" if peer.passive
                     else f" neighbor {peer.address} timers connect 1")
    for family in ("ipv4", "ipv6"):
        members = [peer for peer in peers if family in peer.families]
        if not members:
            continue
        lines.append(f" address-family {family} unicast")
        for peer in members:
            lines.append(f"  neighbor {peer.address} activate")
            if peer.rr_client:
                lines.append(f"  neighbor {peer.address} route-reflector-client")
            if peer.add_path_send:
                lines.append(f"  neighbor {peer.address} addpath-tx-all-paths")
            if not peer.export_routes:
                lines.append(f"  neighbor {peer.address} route-map {_DENY} out")
        lines.append(" exit-address-family")
    lines.append("!")
    if any(not peer.export_routes for peer in peers):
        lines += [f"route-map {_DENY} deny 10", "!"]
    return "\n".join(lines) + "\n"


def parse_rib(data: Mapping[str, Any]) -> list[Route]:
    """Routes from ``show bgp <afi> unicast json detail``."""
    routes: list[Route] = []
    by_prefix = data.get("routes", {})
    if not isinstance(by_prefix, Mapping):
        raise ParseError(f"FRR RIB: 'routes' is not an object: {str(by_prefix)[:200]}")
    for prefix, paths in by_prefix.items():
        for path in paths:
            if "nexthops" not in path:
                continue  # the per-prefix header
            next_hops = [hop for hop in path["nexthops"] if hop.get("scope") != "link-local"]
            if not next_hops:
                raise ParseError(f"FRR RIB: path of {prefix} without a global next hop: {path}")
            peer = path.get("peer", {}).get("peerId")
            routes.append(Route(prefix=normalize_prefix(prefix), next_hop=normalize_address(next_hops[0]["ip"]),
                                path_id=path.get("addpathRxId"), ext_communities=None,
                                peer=normalize_address(peer) if peer else None,
                                text=str(path.get("extendedCommunity", {}).get("string", ""))))
    return routes


def parse_sessions(data: Mapping[str, Any]) -> dict[str, bool]:
    """Peer -> Established, from ``show bgp neighbors json``."""
    return {normalize_address(peer): info.get("bgpState") == "Established"
            for peer, info in data.items() if isinstance(info, Mapping) and "bgpState" in info}


class Frr(Daemon):
    """zebra + bgpd; ``vtysh`` runs commands against this instance only."""

    binaries: ClassVar[tuple[str, ...]] = ("zebra", "bgpd", "vtysh")

    def write_config(self) -> None:
        (self.directory / "zebra.conf").write_text(f"hostname {self.name}\n")
        (self.directory / "bgpd.conf").write_text(render_bgpd(self.name, self.local, self.peers))
        for path in (self.directory, *self.directory.iterdir()):
            shutil.chown(path, FRR_USER, FRR_USER)

    def start(self) -> None:
        common = ["-z", str(self.directory / "zserv.api"), "--vty_socket", str(self.directory), "-P", "0",
                  "--log", "stdout"]
        self.spawn("zebra", [f"{FRR_LIB}/zebra", "-u", FRR_USER, "-g", FRR_USER, "-i",
                             str(self.directory / "zebra.pid"), "-f", str(self.directory / "zebra.conf"), *common])
        expect((self.directory / "zserv.api").exists, bool, timeout=10.0, wait=0.02,
               what=f"{self.name}: zebra socket {self.directory / 'zserv.api'}", diagnose=self.diagnostics)
        self.spawn("bgpd", [f"{FRR_LIB}/bgpd", "-S", "-u", "root", "-g", "root", "-i",
                            str(self.directory / "bgpd.pid"), "-f", str(self.directory / "bgpd.conf"), *common])

    def vtysh(self, *commands: str) -> str:
        """Run vtysh commands against this instance; returns stdout."""
        argv = ["vtysh", "--vty_socket", str(self.directory)]
        for command in commands:
            argv += ["-c", command]
        try:
            return self.namespace.run(argv).stdout
        except CommandError as exc:
            raise DaemonError(f"{self.name}: {exc}\n{self.diagnostics()}") from exc

    def vtysh_json(self, command: str) -> Any:
        text = self.vtysh(command)
        try:
            return json.loads(text) if text.strip() else {}
        except json.JSONDecodeError as exc:
            raise ParseError(f"{self.name}: {command!r} did not return JSON: {text[:300]}") from exc

    def sessions(self) -> dict[str, bool]:
        if not (self.directory / "bgpd.vty").exists():
            return {}  # bgpd still starting
        return parse_sessions(self.vtysh_json("show bgp neighbors json"))

    def rib(self, family: Family) -> list[Route]:
        return parse_rib(self.vtysh_json(f"show bgp {family} unicast json detail"))
