"""Structured-but-wrong inputs: real ExaBGP lines mutated, wrong types in every field, huge numbers,
NaN, deep nesting, unicode, truncation; plus valid lines over a small world of peers and prefixes so
that state builds up in the RIB between the bad lines."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "exabgp_json"
CAPTURED = [line for path in sorted(GOLDEN.glob("*.jsonl"))
            for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _decodes(line: str) -> bool:
    try:
        json.loads(line)
    except ValueError:
        return False
    return True


DECODABLE = [line for line in CAPTURED if _decodes(line)]
TEMPLATES = [json.loads(line) for line in DECODABLE]

# ------------------------------------------------------------------ nasty values

NASTY_NUMBERS = [0, -1, 1 << 31, (1 << 32) - 1, 1 << 32, (1 << 64) - 1, 1 << 64, -(1 << 63), 10 ** 40,
                 0.5, -0.0, 1e308, float("nan"), float("inf"), float("-inf"), True, False]
NASTY_TEXT = ["", " ", "\x00", "\u202e", "\ud800", "\uff11\uff12\uff13", "\u0663", "0.0.0.0", "255.255.255.255",
              "256.1.1.1", "01.2.3.4", "1.2.3.4/33", "1.2.3.4/-1", "1.2.3.4/٣", "1.2.3.5/31", "::", "fe80::1%eth0",
              "2001:db8::/129", "::ffff:1.2.3.4", "0.0.0.1", "4294967296", "0x83", "as-set", "as-sequence",
              "confed-sequence", "ipv4 unicast", "ipv6 unicast", "ipv4 flow", "update", "state", "down", "up",
              "notification", "shutdown", "receive", "send", "done", "x" * 300, "é" * 70]
nasty_scalars = (st.sampled_from(NASTY_NUMBERS) | st.sampled_from(NASTY_TEXT) | st.none()
                 | st.integers() | st.floats() | st.text(max_size=12))
json_values = st.recursive(
    nasty_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20)


def deep(depth: int, kind: str) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def tree_positions(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every position in a decoded JSON tree, as the keys/indexes leading to it."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += tree_positions(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += tree_positions(child, (*prefix, index))
    return found


def _retyped(value: Any) -> list[Any]:
    """The same content as another JSON type, and the usual suspects."""
    return [json.dumps(value), [value], {"value": value}, str(value), None, True, -1, 1 << 64, 1e308,
            float("nan"), "", [], {}, deep(60, "list")]


@st.composite
def mutated_trees(draw: st.DrawFn, template: Any = None) -> Any:
    """A captured line's JSON with one to three of: a key dropped, a value replaced or retyped,
    a key renamed, a list emptied or repeated many times."""
    tree = copy.deepcopy(template if template is not None else draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        positions = tree_positions(tree)[1:]
        if not positions:
            break
        path = draw(st.sampled_from(positions))
        parent = tree
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        action = draw(st.sampled_from(["drop", "replace", "retype", "rename", "repeat"]))
        if action == "drop":
            del parent[last]
        elif action == "replace":
            parent[last] = draw(json_values)
        elif action == "retype":
            parent[last] = draw(st.sampled_from(_retyped(parent[last])))
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.sampled_from(NASTY_TEXT))] = parent.pop(last)
        elif action == "repeat" and isinstance(parent[last], list) and parent[last]:
            parent[last] = parent[last] * draw(st.integers(2, 200))
    return tree


def dumps(tree: Any) -> str:
    """JSON as a sender might write it: NaN/Infinity tokens allowed, sometimes non-ASCII raw."""
    return json.dumps(tree, ensure_ascii=False)


@st.composite
def text_damage(draw: st.DrawFn, line: str) -> str:
    """Truncated, spliced, control characters or raw surrogates inserted, duplicated keys."""
    action = draw(st.sampled_from(["truncate", "splice", "control", "duplicate", "concat", "pad"]))
    at = draw(st.integers(0, len(line)))
    if action == "truncate":
        return line[:at]
    if action == "splice":
        return line[:at] + draw(st.text(max_size=4)) + line[at + draw(st.integers(0, 4)):]
    if action == "control":
        inserted = draw(st.sampled_from(["\x00", "\r", "\x1b[2J", "\u2028", "\ud800", "\t", "\x7f"]))
        return line[:at] + inserted + line[at:]
    if action == "duplicate":  # the same key twice: the last one wins in json.loads
        return line.replace('"type": "update"', '"type": "update", "type": "state"', 1)
    if action == "concat":
        return line + line
    return " " * draw(st.integers(0, 3)) + line + draw(st.sampled_from(["", " ", "\r", "\t", " x"]))


# ------------------------------------------------------------------ a small world of valid lines

PEERS = ["10.0.0.1", "10.0.0.2", "2001:db8::1"]
PREFIXES = ["203.0.113.10/32", "203.0.113.11/32", "2001:db8:cafe::10/128"]
HOPS = {4: ["198.51.100.11", "198.51.100.12", "198.51.100.13"], 6: ["2001:db8::11", "2001:db8::12"]}
COMMUNITIES = [0x8301228042160000, 0x8304048000000078, 0x8330000000000001, 0x8306060000000064,
               0x8301228042c80000, 0x83012280FFC00000, 0x4004FDE9441C4000, 0x0002FDE900000064,
               0x8399000000000000, 0x8320000041200000, 0x8330000000000000]


def _header(kind: str, peer: str, time: float) -> dict[str, Any]:
    return {"exabgp": "5.0.0", "time": time, "host": "h", "pid": 1, "ppid": 1, "counter": 1, "type": kind,
            "neighbor": {"address": {"local": "10.0.0.254", "peer": peer}, "asn": {"local": 65000, "peer": 65000},
                         "direction": "receive"}}


@st.composite
def world_lines(draw: st.DrawFn) -> dict[str, Any]:
    """A valid ExaBGP 5.0 line over PEERS/PREFIXES: announce, withdraw, down, up or End-of-RIB."""
    peer = draw(st.sampled_from(PEERS))
    kind = draw(st.sampled_from(["announce", "announce", "announce", "withdraw", "down", "up", "eor"]))
    if kind in ("down", "up"):
        line = _header("state", peer, 0.0)
        line["neighbor"].pop("direction")
        line["neighbor"]["state"] = kind
        if kind == "down":
            line["neighbor"]["reason"] = "hold timer expired"
        return line
    line = _header("update", peer, 0.0)
    if kind == "eor":
        line["neighbor"]["message"] = {"eor": {"afi": draw(st.sampled_from(["ipv4", "ipv6"])), "safi": "unicast"}}
        return line
    prefix = draw(st.sampled_from(PREFIXES))
    family = "ipv6 unicast" if ":" in prefix else "ipv4 unicast"
    nlri = {"nlri": prefix, "path-information": f"0.0.0.{draw(st.integers(0, 2))}"}
    if kind == "withdraw":
        line["neighbor"]["message"] = {"update": {"withdraw": {family: [nlri]}}}
        return line
    hop = draw(st.sampled_from(HOPS[6 if ":" in prefix else 4]))
    values = draw(st.lists(st.sampled_from(COMMUNITIES), max_size=4))
    line["neighbor"]["message"] = {"update": {
        "attribute": {"origin": "igp", "local-preference": 100,
                      "extended-community": [{"value": value, "string": ""} for value in values]},
        "announce": {family: {hop: [nlri]}}}}
    return line


@st.composite
def feed_lines(draw: st.DrawFn) -> str:
    """One line of a feed: mostly valid world lines, some of them damaged, some captured lines mutated."""
    choice = draw(st.integers(0, 9))
    if choice < 5:
        return dumps(draw(world_lines()))
    if choice < 7:
        return dumps(draw(mutated_trees(draw(world_lines()))))
    if choice < 8:
        return dumps(draw(mutated_trees()))
    if choice < 9:
        return draw(text_damage(dumps(draw(world_lines()))))
    return draw(text_damage(draw(st.sampled_from(CAPTURED))))
