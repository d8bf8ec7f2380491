"""BIRD 2 (Debian ``bird2``) in a namespace, queried with ``birdc``.

Facts this module relies on (BIRD 2.0.12 from Debian 12):

- ``bird -f -c <conf> -s <socket> -P <pidfile>`` stays in the foreground as
  root; ``birdc -s <socket> <command>`` prints ``BIRD 2.0.12 ready.`` first.
- One ``protocol bgp`` per peer (named ``peer_<address>`` here), one channel
  per family; IPv6 routes over an IPv4 session work (MP-BGP). ``add paths
  rx`` takes every ADD-PATH path; ``export none`` keeps a receiver quiet,
  ``export where source = RTS_BGP`` passes on BGP routes only (not the
  connected routes ``protocol direct`` adds to the table).
- eBGP (``gateway direct``) treats a route whose next hop is not on a
  connected network as withdrawn, so the lab's D-BIDs are on the LAN
  subnet; iBGP (``gateway recursive``) resolves through ``master4/6``, hence
  ``protocol direct``. ``connect delay time`` (5 s) and ``error wait time``
  (60 s) defaults are shortened so sessions come back fast after a restart.
- ``show protocols``: ``<name> BGP --- up <since> Established``.
- ``show route all table master4``: a path line ``<prefix> unicast [<proto>
  <time> from <peer>] * (100) [AS65000i]`` (later paths of the same prefix
  start with blanks instead of the prefix), then tab-indented attributes,
  ``BGP.next_hop: <addr> [<link-local>]``, ``BGP.ext_community: (generic,
  0x83012000, 0x42160000) (generic, 0x83044000, 0x78)``; a long list goes on
  in lines indented by two tabs. ADD-PATH ids are not shown.
- Extended community text: ``(generic, 0x<high 32 bits>, 0x<low 32 bits>)``
  for types other than 0x00-0x02/0x40-0x42 (so every 0x83 metric community
  is exact), else ``(<kind>, <key>, <value>)`` with kind ``rt`` (subtype 2),
  ``ro`` (subtype 3) or ``unknown 0x<type><subtype>``; the key is a 2-octet
  AS (0x00/0x40), an IPv4 address (0x01/0x41) or a 4-octet AS (0x02/0x42).
  ``rt``/``ro`` with a key and value both below 65536 could be 0x00 or
  0x02; this reader takes 0x00 (what BIRD itself makes of ``(rt, 1, 2)``).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from typing import ClassVar

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer
from dyncast_bgp.lab.errors import CommandError, DaemonError, ParseError
from dyncast_bgp.lab.rib import Family, Route, normalize_address, normalize_prefix

_PATH_LINE = re.compile(r"^(?P<prefix>\S+)?\s+\w+ \[(?P<proto>\S+) [^\]]*?(?: from (?P<from>\S+))?\]")
_COMMUNITY = re.compile(r"\(([^()]*)\)")
_KIND_SUBTYPE = {"rt": 0x02, "ro": 0x03}
_U16 = 0xFFFF


def protocol_name(peer: str) -> str:
    return "peer_" + re.sub(r"[.:]", "_", normalize_address(peer))


def render_config(local: Local, peers: Sequence[Peer]) -> str:
    """bird.conf: one ``protocol bgp`` per peer, one channel per family, importing everything."""
    lines = [f"router id {local.router_id};", "protocol device { scan time 10; }",
             "protocol direct { ipv4; ipv6; }"]
    for peer in peers:
        add_paths = {(True, True): "on", (True, False): "rx", (False, True): "tx"}.get(
            (peer.add_path_receive, peer.add_path_send))
        export = "export where source = RTS_BGP;" if peer.export_routes else "export none;"
        channel = f"import all; {export}" + (f" add paths {add_paths};" if add_paths else "")
        lines += [f"protocol bgp {protocol_name(peer.address)} {{",
                  f"  local {local.address_for(peer.address)} as {local.asn};",
                  f"  neighbor {peer.address} as {peer.asn};",
                  "  passive on;" if peer.passive else "  connect delay time 1; connect retry time 1;",
                  "  error wait time 1, 5;"]
        if peer.description:
            lines.append(f'  description "{peer.description}";')
        if peer.rr_client:
            lines.append("  rr client;")
        lines += [f"  {family} {{ {channel} }};" for family in peer.families]
        lines.append("}")
    return "\n".join(lines) + "\n"


def parse_protocols(text: str) -> dict[str, bool]:
    """Protocol name -> Established, from ``show protocols``."""
    states: dict[str, bool] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[1] == "BGP":
            states[fields[0]] = "Established" in fields[5:]
    return states


def parse_routes(text: str) -> list[Route]:
    """BGP paths from ``show route all`` (other protocols' routes are skipped)."""
    routes: list[Route] = []
    current: dict[str, str] = {}
    prefix = ""
    last_key = ""

    def flush() -> None:
        if current.get("type", "").startswith("BGP") and "BGP.next_hop" in current:
            communities = current.get("BGP.ext_community", "")
            routes.append(Route(prefix=normalize_prefix(current["prefix"]),
                                next_hop=normalize_address(current["BGP.next_hop"].split()[0]), path_id=None,
                                ext_communities=parse_communities(communities),
                                peer=normalize_address(current["from"]) if current.get("from") else None,
                                text=communities))

    for line in text.splitlines():
        if not line.strip() or line.startswith(("BIRD ", "Table ")):
            continue
        if line.startswith("\t\t") and last_key:  # continuation of a long attribute
            current[last_key] += " " + line.strip()
            continue
        if line.startswith("\t"):
            key, _, value = line.strip().partition(": ")
            last_key = key
            current["type" if key == "Type" else key] = value
            continue
        match = _PATH_LINE.match(line)
        if match is None:
            raise ParseError(f"BIRD route output: unexpected line {line!r}")
        flush()
        prefix = match["prefix"] or prefix
        current = {"prefix": prefix, "from": match["from"] or ""}
        last_key = ""
    flush()
    return routes


def parse_communities(text: str) -> tuple[bytes, ...]:
    """Raw 8 octets of each ``(kind, key, value)`` group of ``BGP.ext_community``."""
    return tuple(_community(group) for group in _COMMUNITY.findall(text))


def _community(group: str) -> bytes:
    parts = [part.strip() for part in group.split(",")]
    if len(parts) != 3:
        raise ParseError(f"BIRD extended community ({group}): expected 3 fields")
    kind, key, value = parts
    try:
        if kind == "generic":
            return ((int(key, 16) << 32) | int(value, 16)).to_bytes(8, "big")
        return _typed(kind, key, int(value))
    except ValueError as exc:
        raise ParseError(f"BIRD extended community ({group}): {exc}") from exc


def _typed(kind: str, key: str, value: int) -> bytes:
    if kind.startswith("unknown 0x"):
        type_code = int(kind.removeprefix("unknown 0x"), 16)
    elif kind in _KIND_SUBTYPE:
        type_code = (_guess_high_type(key, value) << 8) | _KIND_SUBTYPE[kind]
    else:
        raise ValueError(f"unknown kind {kind!r}")
    high = type_code >> 8
    if high & 0x0F == 0x01:  # IPv4 address specific: 4-octet address, 2-octet value
        local = (int(ipaddress.IPv4Address(key)) << 16) | value
    elif high & 0x0F == 0x02:  # 4-octet AS specific: 4-octet AS, 2-octet value
        local = (int(key) << 16) | value
    else:  # 2-octet AS specific: 2-octet AS, 4-octet value
        local = (int(key) << 32) | value
    return ((type_code << 48) | local).to_bytes(8, "big")


def _guess_high_type(key: str, value: int) -> int:
    if "." in key:
        return 0x01
    if int(key) > _U16:
        return 0x02
    return 0x00


class Bird(Daemon):
    """``bird`` in the foreground with its control socket in the daemon directory."""

    binaries: ClassVar[tuple[str, ...]] = ("bird", "birdc")

    @property
    def socket(self) -> str:
        return str(self.directory / "bird.ctl")

    def write_config(self) -> None:
        (self.directory / "bird.conf").write_text(render_config(self.local, self.peers))

    def start(self) -> None:
        self.spawn("bird", ["bird", "-f", "-c", str(self.directory / "bird.conf"), "-s", self.socket,
                            "-P", str(self.directory / "bird.pid")])

    def birdc(self, command: str) -> str:
        try:
            return self.namespace.run(["birdc", "-s", self.socket, *command.split()]).stdout
        except CommandError as exc:
            raise DaemonError(f"{self.name}: {exc}\n{self.diagnostics()}") from exc

    def sessions(self) -> dict[str, bool]:
        if not (self.directory / "bird.ctl").exists():
            return {}
        states = parse_protocols(self.birdc("show protocols"))
        return {normalize_address(peer.address): states.get(protocol_name(peer.address), False)
                for peer in self.peers}

    def rib(self, family: Family) -> list[Route]:
        return parse_routes(self.birdc(f"show route all table master{family[-1]}"))
