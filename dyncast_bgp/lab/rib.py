"""The one route type every daemon's RIB query returns, and helpers to select and show routes."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Family = Literal["ipv4", "ipv6"]
FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")


@dataclass(frozen=True, slots=True)
class Route:
    """One path for a prefix as a daemon holds it.

    ``prefix`` and ``next_hop`` are normalised (``ipaddress`` text form).
    ``path_id`` is the ADD-PATH identifier the daemon received with the path,
    ``None`` when the daemon does not show it (BIRD, GoBGP) or none was
    negotiated. ``ext_communities`` holds each extended community as its 8
    raw octets, in the daemon's order; ``None`` when the daemon does not show
    the values (FRR shows unknown types as ``UNK:<type>, <subtype>``).
    ``text`` is the daemon's own rendering of the extended communities.
    """

    prefix: str
    next_hop: str
    path_id: int | None
    ext_communities: tuple[bytes, ...] | None
    peer: str | None = None
    text: str = ""

    @property
    def family(self) -> Family:
        return family_of(self.prefix)

    def communities_hex(self) -> list[str] | None:
        """The communities as ``0x`` + 16 hex digits, sorted (the order on the wire carries no meaning)."""
        if self.ext_communities is None:
            return None
        return sorted("0x" + raw.hex() for raw in self.ext_communities)

    def __str__(self) -> str:
        shown = self.communities_hex()
        communities = self.text if shown is None else " ".join(shown)
        path = "" if self.path_id is None else f" path-id {self.path_id}"
        return f"{self.prefix} via {self.next_hop}{path} [{communities}]"


def normalize_prefix(text: str) -> str:
    """``2001:DB8::10/128`` -> ``2001:db8::10/128``; a host address without length gets /32 or /128."""
    return ipaddress.ip_network(text.strip(), strict=False).with_prefixlen


def normalize_address(text: str) -> str:
    return str(ipaddress.ip_address(text.strip()))


def family_of(prefix_or_address: str) -> Family:
    version = ipaddress.ip_network(prefix_or_address, strict=False).version
    return "ipv4" if version == 4 else "ipv6"


def select(routes: Iterable[Route], prefix: str) -> list[Route]:
    """The routes for ``prefix`` (any spelling), sorted by next hop then path id."""
    wanted = normalize_prefix(prefix)
    found = [route for route in routes if route.prefix == wanted]
    return sorted(found, key=lambda r: (ipaddress.ip_address(r.next_hop), r.path_id or 0))


def show(routes: Iterable[Route]) -> str:
    """One route per line, for assertion and timeout messages."""
    lines = [str(route) for route in routes]
    return "\n".join(lines) if lines else "(no routes)"
