"""Properties of the ExaBGP JSON parser.

1. Whatever the input (arbitrary text, arbitrary JSON, captured lines with keys
   dropped, values replaced or retyped, text cut or spliced), parse_line returns
   a well-typed event or raises ExabgpJsonError, nothing else.
2. UPDATEs built in the captured 5.0 and 4.2 shapes from arbitrary routes parse
   back to exactly those routes.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.wire.exabgp_json import (
    Event,
    ExabgpJsonError,
    Ignored,
    Route,
    RouteKey,
    RouteUpdate,
    _event,
    _MalformedError,
    _typed_update,
    parse_line,
)
from tests.fuzz.strategies import CAPTURED, DECODABLE, tree_positions
from tests.fuzz.targets import check_event, check_exabgp_error

UPDATE_TEMPLATES = {
    version: json.loads(next(line for line in DECODABLE if f'"exabgp": "{version}"' in line and '"announce"' in line))
    for version in ("5.0.0", "4.0.1")
}


def check(line: str) -> Event | ExabgpJsonError:
    """parse_line's outcome, asserting it is a well-typed event or our error (the fuzz targets' checks)."""
    try:
        event = parse_line(line)
    except ExabgpJsonError as error:
        check_exabgp_error(error)
        return error
    check_event(event)
    return event


# ------------------------------------------------------------------ never anything but ExabgpJsonError

EXABGP_KEYS = ["exabgp", "type", "neighbor", "address", "peer", "local", "direction", "message", "update",
               "announce", "withdraw", "attribute", "nlri", "path-information", "as-path", "as-set", "med",
               "local-preference", "origin", "extended-community", "value", "element", "eor", "afi", "safi",
               "state", "reason", "notification", "code", "subcode", "data", "answer", "ipv4 unicast",
               "ipv6 unicast", "192.0.2.1", "2001:db8::1", "0"]
EXABGP_WORDS = ["update", "state", "notification", "up", "down", "connected", "receive", "send", "ipv4", "ipv6",
                "unicast", "flow", "as-sequence", "as-set", "shutdown", "127.0.0.1", "::1", "fe80::1",
                "10.0.0.0/8", "2001:db8::/32", "0.0.0.1", "0x0102", "5.0.0", "4.0.1"]

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70)
                | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20) | st.sampled_from(EXABGP_WORDS))
json_values = st.recursive(
    json_scalars,
    lambda children: (st.lists(children, max_size=4)
                      | st.dictionaries(st.sampled_from(EXABGP_KEYS) | st.text(max_size=8), children, max_size=5)),
    max_leaves=30,
)


@given(st.text())
def test_arbitrary_text(text: str) -> None:
    check(text)


@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    check(json.dumps(value))


@given(st.sampled_from(["update", "state", "notification", "open"]), json_values)
def test_arbitrary_neighbor_objects(kind: str, neighbor: Any) -> None:
    check(json.dumps({"exabgp": "5.0.0", "type": kind, "neighbor": neighbor}))


def _retyped(value: Any) -> list[Any]:
    """The same content in other JSON types."""
    text = json.dumps(value)
    return [text, [value], {"value": value}, None, True, -1, 1 << 64, 1.5, "", []]


@settings(max_examples=300)
@given(st.data())
def test_mutated_captured_lines(data: st.DataObject) -> None:
    original = json.loads(data.draw(st.sampled_from(DECODABLE)))
    tree = copy.deepcopy(original)
    path = data.draw(st.sampled_from(tree_positions(tree)[1:]))
    parent = tree
    for step in path[:-1]:
        parent = parent[step]
    action = data.draw(st.sampled_from(["drop", "replace", "retype"]))
    if action == "drop":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = data.draw(json_values)
    else:
        parent[path[-1]] = data.draw(st.sampled_from(_retyped(parent[path[-1]])))
    check(json.dumps(tree))


@settings(max_examples=300)
@given(st.sampled_from(CAPTURED), st.integers(min_value=0, max_value=2000), st.text(max_size=3),
       st.integers(min_value=0, max_value=3))
def test_spliced_captured_lines(line: str, at: int, insert: str, drop: int) -> None:
    position = at % (len(line) + 1)
    check(line[:position] + insert + line[position + drop:])
    check(line[:position])


# ------------------------------------------------------------------ arbitrary routes in the real shapes


@st.composite
def networks(draw: st.DrawFn, version: Literal[4, 6]) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    address = draw(st.ip_addresses(v=version))
    length = draw(st.integers(min_value=0, max_value=address.max_prefixlen))
    return ipaddress.ip_network((address, length), strict=False)


@st.composite
def updates(draw: st.DrawFn) -> tuple[list[Route], list[RouteKey], bool]:
    """Routes sharing one set of attributes, keys to withdraw, and whether ADD-PATH is on."""
    addpath = draw(st.booleans())
    path_ids = st.integers(min_value=0, max_value=(1 << 32) - 1) if addpath else st.just(0)
    asns = st.lists(st.integers(min_value=0, max_value=(1 << 32) - 1), max_size=5).map(tuple)
    attrs = {
        "as_path": draw(asns), "as_set": draw(asns),
        "med": draw(st.none() | st.integers(min_value=0, max_value=(1 << 32) - 1)),
        "local_pref": draw(st.none() | st.integers(min_value=0, max_value=(1 << 32) - 1)),
        "origin": draw(st.none() | st.sampled_from(["igp", "egp", "incomplete"])),
        "ext_raw": b"".join(draw(st.lists(st.binary(min_size=8, max_size=8), max_size=5))),
    }
    routes: dict[RouteKey, Route] = {}
    versions: list[Literal[4, 6]] = draw(st.lists(st.sampled_from([4, 6]), max_size=2, unique=True))
    for version in versions:
        any_address = st.ip_addresses(v=4) | st.ip_addresses(v=6)
        next_hops = draw(st.lists(any_address.filter(lambda a: not a.is_link_local), min_size=1, max_size=3,
                                  unique=True))
        for next_hop in next_hops:
            for prefix in draw(st.lists(networks(version), min_size=1, max_size=4)):
                key = RouteKey(prefix, draw(path_ids))
                routes.setdefault(key, Route(prefix, next_hop, key.path_id, **attrs))  # type: ignore[arg-type]
    withdrawn = {RouteKey(prefix, draw(path_ids))
                 for prefix in draw(st.lists(networks(4) | networks(6), max_size=4))}
    return list(routes.values()), sorted(withdrawn, key=_key_order), addpath


@st.composite
def usual_updates(draw: st.DrawFn) -> tuple[list[Route], bool]:
    """Routes of one usual UPDATE (one unicast family under one next hop, no AS_SET), ADD-PATH or not: the
    lines the typed path takes, before a test mutates them."""
    routes, _, addpath = draw(updates())
    if not routes:
        routes = [Route(ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_address("192.0.2.1"))]
    first = routes[0]
    usual = [route._replace(next_hop=first.next_hop, as_set=()) for route in routes
             if route.prefix.version == first.prefix.version]
    return list({route.key: route for route in usual}.values()), addpath


def _nlri(prefix: Any, path_id: int, addpath: bool, as_int: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"nlri": str(prefix)}
    if addpath:
        item["path-information"] = path_id if as_int else str(ipaddress.IPv4Address(path_id))
    return item


def _family(prefix: Any) -> str:
    return f"ipv{prefix.version} unicast"


def render(version: str, routes: list[Route], withdrawn: list[RouteKey], addpath: bool, as_int: bool) -> str:
    """An UPDATE line in the captured shape of ExaBGP ``version`` (5.0.0 or 4.0.1)."""
    line = copy.deepcopy(UPDATE_TEMPLATES[version])
    body: dict[str, Any] = {}
    if routes:
        first = routes[0]
        attribute: dict[str, Any] = {}
        if first.origin is not None:
            attribute["origin"] = first.origin
        if version == "5.0.0":
            segments = [("as-sequence", first.as_path), ("as-set", first.as_set)]
            present = [(element, list(asns)) for element, asns in segments if asns]
            if present:
                attribute["as-path"] = {str(index): {"element": element, "value": asns}
                                        for index, (element, asns) in enumerate(present)}
        elif first.as_path or first.as_set:
            attribute["as-path"] = list(first.as_path)
            if first.as_set:
                attribute["as-set"] = list(first.as_set)
            attribute["confederation-path"] = []
        if first.med is not None:
            attribute["med"] = first.med
        if first.local_pref is not None:
            attribute["local-preference"] = first.local_pref
        if first.ext_communities:
            attribute["extended-community"] = [{"value": int.from_bytes(raw, "big"), "string": ""}
                                               for raw in first.ext_communities]
        body["attribute"] = attribute
        announce: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for route in routes:
            announce.setdefault(_family(route.prefix), {}).setdefault(str(route.next_hop), []).append(
                _nlri(route.prefix, route.path_id, addpath, as_int))
        body["announce"] = announce
    if withdrawn:
        withdraw: dict[str, list[dict[str, Any]]] = {}
        for key in withdrawn:
            withdraw.setdefault(_family(key.prefix), []).append(_nlri(key.prefix, key.path_id, addpath, as_int))
        body["withdraw"] = withdraw
    line["neighbor"]["message"] = {"update": body}
    return json.dumps(line)


@settings(max_examples=300)
@given(updates(), st.sampled_from(["5.0.0", "4.0.1"]), st.booleans())
def test_rendered_updates_parse_back(update: tuple[list[Route], list[RouteKey], bool], version: str,
                                     as_int: bool) -> None:
    routes, withdrawn, addpath = update
    event = parse_line(render(version, routes, withdrawn, addpath, as_int))
    if not routes and not withdrawn:
        assert isinstance(event, Ignored) and event.kind == "update"
        return
    assert isinstance(event, RouteUpdate)
    assert event.peer == ipaddress.ip_address("127.0.83.1")
    assert sorted(event.announced, key=_order) == sorted(routes, key=_order)
    assert sorted(event.withdrawn, key=_key_order) == sorted(withdrawn, key=_key_order)


def _order(route: Route) -> tuple[int, int, int, int]:
    return _key_order(route.key)


def _key_order(key: RouteKey) -> tuple[int, int, int, int]:
    return (key.prefix.version, int(key.prefix.network_address), key.prefix.prefixlen, key.path_id)


# ------------------------------------------------------------------ addresses agree with the ipaddress module

address_like = (st.text(alphabet="0123456789abcdefABCDEF.:/%", max_size=45)
                | st.ip_addresses().map(str)
                | st.builds(lambda a, b: f"{a}/{b}", st.ip_addresses(), st.integers(min_value=-1, max_value=130))
                | st.builds(lambda a, b: f"{a}/{b}", st.ip_addresses(), st.text(alphabet="0123456789 +_", max_size=4)))


def _with_announce(family: str, next_hop: str, nlri: str) -> str:
    line = copy.deepcopy(UPDATE_TEMPLATES["5.0.0"])
    line["neighbor"]["message"]["update"]["announce"] = {family: {next_hop: [{"nlri": nlri}]}}
    return json.dumps(line)


@given(address_like)
def test_prefixes_parse_as_ipaddress_does(text: str) -> None:
    family = "ipv6 unicast" if ":" in text else "ipv4 unicast"
    outcome = check(_with_announce(family, "192.0.2.1", text))
    if isinstance(outcome, RouteUpdate):
        assert outcome.announced[0].prefix == ipaddress.ip_network(text, strict=True)


@given(address_like)
def test_next_hops_parse_as_ipaddress_does(text: str) -> None:
    outcome = check(_with_announce("ipv4 unicast", text, "10.0.0.0/8"))
    if isinstance(outcome, RouteUpdate):
        assert outcome.announced[0].next_hop == ipaddress.ip_address(text)


# ------------------------------------------------------------------ the typed path agrees with the general one

NASTY = st.sampled_from([None, True, False, 0, 1, -1, 1 << 32, 1 << 64, (1 << 64) - 1, 1.0, 1.5, "", "1",
                         "0.0.0.1", "as-sequence", "as-set", [], {}, [1], {"0": 1}]).map(copy.deepcopy)
"""Values that break naive readers. A copy per draw: ``sampled_from`` hands out the listed objects themselves,
and a later mutation inside an inserted ``[1]`` or ``{"0": 1}`` would change them for every later example
(hypothesis then stops the test as FlakyStrategyDefinition: generation depending on external state)."""

_GENERAL_FAILS = (_MalformedError, LookupError, TypeError, ValueError, AttributeError, OverflowError, RecursionError)


def _fast_agrees(line: str) -> Event | None:
    """The typed path on a line: None, or exactly what the general path (``json`` + ``_event``) gives.

    Whatever the typed path raises, parse_line hands the line to the general path, so only its results
    need to agree; and it must not return a result where the general path finds no JSON or raises.
    """
    try:
        fast = _typed_update(line)
    except Exception:  # parse_line falls back to the general path on any exception
        fast = None
    try:
        general: Event | None = _event(json.loads(line))
    except _GENERAL_FAILS:  # json.JSONDecodeError is a ValueError
        general = None
    if fast is not None:
        assert general == fast, (line, fast, general)
    return fast


@settings(max_examples=400)
@given(updates(), st.sampled_from(["5.0.0", "4.0.1"]), st.booleans())
def test_typed_path_equals_general_path_on_rendered_updates(update: tuple[list[Route], list[RouteKey], bool],
                                                            version: str, as_int: bool) -> None:
    routes, withdrawn, addpath = update
    line = render(version, routes, withdrawn, addpath, as_int)
    fast = _fast_agrees(line)
    families = {_family(route.prefix) for route in routes}
    next_hops = {route.next_hop for route in routes}
    usual = len(families) == 1 and len(next_hops) == 1 and not withdrawn and not routes[0].as_set
    usual = usual or (not routes and bool(withdrawn))  # withdrawals alone: the typed path too
    if usual:  # the property is not vacuous: the usual UPDATE takes the typed path
        assert fast is not None
        assert _fast_agrees(_spaced(json.loads(line), ExabgpSpacing())) is not None  # ExaBGP's own spacing too


def typed_line(version: str, routes: list[Route], addpath: bool, as_int: bool, withdraw_only: bool) -> str:
    """A line the typed path takes: ``routes`` announced (a usual UPDATE), or their keys withdrawn alone."""
    if withdraw_only:
        return render(version, [], [route.key for route in routes], addpath, as_int)
    return render(version, routes, [], addpath, as_int)


@settings(max_examples=600)
@given(usual_updates(), st.sampled_from(["5.0.0", "4.0.1"]), st.data())
def test_typed_path_equals_general_path_on_mutated_updates(update: tuple[list[Route], bool], version: str,
                                                           data: st.DataObject) -> None:
    routes, addpath = update
    tree = json.loads(typed_line(version, routes, addpath, data.draw(st.booleans()), data.draw(st.booleans())))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        positions = tree_positions(tree)[1:]
        inside = [path for path in positions if path[:3] == ("neighbor", "message", "update")]
        # mostly inside the UPDATE, where the typed path reads most (else the header's keys come first)
        mostly_inside = data.draw(st.integers(min_value=0, max_value=3)) > 0
        path = data.draw(st.sampled_from(inside if inside and mostly_inside else positions))
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        action = data.draw(st.sampled_from(["drop", "replace", "nasty", "retype", "add"]))
        if action == "drop":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = data.draw(json_values)
        elif action == "nasty":
            parent[path[-1]] = data.draw(NASTY)
        elif action == "retype":
            parent[path[-1]] = data.draw(st.sampled_from(_retyped(parent[path[-1]])))
        elif isinstance(parent, dict):
            parent[data.draw(st.sampled_from(EXABGP_KEYS))] = data.draw(json_values | NASTY)
        else:
            parent.append(data.draw(json_values | NASTY))
    _fast_agrees(json.dumps(tree))
    _fast_agrees(_spaced(tree, ExabgpSpacing()))


class ExabgpSpacing:
    """How :func:`_spaced` writes a tree: ExaBGP's own spacing by default (``{ "a": 1, "b": [ 2 ] }``), or any
    JSON whitespace, and duplicate keys (a drawn value written before or after the real one: JSON readers
    keep the last)."""

    def __init__(self, data: st.DataObject | None = None) -> None:
        self.data = data
        self.duplicated = False

    def space(self) -> str:
        if self.data is None:
            return " "
        return self.data.draw(st.text(alphabet=" \t\r\n", max_size=2))

    def duplicate(self, keys: list[str]) -> tuple[str, Any, bool] | None:
        """A key to write twice, the other value, and whether that one goes last (and wins)."""
        if self.data is None or not keys or self.data.draw(st.integers(0, 5)) != 0:  # one dict in six
            return None
        self.duplicated = True
        return (self.data.draw(st.sampled_from(keys)), self.data.draw(json_values | NASTY),
                self.data.draw(st.booleans()))


def _spaced(value: Any, how: ExabgpSpacing) -> str:
    """``value`` as JSON text, spaced and with duplicate keys as ``how`` says."""
    s = how.space
    if isinstance(value, dict):
        members = [(key, item) for key, item in value.items()]
        twice = how.duplicate(list(value))
        if twice is not None:
            key, other, last = twice
            members.insert(len(members) if last else 0, (key, other))
        inner = ",".join(f"{s()}{json.dumps(key)}{s()}:{s()}{_spaced(item, how)}{s()}" for key, item in members)
        return "{" + (inner or s()) + "}"
    if isinstance(value, list):
        inner = ",".join(f"{s()}{_spaced(item, how)}{s()}" for item in value)
        return "[" + (inner or s()) + "]"
    return json.dumps(value)


@settings(max_examples=400)
@given(usual_updates(), st.sampled_from(["5.0.0", "4.0.1"]), st.data())
def test_typed_path_equals_general_path_on_respaced_and_duplicated_keys(
        update: tuple[list[Route], bool], version: str, data: st.DataObject) -> None:
    routes, addpath = update
    tree = json.loads(typed_line(version, routes, addpath, data.draw(st.booleans()), data.draw(st.booleans())))
    how = ExabgpSpacing(data)
    fast = _fast_agrees(_spaced(tree, how))
    if not how.duplicated:  # only whitespace changed: still the usual UPDATE, read by the typed path
        assert fast is not None


TEXT_NOISE = st.text(alphabet='"\\,:{}[] \t\x00\x1f\ud800e5.-0123456789truefalsnNaI/', min_size=1, max_size=6)


@settings(max_examples=400)
@given(usual_updates(), st.sampled_from(["5.0.0", "4.0.1"]), st.data())
def test_typed_path_equals_general_path_on_spliced_text(update: tuple[list[Route], bool], version: str,
                                                        data: st.DataObject) -> None:
    """Text cut, overwritten or spliced anywhere (escapes, control characters, NaN, bare words, numbers):
    the typed path never takes a line that is not JSON, or reads it otherwise than ``json`` does."""
    routes, addpath = update
    line = typed_line(version, routes, addpath, data.draw(st.booleans()), data.draw(st.booleans()))
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        at = data.draw(st.integers(min_value=0, max_value=len(line)))
        cut = data.draw(st.integers(min_value=0, max_value=4))
        line = line[:at] + data.draw(TEXT_NOISE | st.just("")) + line[at + cut:]
    _fast_agrees(line)


def test_captured_lines_take_the_typed_path_as_the_general_one_reads_them() -> None:
    """Every captured line (ExaBGP 5.0 and 4.2, real output): the typed path agrees with the general one, and
    every received UPDATE announcing one unicast family under one next hop, nothing withdrawn, no AS_SET,
    takes it."""
    taken = 0
    for line in CAPTURED:
        fast = _fast_agrees(line)
        try:
            tree = json.loads(line)
        except ValueError:
            continue
        body = tree.get("neighbor", {}).get("message", {}).get("update") if tree.get("type") == "update" else None
        if not isinstance(body, dict) or "withdraw" in body or len(body.get("announce", {})) != 1:
            continue
        ((family, by_next_hop),) = body["announce"].items()
        attribute = body.get("attribute", {})
        as_path = attribute.get("as-path")
        one_sequence = not isinstance(as_path, dict) or [segment["element"] for segment in as_path.values()] == [
            "as-sequence"]
        if family.endswith(" unicast") and len(by_next_hop) == 1 and "as-set" not in attribute and one_sequence:
            assert fast is not None, line
            taken += 1
    assert taken >= 10, taken


EDGE_VALUES = [None, True, False, 0, -1, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64, 1.0, 1.5, "", "1", "0.0.0.1",
               "256.0.0.1", "2001:db8::/32", "2001:db8::1", "as-sequence", "as-set", "confed-sequence", "send",
               "receive", "update", "igp", [], {}, [1], [-1], [1 << 32], {"0": 1}]
"""Every value put at every position of the base lines below (a product, not a sample: the rare ones matter)."""


def test_typed_path_equals_general_path_at_every_position_with_every_edge_value() -> None:
    base = [Route(ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_address("192.0.2.1"), 7, (65001, 4200000001),
                  (), 10, 100, "igp", bytes.fromhex("8301228042" "2a0000" "0000000000000000")),
            Route(ipaddress.ip_network("203.0.113.1/32"), ipaddress.ip_address("192.0.2.1"), 8, (65001, 4200000001),
                  (), 10, 100, "igp", bytes.fromhex("8301228042" "2a0000" "0000000000000000"))]
    checked = taken = 0
    for version in ("5.0.0", "4.0.1"):
        original = json.loads(render(version, base, [], True, False))
        assert _fast_agrees(json.dumps(original)) is not None
        for path in tree_positions(original)[1:]:
            for value in EDGE_VALUES:
                tree = copy.deepcopy(original)
                parent = tree
                for step in path[:-1]:
                    parent = parent[step]
                parent[path[-1]] = copy.deepcopy(value)
                checked += 1
                taken += _fast_agrees(json.dumps(tree)) is not None
    assert checked > 1000 and taken > 100, (checked, taken)


def _usual_line(**replace: str) -> str:
    line = render("5.0.0", [Route(ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_address("192.0.2.1"), 7,
                                  (65001,), (), 10, 100, "igp", bytes.fromhex("830122804" "22a0000"))], [], True, False)
    for old, new in replace.items():
        assert old in line
        line = line.replace(old, new)
    return line


def test_escaped_keys_are_read_as_json_reads_them() -> None:
    """A key written with escapes is the same key (``"as\\u002dpath"`` is ``"as-path"``), in both readers; of two
    keys that differ only so, the last counts."""
    plain = _fast_agrees(_usual_line())
    assert plain is not None
    for old, new in [('"as-path"', '"as\\u002dpath"'), ('"path-information"', '"path\\u002dinformation"'),
                     ('"extended-community"', '"extended\\u002Dcommunity"'), ('"direction"', '"directio\\u006e"'),
                     ('"exabgp"', '"\\u0065xabgp"'), ('"type"', '"typ\\u0065"')]:
        assert _fast_agrees(_usual_line(**{old: new})) == plain, new
    twice = _usual_line(**{'"med": 10': '"med": 10, "m\\u0065d": 20'})
    event = _fast_agrees(twice)
    assert isinstance(event, RouteUpdate) and event.announced[0].med == 20
    sent = _usual_line(**{'"direction": "receive"': '"direction": "receive", "directio\\u006e": "send"'})
    assert _fast_agrees(sent) is None
    assert check(sent) == Ignored("update", "an UPDATE sent to the peer, not received")


def test_an_integer_over_the_int_string_limit_is_refused_wherever_it_is() -> None:
    """json refuses an integer of more digits than Python's int-string limit anywhere in a line, even in a key
    dyncast does not read (which msgspec skips): such a line is the general reader's, and an error, as before
    the typed path; a digit run that long in a string is no integer, and the line is read."""
    digits = "1" * 4301
    for old in ('"counter": 7', '"pid": 32333', '"local": 65001'):
        line = _usual_line(**{old: old.split(":")[0] + ": " + digits})
        assert _typed_update(line) is None
        outcome = check(line)
        assert isinstance(outcome, ExabgpJsonError) and "invalid JSON" in str(outcome), outcome
    in_text = _usual_line(**{'"host": "vm"': f'"host": "{digits}"'})
    assert check(in_text) == parse_line(_usual_line())
