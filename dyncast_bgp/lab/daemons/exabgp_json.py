"""Rebuild an ExaBGP receiver's view (sessions, Adj-RIB-In) from its JSON API messages.

This is the lab's own reader, independent of the product's ExaBGP JSON
decoder, so interop tests do not check the code under test with itself.
ExaBGP 5.0 with ``encoder json`` and ``receive { parsed; update; }`` writes
one JSON object per line:

- ``"type": "state"``: ``neighbor.state`` is ``connected``, ``up`` or ``down``;
- ``"type": "update"``: ``neighbor.message.update`` holds ``attribute``
  (``extended-community`` is a list of ``{"value": <u64>, "string": ""}``),
  ``announce`` (``{"ipv4 unicast": {<next hop>: [{"nlri": <prefix>,
  "path-information": "0.0.0.1"}]}}``) and ``withdraw`` (``{"ipv4 unicast":
  [{"nlri": ..., "path-information": ...}]}``); without ADD-PATH the NLRI
  entries carry no ``path-information`` (older releases give bare strings);
  ``neighbor.message.eor`` marks End-of-RIB.

A session going down drops the routes learned from that peer, as BGP does.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dyncast_bgp.lab.errors import ParseError
from dyncast_bgp.lab.rib import Family, Route, family_of, normalize_address, normalize_prefix

_FAMILIES: Mapping[str, Family] = {"ipv4 unicast": "ipv4", "ipv6 unicast": "ipv6"}


@dataclass
class ExaBgpView:
    """Session states and received paths, keyed by (peer, prefix, path id)."""

    states: dict[str, str] = field(default_factory=dict)
    paths: dict[tuple[str, str, int | None], Route] = field(default_factory=dict)
    messages: int = 0

    def apply(self, message: Mapping[str, Any]) -> None:
        """Fold one decoded JSON message into the view."""
        self.messages += 1
        kind = message.get("type")
        neighbor = message.get("neighbor")
        if not isinstance(neighbor, Mapping):
            return
        peer = normalize_address(str(neighbor["address"]["peer"]))
        if kind == "state":
            state = str(neighbor.get("state"))
            self.states[peer] = state
            if state == "down":
                self.paths = {key: route for key, route in self.paths.items() if key[0] != peer}
        elif kind == "update":
            update = neighbor.get("message", {}).get("update")
            if isinstance(update, Mapping):
                self._apply_update(peer, update)

    def _apply_update(self, peer: str, update: Mapping[str, Any]) -> None:
        attributes = update.get("attribute", {})
        communities = tuple(_community(item) for item in attributes.get("extended-community", []))
        text = " ".join(str(item.get("string", "")) for item in attributes.get("extended-community", [])
                        if isinstance(item, Mapping)).strip()
        for family_name, by_next_hop in update.get("announce", {}).items():
            if family_name not in _FAMILIES:
                continue
            for next_hop, entries in by_next_hop.items():
                for prefix, path_id in map(_nlri, entries):
                    route = Route(prefix=prefix, next_hop=normalize_address(next_hop), path_id=path_id,
                                  ext_communities=communities, peer=peer, text=text)
                    self.paths[(peer, prefix, path_id)] = route
        for family_name, entries in update.get("withdraw", {}).items():
            if family_name not in _FAMILIES:
                continue
            for prefix, path_id in map(_nlri, entries):
                self.paths.pop((peer, prefix, path_id), None)

    def routes(self, family: Family) -> list[Route]:
        return [route for route in self.paths.values() if family_of(route.prefix) == family]

    def established(self, peer: str) -> bool:
        return self.states.get(normalize_address(peer)) == "up"


def _community(item: object) -> bytes:
    if isinstance(item, Mapping) and isinstance(item.get("value"), int):
        value = int(item["value"])
    elif isinstance(item, int):
        value = item
    else:
        raise ParseError(f"extended community {item!r}: expected {{'value': <u64>}}")
    if not 0 <= value < 1 << 64:
        raise ParseError(f"extended community value {value} does not fit 64 bits")
    return value.to_bytes(8, "big")


def _nlri(entry: object) -> tuple[str, int | None]:
    if isinstance(entry, str):
        return normalize_prefix(entry), None
    if not isinstance(entry, Mapping) or "nlri" not in entry:
        raise ParseError(f"NLRI entry {entry!r}: expected {{'nlri': <prefix>, 'path-information': ...}}")
    path_info = entry.get("path-information")
    path_id = None if path_info is None else int(ipaddress.IPv4Address(str(path_info)))
    return normalize_prefix(str(entry["nlri"])), path_id


def read_view(lines: Iterable[str], view: ExaBgpView | None = None) -> ExaBgpView:
    """Replay complete JSON lines into ``view`` (a new one by default); other lines are skipped."""
    view = ExaBgpView() if view is None else view
    for line in lines:
        text = line.strip()
        if not text.startswith("{"):
            continue
        try:
            view.apply(json.loads(text))
        except (KeyError, TypeError, ValueError) as exc:
            raise ParseError(f"cannot read ExaBGP message {text[:300]}: {exc!r}") from exc
    return view
