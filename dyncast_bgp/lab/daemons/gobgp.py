"""GoBGP 3 (Debian ``gobgpd``) in a namespace, queried with ``gobgp -j`` over a unix socket.

Facts this module relies on (gobgpd/gobgp 3.10.0 from Debian 12):

- ``gobgpd -f <conf.toml> --api-hosts=unix://<socket> --pprof-disable -p``:
  the gRPC API on a unix socket needs no port and works from any namespace;
  ``gobgp --target unix://<socket> ...`` queries it. ``-p`` logs in plain text.
- ``connect-retry`` defaults to 120 s and is set to 1 s here. After a
  session drops, the peer stays Idle for a fixed 5 s (``HoldTimeIdle``) and
  closes incoming connections ("Closed an accepted connection"), so a
  restarted speaker is back in about 6 s; ``idle-hold-time-after-reset``
  (set to 1 s) only applies to administrative resets. ADD-PATH receive is
  per family (``[neighbors.afi-safis.add-paths.config] receive = true``).
- ``gobgp neighbor -j``: a list; ``state.session_state == 6`` is Established.
- ``gobgp global rib -a ipv4 -j``: ``{<prefix>: [<path>...]}``, one entry per
  ADD-PATH path, with ``attrs``: next hop in type 3 (``nexthop``) for IPv4 or
  type 14 (MP_REACH ``nexthop``) for IPv6; extended communities in type 16
  ``value``, a list in GoBGP's order (not the order received). Unknown types
  (all of 0x83) are ``{"type": 131, "subtype": 1, "value": <base64 of
  octets 1-7>}`` (the subtype again, then the 6 value octets); route targets
  and origins are ``{"type": 0|1|2|64|65|66, "subtype": n, "value": "AS:N" |
  "a.b.c.d:N" | "high.low:N"}``; link bandwidth is ``{"type": 64, "subtype":
  4, "asn": N, "bandwidth": <float32>}``. Path ids are not in the JSON.
- An empty table prints nothing (or ``{}``).
"""

from __future__ import annotations

import base64
import ipaddress
import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer
from dyncast_bgp.lab.errors import CommandError, DaemonError, ParseError
from dyncast_bgp.lab.rib import Family, Route, normalize_address, normalize_prefix

ESTABLISHED = 6
_ATTR_NEXT_HOP = 3
_ATTR_MP_REACH = 14
_ATTR_EXT_COMMUNITIES = 16
_LINK_BANDWIDTH = (0x40, 0x04)


def _q(text: str) -> str:
    return json.dumps(text)  # a TOML basic string is a JSON string for our inputs


def render_config(local: Local, peers: Sequence[Peer]) -> str:
    """gobgpd.toml for ``local`` with ``peers``."""
    lines = ["[global.config]", f"  as = {local.asn}", f"  router-id = {_q(local.router_id)}",
             "  local-address-list = [" + ", ".join(_q(a) for a in local.addresses) + "]", "  port = 179"]
    for peer in peers:
        lines += ["", "[[neighbors]]", "  [neighbors.config]", f"    neighbor-address = {_q(peer.address)}",
                  f"    peer-as = {peer.asn}"]
        if peer.description:
            lines.append(f"    description = {_q(peer.description)}")
        lines += ["  [neighbors.transport.config]", f"    passive-mode = {str(peer.passive).lower()}",
                  f"    local-address = {_q(local.address_for(peer.address))}",
                  "  [neighbors.timers.config]", "    connect-retry = 1", "    idle-hold-time-after-reset = 1"]
        if not peer.export_routes:
            lines += ["  [neighbors.apply-policy.config]", '    default-export-policy = "reject-route"']
        if peer.rr_client:
            lines += ["  [neighbors.route-reflector.config]", "    route-reflector-client = true",
                      f"    route-reflector-cluster-id = {_q(local.router_id)}"]
        for family in peer.families:
            lines += ["  [[neighbors.afi-safis]]", "    [neighbors.afi-safis.config]",
                      f"      afi-safi-name = {_q(family + '-unicast')}",
                      "    [neighbors.afi-safis.add-paths.config]",
                      f"      receive = {str(peer.add_path_receive).lower()}"]
            if peer.add_path_send:
                lines.append("      send-max = 255")
    return "\n".join(lines) + "\n"


def parse_neighbors(data: object) -> dict[str, bool]:
    """Peer -> Established, from ``gobgp neighbor -j``."""
    if not isinstance(data, list):
        raise ParseError(f"gobgp neighbor -j: expected a list, got {str(data)[:200]}")
    states: dict[str, bool] = {}
    for entry in data:
        address = entry.get("state", {}).get("neighbor_address") or entry.get("conf", {}).get("neighbor_address")
        if address:
            states[normalize_address(address)] = entry.get("state", {}).get("session_state") == ESTABLISHED
    return states


def parse_rib(data: Mapping[str, Any]) -> list[Route]:
    """Routes from ``gobgp global rib -a <afi> -j``."""
    routes: list[Route] = []
    for prefix, paths in data.items():
        for path in paths:
            attrs = {attr.get("type"): attr for attr in path.get("attrs", [])}
            hop = attrs.get(_ATTR_NEXT_HOP, attrs.get(_ATTR_MP_REACH, {})).get("nexthop")
            if hop is None:
                raise ParseError(f"GoBGP path of {prefix} has no next hop: {json.dumps(path)[:300]}")
            raw = attrs.get(_ATTR_EXT_COMMUNITIES, {}).get("value", [])
            communities = tuple(community(item) for item in raw)
            peer = path.get("neighbor-ip")
            routes.append(Route(prefix=normalize_prefix(prefix), next_hop=normalize_address(hop), path_id=None,
                                ext_communities=communities, peer=normalize_address(peer) if peer else None,
                                text=json.dumps(raw)))
    return routes


def community(item: Mapping[str, Any]) -> bytes:
    """The 8 octets of one GoBGP JSON extended community (the kinds listed in the module doc)."""
    try:
        type_code, subtype = int(item["type"]), int(item["subtype"])
        if (type_code, subtype) == _LINK_BANDWIDTH and "bandwidth" in item:
            return struct.pack("!BBHf", type_code, subtype, int(item["asn"]), float(item["bandwidth"]))
        value = item["value"]
        if not isinstance(value, str):
            raise ValueError("no string value")
        if ":" not in value:  # base64 of octets 1-7
            octets = base64.b64decode(value, validate=True)
            if len(octets) != 7 or octets[0] != subtype:
                raise ValueError(f"base64 value of {len(octets)} octets")
            return bytes([type_code]) + octets
        key, _, local = value.rpartition(":")
        return bytes([type_code, subtype]) + _key_local(type_code & 0x0F, key, int(local))
    except (KeyError, ValueError, TypeError, struct.error) as exc:
        raise ParseError(f"cannot rebuild GoBGP extended community {json.dumps(item)}: {exc}") from exc


def _key_local(kind: int, key: str, local: int) -> bytes:
    if kind == 0x00:  # 2-octet AS : 4-octet value
        return struct.pack("!HI", int(key), local)
    if kind == 0x01:  # IPv4 : 2-octet value
        return ipaddress.IPv4Address(key).packed + struct.pack("!H", local)
    if kind == 0x02:  # 4-octet AS as high.low : 2-octet value
        high, _, low = key.partition(".")
        asn = (int(high) << 16) | int(low) if low else int(high)
        return struct.pack("!IH", asn, local)
    raise ValueError(f"unexpected 'value' form for type low nibble {kind}")


class GoBgp(Daemon):
    """gobgpd with its gRPC API on a unix socket in the daemon directory."""

    binaries: ClassVar[tuple[str, ...]] = ("gobgpd", "gobgp")

    @property
    def target(self) -> str:
        return f"unix://{self.directory / 'api.sock'}"

    def write_config(self) -> None:
        (self.directory / "gobgpd.toml").write_text(render_config(self.local, self.peers))

    def start(self) -> None:
        self.spawn("gobgpd", ["gobgpd", "-f", str(self.directory / "gobgpd.toml"), "-t", "toml",
                              f"--api-hosts={self.target}", "--pprof-disable", "-p"])

    def gobgp_json(self, *args: str) -> Any:
        try:
            text = self.namespace.run(["gobgp", "--target", self.target, *args, "-j"]).stdout
        except CommandError as exc:
            raise DaemonError(f"{self.name}: {exc}\n{self.diagnostics()}") from exc
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise ParseError(f"{self.name}: gobgp {' '.join(args)} -j did not return JSON: {text[:300]}") from exc

    def sessions(self) -> dict[str, bool]:
        if not (self.directory / "api.sock").exists():
            return {}
        return parse_neighbors(self.gobgp_json("neighbor") or [])

    def rib(self, family: Family) -> list[Route]:
        return parse_rib(self.gobgp_json("global", "rib", "-a", family) or {})
