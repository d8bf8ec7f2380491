"""containerlab topology files: parsing, merge rules, errors with locations, what a node's run means."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import pytest

from dyncast_bgp.config.loader import ConfigError
from dyncast_bgp.lab.clab import (
    Bind,
    Endpoint,
    Netem,
    NetemError,
    expand,
    frr_daemons,
    load_topology,
    node_plan,
    parse,
    parse_bind,
    parse_netem,
    rewrite_paths,
)
from dyncast_bgp.lab.impair import Impairment, _ones_complement, complete_checksum
from dyncast_bgp.lab.runner import netem_args, registry_key
from dyncast_bgp.lab.topology_cli import add_commands

DATA = Path(__file__).parent.parent / "data" / "clab"
BASE = Path("/labs/x")

GOOD = """\
name: demo
topology:
  defaults:
    kind: linux
    env: {A: defaults, B: defaults}
    binds: [shared:/shared, d.conf:/etc/d.conf]
  kinds:
    linux:
      image: alpine:3
      env: {B: kind, C: kind}
      exec: [echo kind]
  nodes:
    n1:
      env: {C: node, PORT: 7}
      binds: [n1.conf:/etc/d.conf:ro]
      labels: {role: client}
      mgmt-ipv4: 172.20.20.2
      ports: ["80:80"]
    n2:
      exec: [echo n2]
      cmd: run --conf /etc/d.conf
  links:
    - endpoints: ["n1:eth1", "n2:eth1"]
    - type: veth
      endpoints:
        - {node: n1, interface: e1-2}
        - {node: n2, interface: e1-2}
      mtu: 1400
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, "t.clab.yml", directory=BASE, environ={})
    return str(info.value).splitlines()


def test_settings_merge_node_over_kind_over_defaults() -> None:
    topology = parse(GOOD, "t.clab.yml", directory=BASE, environ={})
    n1, n2 = topology.node("n1"), topology.node("n2")
    assert dict(n1.env) == {"A": "defaults", "B": "kind", "C": "node", "PORT": "7"}
    assert n1.image == n2.image == "alpine:3"
    assert n1.exec == ("echo kind",) and n2.exec == ("echo n2",)  # the most specific list wins whole
    assert {b.container: (b.host, b.read_only) for b in n1.binds} == {
        "/shared": (BASE / "shared", False), "/etc/d.conf": (BASE / "n1.conf", True)}
    assert dict(n1.labels) == {"role": "client"}
    assert topology.links[0].a == Endpoint("n1", "eth1") and topology.links[1].b == Endpoint("n2", "e1-2")
    assert topology.links[1].mtu == 1400
    assert any("n1.mgmt-ipv4: ignored" in note for note in topology.notes)
    assert any("n1.ports: ignored" in note for note in topology.notes)


def test_every_error_has_file_line_and_path() -> None:
    text = GOOD.replace("      labels: {role: client}", "      labels: {role: client}\n      colour: red") \
        .replace('["n1:eth1", "n2:eth1"]', '["n1:eth1", "n3:eth1"]')
    found = problems(text)
    assert "t.clab.yml:17: topology.nodes.n1.colour: unknown field (not in the schema)" in found
    assert len(found) == 1  # schema errors come first; the link is checked once the schema holds
    found = problems(GOOD.replace('["n1:eth1", "n2:eth1"]', '["n1:eth1", "n3:eth1"]'))
    assert found == ["t.clab.yml:23: topology.links[0].endpoints[1]: unknown node 'n3' (nodes: n1, n2)"]


def test_interface_used_twice_and_bad_names_are_errors() -> None:
    text = GOOD.replace("{node: n1, interface: e1-2}", "{node: n1, interface: eth1}") \
        .replace("{node: n2, interface: e1-2}", "{node: n2, interface: this-name-is-too-long}")
    found = problems(text)
    assert "t.clab.yml:26: topology.links[1].endpoints[0]: interface n1:eth1 is already used by link 0" in found
    assert any(line.startswith("t.clab.yml:27: topology.links[1].endpoints[1]: interface name") for line in found)


def test_unknown_kind_is_an_error_at_its_line() -> None:
    found = problems(GOOD.replace("    n2:\n", "    n2:\n      kind: nokia_srlinux\n"))
    assert found == ["t.clab.yml:20: topology.nodes.n2.kind: kind 'nokia_srlinux' is not supported without "
                     "containers; supported: linux"]


def test_bad_yaml_and_wrong_shapes() -> None:
    assert problems("name: x\ntopology: [\n")[0].startswith("t.clab.yml:3: <top>: invalid YAML")
    assert problems("- a\n") == ["t.clab.yml: <top>: the file must hold a mapping with 'name' and 'topology'"]
    assert "t.clab.yml:1: topology: is required" in problems("name: x\n")
    assert any("links to 'host'" in line for line in problems(GOOD.replace('"n2:eth1"]', '"host:veth9"]')))


def test_node_names_become_namespace_roles() -> None:
    topology = parse(GOOD.replace("    n2:", "    Edge_R.2:").replace("n2:eth1", "Edge_R.2:eth1")
                     .replace("node: n2", "node: Edge_R.2"), "t", directory=BASE, environ={})
    assert topology.node("Edge_R.2").role == "edge-r-2"
    clash = GOOD.replace("    n2:", "    N1:").replace("n2:eth1", "N1:eth1").replace("node: n2", "node: N1")
    assert any("collides with 'n1'" in line for line in problems(clash))


def test_variables_expand_from_the_environment() -> None:
    assert expand("a ${HOME} $$HOME ${MISSING} ${X:=dflt} $PLAIN", {"HOME": "/root"}) == "a /root $HOME  dflt $PLAIN"
    topology = parse(GOOD.replace("cmd: run", "cmd: ${TOOL} $${VAR}"), "t", directory=BASE, environ={"TOOL": "go"})
    assert topology.node("n2").cmd == "go ${VAR} --conf /etc/d.conf"


def test_bind_forms() -> None:
    assert parse_bind("a/b:/c", BASE) == Bind(BASE / "a" / "b", "/c")
    assert parse_bind("/abs:/c/:ro", BASE) == Bind(Path("/abs"), "/c", read_only=True)
    assert parse_bind("/anonymous/volume", BASE) is None
    for bad in ("a:b", "a:/b:xx", ":/b", "relative"):
        with pytest.raises(ValueError, match="bind"):
            parse_bind(bad, BASE)


def test_paths_are_rewritten_whole_and_longest_first() -> None:
    binds = (Bind(Path("/h/etc"), "/etc"), Bind(Path("/h/frr.conf"), "/etc/frr/frr.conf"))
    assert rewrite_paths("cat /etc/frr/frr.conf /etc/hosts /etc", binds) == \
        "cat /h/frr.conf /h/etc/hosts /h/etc"
    assert rewrite_paths("x=/etc/frr/frr.conf; /etcetera /usr/etc '/etc'", binds) == \
        "x=/h/frr.conf; /etcetera /usr/etc '/h/etc'"


@pytest.mark.parametrize(("line", "expected"), [
    ("tc qdisc add dev eth1 root netem delay 30ms", Netem("eth1", 30.0)),
    ("tc qdisc replace dev e1 root netem delay 0.1s 5ms loss 2.5%", Netem("e1", 100.0, 5.0, 0.025)),
    ("sudo tc qdisc change dev eth2 root netem loss random 10%", Netem("eth2", 0.0, 0.0, 0.1)),
    ("tc qdisc add dev eth1 root handle 1: htb", None),
    ("ip addr add 10.0.0.1/24 dev eth1", None),
])
def test_netem_lines_are_recognised(line: str, expected: Netem | None) -> None:
    assert parse_netem(line) == expected


def test_netem_options_we_cannot_reproduce_are_reported() -> None:
    with pytest.raises(NetemError, match="'rate' is not supported"):
        parse_netem("tc qdisc add dev eth1 root netem delay 10ms rate 1mbit")
    topology = parse(GOOD.replace("exec: [echo n2]", "exec: ['tc qdisc add dev eth1 root netem rate 1mbit']"), "t",
                     directory=BASE, environ={})
    step = node_plan(topology.node("n2")).exec[0]
    assert step.netem is None and step.unsupported is not None and "rate" in step.unsupported


def test_node_plan_picks_the_daemon_and_rewrites() -> None:
    topology = load_topology(DATA / "line.clab.yml", environ={})
    r1, h1, h2 = (node_plan(topology.node(name)) for name in ("r1", "h1", "h2"))
    assert r1.daemon == "frr" and r1.config == DATA / "r1" / "frr.conf" and r1.frr_daemons == DATA / "r1" / "daemons"
    assert h1.daemon == "none" and h1.exec[2].netem == Netem("eth1", 30.0)
    assert h2.daemon == "cmd" and h2.cmd == f"sh -c 'exec python {DATA / 'udp_echo.py'} --port $ECHO_PORT'"
    bird = parse(GOOD.replace("    n2:\n", "    n2:\n      image: ghcr.io/x/bird:2\n      binds: [b.conf:/etc/bird/"
                              "bird.conf]\n"), "t", directory=BASE, environ={})
    assert node_plan(bird.node("n2")).daemon == "bird"
    assert node_plan(bird.node("n2")).config == BASE / "b.conf"


def test_frr_daemons_from_the_daemons_file_or_the_config() -> None:
    assert frr_daemons("bgpd=yes\nospfd=no\nisisd=yes\nvtysh_enable=yes\n", "") == ("bgpd", "isisd", "staticd")
    assert frr_daemons(None, "router bgp 1\n!\nrouter ospf\n") == ("bgpd", "ospfd", "staticd")
    assert frr_daemons(None, "ip route 1.0.0.0/8 blackhole\n") == ("staticd",)


def test_registry_keys_tell_files_apart() -> None:
    one = parse(GOOD, "/a/t.clab.yml", directory=BASE, environ={})
    two = parse(GOOD, "/b/t.clab.yml", directory=BASE, environ={})
    assert registry_key(one) != registry_key(two) and registry_key(one).startswith("demo-")


def test_netem_arguments() -> None:
    assert netem_args(Impairment(20.0, 2.0, 0.05)) == ["delay", "20ms", "2ms", "loss", "5%"]
    assert netem_args(Impairment(5.0)) == ["delay", "5ms", "loss", "0%"]
    with pytest.raises(ValueError, match="impairment"):
        Impairment(loss=1.5)


def _udp_frame(payload: bytes) -> bytes:
    udp = struct.pack("!HHHH", 4000, 9960, 8 + len(payload), 0x1234) + payload  # 0x1234: a partial sum
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, bytes([10, 0, 0, 1]),
                     bytes([10, 0, 0, 2]))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + udp


def test_checksum_completion_makes_the_segment_verify() -> None:
    for payload in (b"", b"a", b"hello world!" * 50):
        frame = complete_checksum(_udp_frame(payload))
        segment = frame[34:]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, 17, len(segment))
        assert _ones_complement(pseudo + segment) in (0, 0xFFFF)
    arp = b"\xff" * 12 + b"\x08\x06" + b"\0" * 28
    assert complete_checksum(arp) == arp


def test_cli_wiring() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="action"))
    args = parser.parse_args(["exec", "f.clab.yml", "r1", "--", "vtysh", "-c", "show ip route"])
    assert (args.node, args.command) == ("r1", ["vtysh", "-c", "show ip route"])
    args = parser.parse_args(["netem", "f.clab.yml", "h1:eth1", "--delay", "20", "--loss", "5"])
    assert (args.endpoint, args.delay, args.jitter, args.loss) == ("h1:eth1", 20.0, 0.0, 5.0)
    assert parser.parse_args(["up", "f", "--detach", "--impairable", "all"]).impairable == ["all"]
