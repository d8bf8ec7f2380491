"""Properties of the containerlab parser: merge rules, error locations, path rewriting, netem, checksums."""

from __future__ import annotations

import struct
from pathlib import Path

import yaml
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.config.loader import ConfigError
from dyncast_bgp.lab.clab import Bind, parse, parse_netem, rewrite_paths
from dyncast_bgp.lab.impair import _ones_complement, complete_checksum

BASE = Path("/labs")
keys = st.from_regex(r"[A-Z][A-Z0-9_]{0,6}", fullmatch=True)
values = st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
env_maps = st.dictionaries(keys, values, max_size=4)
names = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)
segments = st.lists(st.from_regex(r"[a-z][a-z0-9]{0,5}", fullmatch=True), min_size=1, max_size=3)


def render(defaults: dict[str, object], kind: dict[str, object], nodes: dict[str, dict[str, object]]) -> str:
    return yaml.safe_dump({"name": "p", "topology": {"defaults": {"kind": "linux", **defaults},
                                                     "kinds": {"linux": kind}, "nodes": nodes}}, sort_keys=False)


@given(env_maps, env_maps, st.dictionaries(names, env_maps, min_size=1, max_size=4))
def test_env_merges_key_by_key_node_over_kind_over_defaults(defaults: dict[str, str], kind: dict[str, str],
                                                             nodes: dict[str, dict[str, str]]) -> None:
    topology = parse(render({"env": defaults}, {"env": kind}, {n: {"env": e} for n, e in nodes.items()}),
                     directory=BASE, environ={})
    for name, own in nodes.items():
        assert dict(topology.node(name).env) == {**defaults, **kind, **own}


@given(st.lists(st.tuples(segments, st.sampled_from(["defaults", "kind", "node"])), max_size=6))
def test_binds_merge_by_container_path_most_specific_wins(binds: list[tuple[list[str], str]]) -> None:
    levels: dict[str, list[str]] = {"defaults": [], "kind": [], "node": []}
    for path, level in binds:
        levels[level].append(f"{level}/{'/'.join(path)}:/{'/'.join(path)}")
    topology = parse(render({"binds": levels["defaults"]}, {"binds": levels["kind"]},
                            {"n": {"binds": levels["node"]}}), directory=BASE, environ={})
    expected: dict[str, str] = {}
    for level in ("defaults", "kind", "node"):
        for text in levels[level]:
            _host, container = text.split(":")
            expected[container] = level
    got = {bind.container: bind.host.relative_to(BASE).parts[0] for bind in topology.node("n").binds}
    assert got == expected


@given(st.lists(names, min_size=1, max_size=5, unique=True), st.data())
def test_an_unknown_key_is_reported_at_its_own_line(nodes: list[str], data: st.DataObject) -> None:
    victim = data.draw(st.sampled_from(nodes))
    text = render({}, {}, {name: {"image": "alpine"} for name in nodes})
    lines = text.splitlines()
    # a name YAML would read as another type ("on", "null", "yes") is dumped quoted
    at = next(number for number, line in enumerate(lines) if line in (f"    {victim}:", f"    '{victim}':")) + 1
    lines.insert(at + 1, "      bogus: 1")
    try:
        parse("\n".join(lines) + "\n", "f.yml", directory=BASE, environ={})
    except ConfigError as exc:
        assert str(exc) == f"f.yml:{at + 2}: topology.nodes.{victim}.bogus: unknown field (not in the schema)"
    else:
        raise AssertionError("an unknown key passed")


@given(segments, segments, st.sampled_from(["", "/sub/file", " tail", "'", ";x"]))
def test_rewriting_maps_container_paths_to_host_paths(container: list[str], host: list[str], suffix: str) -> None:
    bind = Bind(Path("/host/" + "/".join(host)), "/" + "/".join(container))
    assert rewrite_paths(f"cmd {bind.container}{suffix}", (bind,)) == f"cmd {bind.host}{suffix}"
    assert rewrite_paths(f"cmd {bind.container}x{suffix}", (bind,)) == f"cmd {bind.container}x{suffix}"


@given(st.integers(0, 10_000), st.integers(0, 1_000), st.integers(0, 100), st.sampled_from(["add", "replace"]))
def test_netem_lines_round_trip(delay: int, jitter: int, loss: int, verb: str) -> None:
    line = f"tc qdisc {verb} dev eth1 root netem delay {delay}ms {jitter}ms loss {loss}%"
    netem = parse_netem(line)
    assert netem is not None
    assert (netem.interface, netem.delay_ms, netem.jitter_ms, netem.loss) == ("eth1", delay, jitter, loss / 100)


@given(st.binary(max_size=1500), st.sampled_from([6, 17]), st.booleans(), st.integers(0, 0xFFFF))
def test_completed_checksums_verify(payload: bytes, protocol: int, v6: bool, partial: int) -> None:
    header = (struct.pack("!HHIIBBHHH", 1, 2, 3, 4, 0x50, 0, 100, partial, 0) if protocol == 6
              else struct.pack("!HHHH", 1, 2, 8 + len(payload), partial))
    segment = header + payload
    if v6:
        source, destination = bytes(range(16)), bytes(range(16, 32))
        ip = struct.pack("!IHBB", 0x60000000, len(segment), protocol, 64) + source + destination
        frame = b"\0" * 12 + b"\x86\xdd" + ip + segment
        pseudo = source + destination + struct.pack("!IxxxB", len(segment), protocol)
    else:
        source, destination = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(segment), 0, 0, 64, protocol, 0, source, destination)
        frame = b"\0" * 12 + b"\x08\x00" + ip + segment
        pseudo = source + destination + struct.pack("!BBH", 0, protocol, len(segment))
    fixed = complete_checksum(frame)
    assert len(fixed) == len(frame)
    assert _ones_complement(pseudo + fixed[len(frame) - len(segment):]) in (0, 0xFFFF)
