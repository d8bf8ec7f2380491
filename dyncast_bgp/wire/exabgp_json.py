"""ExaBGP JSON API lines (``encoder json``) turned into typed events. Pure: no I/O.

``parse_line(line)`` reads one line that ExaBGP wrote to an API process configured
with ``encoder json; receive { parsed; update; neighbor-changes; }`` and returns
one :data:`Event`. Anything malformed or unexpected raises :class:`ExabgpJsonError`
and nothing else: a caller logs it and skips the line.

The shapes below were read from real output of ExaBGP 5.0.15 and 4.2.25
(tests/golden/exabgp_json/, captured by scripts/capture_exabgp_json.py).
Every line has a common header; ``neighbor`` carries the session::

    { "exabgp": "5.0.0",            # "4.0.1" from ExaBGP 4.2
      "time": 1795216998.43, "host": "vm", "pid": 6105, "ppid": 6063, "counter": 8,
      "type": "update",             # state | update | notification | open | keepalive | refresh ...
      "neighbor": { "address": { "local": "127.0.83.2", "peer": "127.0.83.1" },
                    "asn": { "local": 65002, "peer": 65001 },
                    "router-id": "127.0.83.2",     # 5.0 only
                    "direction": "receive",        # on messages, not on state lines
                    ... per type, below ... } }

An UPDATE (``type: update``), ``neighbor.message.update``::

    { "attribute": { "origin": "igp",
                     "as-path": ...,                 # see below; absent on iBGP when empty
                     "med": 10, "local-preference": 150,
                     "community": [ [ 65001, 100 ] ], "large-community": [ [ 65001, 1, 2 ] ],
                     "extended-community": [ { "value": 9439864228206477312, "string": "" } ] },
      "announce": { "ipv4 unicast": { "192.0.2.21": [ { "nlri": "203.0.113.20/32",
                                                        "path-information": "0.0.0.3" },
                                                      { "nlri": "203.0.113.21/32", ... } ] },
                    "ipv4 flow":    { "no-nexthop": [ { "destination-ipv4": [...], ... } ] } },
      "withdraw": { "ipv6 unicast": [ { "nlri": "2001:db8:cafe::10/128", "path-information": "0.0.0.2" } ] } }

- ``announce`` maps family -> next hop -> list of NLRIs; ``withdraw`` maps family ->
  list of NLRIs. Either may be absent; an UPDATE can carry both.
- ``path-information`` is present only when ADD-PATH was negotiated for the family,
  and then on every NLRI, printed as a dotted quad ("0.0.0.0" for a route sent
  without one, "238.107.40.0" for 4000000000). An integer is accepted as well.
  With ``exabgp.api.compact`` an NLRI without path information is a bare string.
- ``extended-community`` values are the 8 octets as an unsigned 64-bit integer;
  ``string`` is empty for communities ExaBGP does not know (our 0x83 metrics and
  the link-bandwidth community alike), so only ``value`` is read. The list comes
  sorted by value (ExaBGP 5.0 sends them sorted, whatever the command's order):
  ``Route.ext_communities`` keeps the received order, which means nothing.
- AS path, 5.0: an object of numbered segments, element ``as-sequence`` or ``as-set``
  (5.0.15 also names confederation segments ``as-sequence``)::

      "as-path": { "0": { "element": "as-sequence", "value": [ 65001, 4200000001 ] },
                   "1": { "element": "as-set", "value": [ 65301, 65302 ] } }

  AS path, 4.2: a flat list of the sequence members, the set members in a sibling key,
  and the confederation path (ignored here) beside them::

      "as-path": [ 65001, 4200000001 ], "as-set": [ 65301, 65302 ], "confederation-path": []

End-of-RIB, ``neighbor.message``: ``{ "eor": { "afi": "ipv4", "safi": "unicast" } }``.

Session state (``type: state``): ``neighbor.state`` is ``connected``, ``up`` or ``down``;
a down carries ``reason``, whose wording differs between versions ("notification
received (6,4)" / "peer reset, message (notification received (6,3)) error(...)").

NOTIFICATION (``type: notification``), ``neighbor.notification``:
``{ "code": 6, "subcode": 3, "data": "0x5065...", "message": "Peer De-configured" }``
(``message`` is 5.0 only). When ExaBGP itself stops it writes, without ``neighbor``:
``{ ..., "type": "notification", "notification": "shutdown" }``.

Other types (``open``, ``keepalive``, ``refresh``, ``operational``, ``negotiated``,
``fsm``, ``signal``) become :class:`Ignored`. ExaBGP 4.2 writes ``refresh`` lines
that are not valid JSON (``"afi": ""ipv4""``); they are recognised and ignored.
The command acknowledgements ``done``/``error``/``shutdown`` (text, or JSON
``{ "answer": ... }``) that share the process's stdin are ignored with kind ``ack``.

Mapping of an UPDATE: one :class:`RouteUpdate` per line. Every NLRI of a known
family becomes one :class:`Route` carrying its own next hop and path id and the
UPDATE's attributes (the attribute tuples are shared, not copied); withdrawn
NLRIs become :class:`RouteKey`. Families other than IPv4/IPv6 unicast are left
out; an UPDATE with nothing else is :class:`Ignored`. ExaBGP's MP_REACH decoder
reads each NLRI once per next hop, so a global + link-local IPv6 next hop would
print every NLRI under both (read from the 5.0 source, not captured); the copy
under the link-local next hop is dropped when a global one is there.

How: the usual UPDATE (one unicast family under one next hop, one AS_SEQUENCE,
nothing withdrawn: nearly every line of a busy feed) is decoded in one call into
the typed structures of :mod:`~dyncast_bgp.wire.exabgp_schema` (msgspec, in C) and
read by :func:`_typed_update`; every other line, and any the schema refuses, is
read by the standard library's scanner and :func:`_event`, which word the errors
(decision 0012). Property tests hold both readers equal wherever the first answers.

Addresses and prefixes are read strictly (``inet_pton``; host bits must be
zero); an IPv6 scope id (``fe80::1%eth0``), which ExaBGP does not print, is an error.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import socket
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Literal, NamedTuple, TypeVar

from dyncast_bgp.model import IPAddress, IPNetwork
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES, Community, decode, from_u64, split_communities
from dyncast_bgp.wire.exabgp_schema import UNSET as _UNSET
from dyncast_bgp.wire.exabgp_schema import decode_line as _decode_line

__all__ = [
    "FAMILIES",
    "EndOfRib",
    "Event",
    "ExabgpJsonError",
    "Family",
    "Ignored",
    "Notification",
    "PeerState",
    "Route",
    "RouteKey",
    "RouteUpdate",
    "SessionState",
    "Shutdown",
    "parse_line",
]

Family = Literal["ipv4 unicast", "ipv6 unicast"]
FAMILIES: Final[tuple[Family, ...]] = ("ipv4 unicast", "ipv6 unicast")
EXCERPT_CHARS: Final = 200
_FAMILY_VERSION: Final[dict[str, int]] = {"ipv4 unicast": 4, "ipv6 unicast": 6}


def family_of(version: int) -> Family:
    """The unicast family of IP ``version`` (4 or 6), as ExaBGP names it."""
    return "ipv4 unicast" if version == 4 else "ipv6 unicast"


def version_of(family: Family) -> int:
    """The IP version of a unicast family."""
    return _FAMILY_VERSION[family]

_UNUSED_TYPES: Final = frozenset({"open", "keepalive", "refresh", "operational", "negotiated", "fsm", "signal"})
_ACKS: Final = frozenset({"done", "error", "shutdown"})
_UINT32: Final = 1 << 32
_UINT64: Final = 1 << 64
_T = TypeVar("_T")
# Memo sizes: peers + next hops (instance bindings), service prefixes, path ids,
# community values. A cached /32 network costs about 0.5 KB: ~15 MB at most in all.
_CACHE_ADDRESSES: Final = 1 << 14
_CACHE_NETWORKS: Final = 1 << 14
_CACHE_PATH_IDS: Final = 1 << 12
_CACHE_COMMUNITIES: Final = 1 << 14
_CACHE_PACKERS: Final = 64
# Route(...) etc. without the Python frame of a NamedTuple's generated __new__ (the fields are in order)
_new: Final = tuple.__new__
_packers: dict[int, Callable[..., bytes]] = {}  # count -> struct pack of that many 64-bit big-endian integers


def _packer(count: int) -> Callable[..., bytes]:
    """The pack of ``count`` extended communities' 8 octets each (``struct.error`` outside 0..2**64-1)."""
    pack = _packers.get(count)
    if pack is None:
        pack = struct.Struct(f">{count}Q").pack
        if count <= _CACHE_PACKERS:  # a line with any other count is packed, not remembered
            _packers[count] = pack
    return pack


# json.loads without its wrappers: the same scanner (C), called as JSONDecoder.raw_decode calls it. It
# returns (value, end) or raises StopIteration when there is no value at all; it holds no state between calls.
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


class ExabgpJsonError(ValueError):
    """A line that is not ExaBGP JSON we understand. Log it and skip the line.

    ``message`` says what is wrong, ``excerpt`` is the line cut to about
    200 characters; ``str(error)`` shows both.
    """

    def __init__(self, message: str, excerpt: str) -> None:
        super().__init__(f"{message}: {excerpt!r}")
        self.message = message
        self.excerpt = excerpt


class SessionState(enum.StrEnum):
    """ExaBGP's neighbor-changes states."""

    CONNECTED = "connected"
    UP = "up"
    DOWN = "down"


class RouteKey(NamedTuple):
    """What identifies a route from one peer: prefix and ADD-PATH path id (0 without ADD-PATH)."""

    prefix: IPNetwork
    path_id: int = 0

    def __str__(self) -> str:
        return f"{self.prefix}#{self.path_id}" if self.path_id else str(self.prefix)


class Route(NamedTuple):
    """One announced path with the attributes dyncast uses.

    ``as_path`` holds the AS_SEQUENCE members in order, ``as_set`` the AS_SET
    members (both empty when the path is). ``ext_raw`` holds the raw extended
    communities in the order received, 8 octets each, one after the other: the
    parsers pack them so from ExaBGP's 64-bit integers (one ``struct`` call per
    UPDATE), and the RIB's decoders read that one object whole (the columns of
    a full recompute join 160,000 of them, where a tuple per route would be
    joined first). ``ext_communities`` splits it, for readers of single
    communities. A length not a multiple of 8 is refused by the decoders
    (``WireError``); ``Rib.check_invariants`` checks it.

    A NamedTuple, not a frozen dataclass: the parser builds one per NLRI, and a
    frozen dataclass sets each of its nine fields through ``object.__setattr__``.
    """

    prefix: IPNetwork
    next_hop: IPAddress
    path_id: int = 0
    as_path: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    med: int | None = None
    local_pref: int | None = None
    origin: str | None = None
    ext_raw: bytes = b""

    @property
    def ext_communities(self) -> tuple[bytes, ...]:
        """``ext_raw`` as one 8-octet extended community each."""
        return tuple(split_communities(self.ext_raw))

    @property
    def key(self) -> RouteKey:
        return RouteKey(self.prefix, self.path_id)

    @property
    def family(self) -> Family:
        return family_of(self.prefix.version)

    @property
    def as_path_length(self) -> int:
        """Path length for best-path selection: an AS_SET counts as one (RFC 4271 9.1.2.2)."""
        return len(self.as_path) + (1 if self.as_set else 0)

    def communities(self, metric_types: frozenset[int] | range = EXPERIMENTAL_TYPES) -> tuple[Community, ...]:
        """The extended communities decoded (metric, link bandwidth, or opaque)."""
        return tuple(decode(raw, metric_types=metric_types) for raw in self.ext_communities)


class RouteUpdate(NamedTuple):
    """One UPDATE from ``peer``. Apply ``withdrawn`` first, then ``announced``."""

    peer: IPAddress
    announced: tuple[Route, ...] = ()
    withdrawn: tuple[RouteKey, ...] = ()


@dataclass(frozen=True, slots=True)
class EndOfRib:
    """The peer has sent its whole table for ``family`` (RFC 4724 End-of-RIB marker)."""

    peer: IPAddress
    family: Family


@dataclass(frozen=True, slots=True)
class PeerState:
    """The session with ``peer`` changed state; ``reason`` is ExaBGP's text for a down."""

    peer: IPAddress
    state: SessionState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Notification:
    """A BGP NOTIFICATION received from (or, ``received=False``, sent to) ``peer``."""

    peer: IPAddress
    code: int
    subcode: int
    data: bytes = b""
    message: str | None = None
    received: bool = True


@dataclass(frozen=True, slots=True)
class Shutdown:
    """ExaBGP itself is stopping (it will close every session)."""


@dataclass(frozen=True, slots=True)
class Ignored:
    """A well-formed line dyncast does not use: ``kind`` is the message type (or ``ack``, ``blank``)."""

    kind: str
    reason: str


Event = RouteUpdate | EndOfRib | PeerState | Notification | Shutdown | Ignored


class _MalformedError(Exception):
    """Internal: what is wrong, before the line is attached."""


def parse_line(line: str) -> Event:
    """Parse one line written by ExaBGP to a JSON-encoded API process.

    Raises :class:`ExabgpJsonError` for anything malformed or unexpected.
    """
    text = line
    if not text.startswith("{"):  # ExaBGP's JSON lines start with the brace
        text = line.strip()
        if not text:
            return Ignored("blank", "empty line")
        if text in _ACKS:
            return Ignored("ack", text)
        if not text.startswith("{"):
            raise ExabgpJsonError("not a JSON object", _excerpt(line))
    try:
        update = _typed_update(text)
    except Exception:  # anything the schema refuses, or odd, is the general path's to read and word
        update = None
    if update is not None:
        return update
    try:
        data, end = _scan_once(text, 0)
    except StopIteration as stop:  # no JSON value at all, worded as json.loads words it
        return _invalid_json(line, json.JSONDecodeError("Expecting value", text, stop.value))
    except (ValueError, RecursionError) as exc:
        return _invalid_json(line, exc)
    if end != len(text) and text[end:].strip(" \t\n\r"):
        return _invalid_json(line, ValueError(f"extra data after the object at offset {end}"))
    try:
        return _event(data)
    except _MalformedError as exc:
        raise ExabgpJsonError(str(exc), _excerpt(line)) from None
    except KeyError as exc:
        raise ExabgpJsonError(f"missing key {exc}", _excerpt(line)) from None
    except (TypeError, ValueError, AttributeError, IndexError, OverflowError, RecursionError) as exc:
        raise ExabgpJsonError(f"unexpected value ({type(exc).__name__}: {exc})", _excerpt(line)) from None


_DIGIT_RUNS: Final = re.compile(r"[0-9]+")


def _typed_update(text: str) -> RouteUpdate | None:
    """The usual line, read through the typed schema (:mod:`~dyncast_bgp.wire.exabgp_schema`, in C): a
    received UPDATE announcing routes of one unicast family under one next hop, with the usual attributes
    (an AS path of one AS_SEQUENCE, 5.0 or 4.2 shape), and nothing withdrawn; or one withdrawing unicast
    routes and announcing nothing (the withdrawals decoded as ``json`` would, and read by the general path's
    own reader). None for anything else, and
    it raises for what the schema refuses (not JSON, another shape, a value of the wrong type or out of
    range) or an address or prefix that does not parse: the general path (``json`` and :func:`_event`)
    reads those lines and words the errors. Where this returns an update, the general path returns an
    equal one (hypothesis properties hold them equal on generated, mutated and re-spaced lines).
    """
    limit = sys.get_int_max_str_digits()
    if limit and len(text) > limit and max(map(len, _DIGIT_RUNS.findall(text))) > limit:
        return None  # json refuses such an integer anywhere, where the schema skips keys it does not read
    data = _decode_line(text)
    if data.type != "update":
        return None
    neighbor = data.neighbor
    peer_text = neighbor.address.peer
    peer = _addresses.get(peer_text)  # the memos inline (a miss: the general function, which fills them)
    if peer is None:
        peer = _address(peer_text)
    if neighbor.direction != "receive":
        return None
    body = neighbor.message.update
    announce = body.announce
    if body.withdraw is not _UNSET:  # withdrawals only (what an agent sends for a failed instance): read as the
        if announce is not _UNSET:   # general path reads them; with announcements too: the general path's
            return None
        withdrawn = _withdrawn(body.withdraw)
        return _new(RouteUpdate, (peer, (), withdrawn)) if withdrawn else None
    if announce is _UNSET or len(announce) != 1:
        return None
    ((family, by_next_hop),) = announce.items()
    version = _FAMILY_VERSION.get(family)
    if version is None or len(by_next_hop) != 1:
        return None
    ((next_hop_text, nlris),) = by_next_hop.items()
    if not nlris:
        return None
    next_hop = _addresses.get(next_hop_text)
    if next_hop is None:
        next_hop = _address(next_hop_text)
    attribute = body.attribute
    if attribute is _UNSET or attribute.as_set is not _UNSET:
        return None
    value = attribute.as_path
    if value is None:
        as_path: tuple[int, ...] = ()
    elif value.__class__ is dict:  # 5.0: {"0": {"element": "as-sequence", "value": [...]}}
        if len(value) != 1:
            return None
        (segment,) = value.values()
        if segment.element != "as-sequence":
            return None
        as_path = tuple(segment.value)
    else:
        as_path = tuple(value)  # type: ignore[arg-type]
    communities = attribute.extended_community
    raw = b"" if communities is None else _packer(len(communities))(*[item.value for item in communities])
    attrs = (as_path, (), attribute.med, attribute.local_preference, attribute.origin, raw)
    routes = []
    for item in nlris:
        prefix_text = item.nlri
        network = _networks.get(prefix_text)
        prefix, prefix_version = _network(prefix_text) if network is None else network
        if prefix_version != version:
            return None
        info = item.path_information
        path_id = 0 if info is None else _path_ids.get(info)  # type: ignore[arg-type]  # None: not memoised yet
        if path_id is None:
            path_id = _path_id(info)
        routes.append(_new(Route, (prefix, next_hop, path_id, *attrs)))
    return _new(RouteUpdate, (peer, tuple(routes), ()))


def _invalid_json(line: str, error: Exception) -> Ignored:
    """A line that is not JSON: an error, unless it is one of ExaBGP 4.2's route-refresh lines."""
    if _is_v42_refresh(line):
        return Ignored("refresh", "ExaBGP 4.2 writes route-refresh lines as invalid JSON")
    raise ExabgpJsonError(f"invalid JSON ({error})", _excerpt(line)) from None


def _excerpt(line: str) -> str:
    text = line.rstrip("\r\n")
    return text if len(text) <= EXCERPT_CHARS else text[:EXCERPT_CHARS] + "..."


def _is_v42_refresh(text: str) -> bool:
    return '"type": "refresh"' in text and '"route-refresh": {' in text


def _event(data: Any) -> Event:
    """Dispatch on ``type``: ``{"exabgp": "5.0.0", "type": "update", "neighbor": {...}}``."""
    if not isinstance(data, dict):
        raise _MalformedError("not a JSON object")
    if "exabgp" not in data:
        if "answer" in data:  # { "answer": "done", "message": "command completed" }
            return Ignored("ack", _text(data["answer"], "answer"))
        raise _MalformedError('no "exabgp" version key')
    kind = data["type"]
    if kind == "update":
        return _update(data["neighbor"])
    if kind == "state":
        return _state(data["neighbor"])
    if kind == "notification":
        return _notification(data)
    if not isinstance(kind, str):
        raise _MalformedError(f"type is not a string: {kind!r}")
    if kind in _UNUSED_TYPES:
        return Ignored(kind, "message type not used by dyncast")
    return Ignored(kind, "unknown message type")


def _peer(neighbor: Any) -> IPAddress:
    """``neighbor.address.peer``."""
    return _address(neighbor["address"]["peer"])


def _state(neighbor: Any) -> PeerState:
    """``{"address": {...}, "state": "down", "reason": "..."}``."""
    peer = _peer(neighbor)
    state = neighbor["state"]
    if state not in _STATES:
        raise _MalformedError(f"unknown session state {state!r}")
    reason = neighbor.get("reason")
    return PeerState(peer, _STATES[state], None if reason is None else _text(reason, "reason"))


_STATES: Final[dict[str, SessionState]] = {state.value: state for state in SessionState}


def _notification(data: dict[str, Any]) -> Notification | Shutdown:
    """``neighbor.notification = {"code", "subcode", "data": "0x..", "message"?}``, or the shutdown line."""
    if "neighbor" not in data and data.get("notification") == "shutdown":
        return Shutdown()
    neighbor = data["neighbor"]
    peer = _peer(neighbor)
    body = neighbor["notification"]
    message = body.get("message")
    return Notification(peer, _uint(body["code"], "code", 256), _uint(body["subcode"], "subcode", 256),
                        _hex_data(body.get("data", "")),
                        None if message is None else _text(message, "message"),
                        _received(neighbor))


def _received(neighbor: Any) -> bool:
    """``direction``: "receive" (absent on state lines) or "send" (with ``send { ... }`` in the API config)."""
    direction = neighbor.get("direction", "receive")
    if direction == "receive":
        return True
    if direction == "send":
        return False
    raise _MalformedError(f"unknown direction {direction!r}"[:120])


def _hex_data(value: Any) -> bytes:
    text = _text(value, "notification data")
    if text[:2] in ("0x", "0X"):
        text = text[2:]
    return bytes.fromhex(text)


def _update(neighbor: Any) -> RouteUpdate | EndOfRib | Ignored:
    """``neighbor.message`` holds ``update`` (routes) or ``eor``."""
    peer = _peer(neighbor)
    if not _received(neighbor):
        return Ignored("update", "an UPDATE sent to the peer, not received")
    message = neighbor["message"]
    body = message.get("update")
    if body is None:
        return _eor(peer, message["eor"])
    if body.__class__ is not dict:
        raise _MalformedError("update is not an object")
    announce = body.get("announce")
    withdraw = body.get("withdraw")
    announced = () if announce is None else _announced(announce, body.get("attribute"))
    withdrawn = () if withdraw is None else _withdrawn(withdraw)
    if not announced and not withdrawn:
        families = sorted({*_keys(announce), *_keys(withdraw)})
        return Ignored("update", f"no IPv4/IPv6 unicast routes (families: {', '.join(families) or 'none'})")
    return _new(RouteUpdate, (peer, announced, withdrawn))


def _keys(value: Any) -> list[str]:
    return [str(key) for key in value] if isinstance(value, dict) else []


def _eor(peer: IPAddress, body: Any) -> EndOfRib | Ignored:
    """``{"afi": "ipv4", "safi": "unicast"}``."""
    family = f"{_text(body['afi'], 'afi')} {_text(body['safi'], 'safi')}"
    if family == "ipv4 unicast":
        return EndOfRib(peer, "ipv4 unicast")
    if family == "ipv6 unicast":
        return EndOfRib(peer, "ipv6 unicast")
    return Ignored("eor", f"end-of-RIB for {family}, a family dyncast does not use")


def _announced(announce: Any, attribute: Any) -> tuple[Route, ...]:
    """``{family: {next_hop: [nlri, ...]}}`` -> routes of the unicast families."""
    if announce.__class__ is not dict:
        raise _MalformedError("announce is not an object")
    routes: list[Route] = []
    attrs: _Attributes | None = None
    for family, by_next_hop in announce.items():
        version = _FAMILY_VERSION.get(family)
        if version is None:
            continue
        if attrs is None:
            attrs = _attributes(attribute)
        if by_next_hop.__class__ is not dict:
            raise _MalformedError(f"announce[{family!r}] is not an object")
        if len(by_next_hop) == 1:
            for next_hop, nlris in by_next_hop.items():
                _add_routes(routes, version, next_hop, nlris, attrs)
        else:
            found: list[Route] = []
            for next_hop, nlris in by_next_hop.items():
                _add_routes(found, version, next_hop, nlris, attrs)
            routes.extend(_prefer_global(found))
    return tuple(routes)


def _add_routes(routes: list[Route], version: int, next_hop_text: Any, nlris: Any, attrs: _Attributes) -> None:
    """Append a route per NLRI of one next hop: ``[{"nlri": ..., "path-information": ...}, ...]``."""
    next_hop = _address(next_hop_text)
    if nlris.__class__ is not list:
        raise _MalformedError(f"NLRIs of next hop {next_hop} are not a list")
    as_path, as_set, med, local_pref, origin, communities = attrs
    add = routes.append
    for item in nlris:
        if item.__class__ is dict:  # the usual form, _nlri inline
            prefix, prefix_version = _network(item["nlri"])
            info = item.get("path-information")
            path_id = 0 if info is None else _path_id(info)
            if prefix_version != version:
                raise _MalformedError(f"prefix {prefix} is not IPv{version}")
        else:
            prefix, path_id = _nlri(item, version)
        add(_new(Route, (prefix, next_hop, path_id, as_path, as_set, med, local_pref, origin, communities)))


def _prefer_global(routes: list[Route]) -> list[Route]:
    """One route per key: a copy under a link-local next hop loses to one under a global next hop."""
    chosen: dict[RouteKey, Route] = {}
    for route in routes:
        key = route.key
        held = chosen.get(key)
        if held is None or (held.next_hop.is_link_local and not route.next_hop.is_link_local):
            chosen[key] = route
    return list(chosen.values())


def _withdrawn(withdraw: Any) -> tuple[RouteKey, ...]:
    """``{family: [nlri, ...]}`` -> keys of the unicast families."""
    if withdraw.__class__ is not dict:
        raise _MalformedError("withdraw is not an object")
    keys: list[RouteKey] = []
    for family, nlris in withdraw.items():
        version = _FAMILY_VERSION.get(family)
        if version is None:
            continue
        if nlris.__class__ is not list:
            raise _MalformedError(f"withdraw[{family!r}] is not a list")
        for item in nlris:
            keys.append(_new(RouteKey, _nlri(item, version)))
    return tuple(keys)


def _nlri(item: Any, version: int) -> tuple[IPNetwork, int]:
    """``{"nlri": "203.0.113.10/32", "path-information": "0.0.0.1"}`` or, compact, ``"203.0.113.10/32"``."""
    if item.__class__ is dict:
        prefix, prefix_version = _network(item["nlri"])
        info = item.get("path-information")
        path_id = 0 if info is None else _path_id(info)
    elif item.__class__ is str:
        (prefix, prefix_version), path_id = _network(item), 0
    else:
        raise _MalformedError(f"NLRI is neither an object nor a string: {item!r}"[:120])
    if prefix_version != version:
        raise _MalformedError(f"prefix {prefix} is not IPv{version}")
    return prefix, path_id


# The attributes shared by every route of one UPDATE:
# (as_path, as_set, med, local_pref, origin, ext_raw)
_Attributes = tuple[tuple[int, ...], tuple[int, ...], int | None, int | None, str | None, bytes]
_NO_ATTRIBUTES: Final[_Attributes] = ((), (), None, None, None, b"")


def _attributes(attribute: Any) -> _Attributes:
    """``{"origin", "as-path", "as-set"?, "med", "local-preference", "extended-community"}``; others ignored."""
    if attribute is None:
        return _NO_ATTRIBUTES
    if attribute.__class__ is not dict:
        raise _MalformedError("attribute is not an object")
    get = attribute.get
    as_path, as_set = _as_path(get("as-path"))
    if "as-set" in attribute:  # 4.2 prints the AS_SET members beside the sequence
        as_set = as_set + _asns(attribute["as-set"])
    med = get("med")
    if med is not None:
        _check_uint(med, "med")
    local_pref = get("local-preference")
    if local_pref is not None:
        _check_uint(local_pref, "local-preference")
    origin = get("origin")
    if origin is not None and origin.__class__ is not str:
        raise _MalformedError(f"origin is not a string: {origin!r}"[:120])
    communities = get("extended-community")
    if communities is None:
        return as_path, as_set, med, local_pref, origin, b""
    if communities.__class__ is not list:
        raise _MalformedError("extended-community is not a list")
    # [ { "value": <u64>, "string": "..." } ] -> the 8 octets of each; anything but an int in range goes
    # through from_u64 (via _u64), which words the error
    values = [item["value"] for item in communities]
    return as_path, as_set, med, local_pref, origin, b"".join([
        value.to_bytes(8, "big") if value.__class__ is int and 0 <= value < _UINT64 else _u64(value)
        for value in values])


def _as_path(value: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sequence members, set members) from the 5.0 object or the 4.2 list."""
    if value is None:
        return (), ()
    if value.__class__ is list:  # 4.2: [ 65001, 65100 ]
        return _asns(value), ()
    if value.__class__ is not dict:
        raise _MalformedError("as-path is neither an object nor a list")
    segments = value.values() if len(value) < 2 else [value[key] for key in sorted(value, key=int)]
    sequence: tuple[int, ...] = ()
    as_set: tuple[int, ...] = ()
    for segment in segments:  # 5.0: {"0": {"element": "as-sequence", "value": [...]}}
        element = segment["element"]
        if element == "as-sequence":
            sequence += _asns(segment["value"])
        elif element == "as-set":
            as_set += _asns(segment["value"])
        elif not (isinstance(element, str) and "confed" in element):
            raise _MalformedError(f"unknown as-path segment {element!r}"[:120])
    return sequence, as_set


def _asns(value: Any) -> tuple[int, ...]:
    if value.__class__ is not list:
        raise _MalformedError("AS numbers are not a list")
    for asn in value:
        if asn.__class__ is not int or not 0 <= asn < _UINT32:
            raise _MalformedError(f"not an AS number: {asn!r}"[:120])
    return tuple(value)


def _check_uint(value: Any, what: str) -> None:
    if value.__class__ is not int or not 0 <= value < _UINT32:
        raise _MalformedError(f"{what} is not a 32-bit unsigned integer: {value!r}"[:120])


def _uint(value: Any, what: str, limit: int) -> int:
    if value.__class__ is not int or not 0 <= value < limit:
        raise _MalformedError(f"{what} is not an integer in 0..{limit - 1}: {value!r}"[:120])
    result: int = value
    return result


def _text(value: Any, what: str) -> str:
    if value.__class__ is not str:
        raise _MalformedError(f"{what} is not a string: {value!r}"[:120])
    result: str = value
    return result


# Text to ipaddress objects dominates the cost of a line; the same peers, next
# hops, service prefixes and path ids recur, so results are memoised by their
# text (bounded: a full memo is emptied). Only strings are keys, so a hit is for
# the very same text, never for an equal value of another type (True and 1).
# Plain dicts, not lru_cache: _typed_update reads them inline.
_addresses: dict[str, IPAddress] = {}
_networks: dict[str, tuple[IPNetwork, int]] = {}
_path_ids: dict[str, int] = {}


def _remember(memo: dict[str, _T], size: int, text: str, value: _T) -> _T:
    if len(memo) >= size:
        memo.clear()
    memo[text] = value
    return value


def _address(value: Any) -> IPAddress:
    """An address as ExaBGP prints it (peer, next hop)."""
    if value.__class__ is not str:
        raise _MalformedError(f"address is not a string: {value!r}"[:120])
    address = _addresses.get(value)
    if address is None:
        address = _remember(_addresses, _CACHE_ADDRESSES, value, _parse_address(value))
    return address


def _network(value: Any) -> tuple[IPNetwork, int]:
    """A prefix as ExaBGP prints it, host bits zero: ``203.0.113.0/24`` (a bare address is a host route).

    With its IP version (4 or 6): ``network.version`` is a Python property, read for every NLRI.
    """
    if value.__class__ is not str:
        raise _MalformedError(f"prefix is not a string: {value!r}"[:120])
    network = _networks.get(value)
    if network is None:
        network = _remember(_networks, _CACHE_NETWORKS, value, _parse_network(value))
    return network


def _parse_network(text: str) -> tuple[IPNetwork, int]:
    address, slash, length = text.partition("/")
    if slash and not (length.isascii() and length.isdigit() and len(length) <= 3):
        raise _MalformedError(f"bad prefix length in {text!r}"[:120])
    if ":" in address:
        return ipaddress.IPv6Network((_packed(socket.AF_INET6, address), int(length) if slash else 128),
                                     strict=True), 6
    return ipaddress.IPv4Network((_packed(socket.AF_INET, address), int(length) if slash else 32), strict=True), 4


def _path_id(value: Any) -> int:
    """ADD-PATH path identifier: ``"0.0.0.1"`` (what ExaBGP prints) or ``1``."""
    if value.__class__ is not str:
        return _uint(value, "path-information", _UINT32)
    path_id = _path_ids.get(value)
    if path_id is None:
        if value.isascii() and value.isdigit():
            path_id = _uint(int(value), "path-information", _UINT32)
        else:
            path_id = _packed(socket.AF_INET, value)
        _remember(_path_ids, _CACHE_PATH_IDS, value, path_id)
    return path_id


@lru_cache(maxsize=_CACHE_COMMUNITIES, typed=True)
def _u64(value: Any) -> bytes:
    """An extended community from ExaBGP's unsigned 64-bit integer."""
    return from_u64(value)


def _parse_address(text: str) -> IPAddress:
    if ":" in text:
        return ipaddress.IPv6Address(_packed(socket.AF_INET6, text))
    return ipaddress.IPv4Address(_packed(socket.AF_INET, text))


def _packed(family: socket.AddressFamily, text: str) -> int:
    """inet_pton (strict: four decimal octets, no leading zeros, for IPv4) as an integer."""
    try:
        return int.from_bytes(socket.inet_pton(family, text), "big")
    except OSError:
        raise _MalformedError(f"not an IP address: {text!r}"[:120]) from None
