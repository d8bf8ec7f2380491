"""The Linux dataplane on a real kernel: weighted steering, affinity, removal, restart, encapsulation.

Topology (one lab for the module)::

    client ---- ingress ---- [transit: bridge br0 + router] ---- a, b, c (instances)
    10.0.0.2-21   i0 10.0.0.1    br0 10.2.0.254, fd00:2::fe        eth0 10.2.0.11-13, fd00:2::11-13
    fd00::2       i1 10.2.0.1    routes: clients, SRv6 SIDs         lo: every D-SID (203.0.113.x, 2001:db8:d::x)
                  fd00:2::1      (no D-SID route)                   SIDs fc00:{a,b,c}::100 (End.DX4), ::106 (End.DT6)

The transit is a bridge for the instances' LAN (direct next hops) and a
router that knows only client prefixes and the instances' SRv6 SIDs, never a
D-SID. Instances answer through the transit router (default route), so
replies reach the ingress on ``i1``; the ingress runs strict reverse-path
filtering (``rp_filter=1``), so replies pass only because the backend sets
``src_valid_mark`` and every reply carries its flow's mark.

Each instance runs ``python -m dyncast_bgp.dataplane.traffic serve`` (TCP and
UDP, answering with its own name); the client side uses the same module's
``burst`` and ``hold`` modes inside the client namespace. The backend runs in
this process with a :class:`NetnsRunner` for the ingress; the restart test
also runs it in a separate process that it kills.

The instances decapsulate IPv4 with End.DX4 (next hop 0.0.0.0: the inner
destination, delivered locally) and IPv6 with End.DT6 looking up the local
table (End.DX6 refuses local delivery; End.DT4 needs a VRF, which this kernel
lacks). SRv6 needs ``net.netfilter.nf_hooks_lwtunnel=1``, a host-wide switch that
cannot be turned off until reboot (docs/dataplane.md); the fixture sets it
inside the ingress namespace and the SRv6 test skips if it cannot.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.dataplane.desired import (
    Affinity,
    Audience,
    DataplaneInputError,
    DesiredState,
    Encap,
    Forwarding,
    InstanceTarget,
    ServiceTarget,
)
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.dataplane.runner import NetnsRunner
from dyncast_bgp.lab.netns import Lab, LanPort, Namespace, list_namespaces
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.model import InstanceKey, ServiceId
from tests.integration.conftest import netns_skip_reason

pytestmark = [pytest.mark.netns, pytest.mark.slow]

PORT = 9000
NAMES = ("a", "b", "c")
BINDING = {"a": "10.2.0.11", "b": "10.2.0.12", "c": "10.2.0.13"}
BINDING6 = {"a": "fd00:2::11", "b": "fd00:2::12", "c": "fd00:2::13"}
CLIENTS = [f"10.0.0.{i}" for i in range(2, 22)]
D_SIDS = ["203.0.113.10", "203.0.113.20", "203.0.113.30", "203.0.113.40", "203.0.113.50", "203.0.113.60"]
D_SIDS6 = ["2001:db8:d::10", "2001:db8:d::40"]
CHI2_P001_DF1 = 10.828  # chi-square critical value, 1 degree of freedom, p = 0.001
GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dataplane"


@dataclass
class Topology:
    lab: Lab
    client: Namespace
    ingress: Namespace
    transit: Namespace
    instances: dict[str, Namespace]
    srv6: bool

    def backend(self) -> LinuxDataplane:
        return LinuxDataplane(runner=NetnsRunner(self.ingress.name))


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    reason = netns_skip_reason()
    if reason:
        pytest.skip(reason)
    with Lab() as lab:
        yield _build(lab)
    left = set(lab.namespace_names) & set(list_namespaces())
    assert not left, f"namespaces left behind: {sorted(left)}"


def _listening(ns: Namespace) -> str:
    return ns.run(["ss", "-ltn"], check=False).stdout


def _build(lab: Lab) -> Topology:
    client, ingress = lab.namespaces("dp-client", "dp-ingress")
    instances = dict(zip(NAMES, lab.namespaces(*(f"dp-{name}" for name in NAMES)), strict=True))
    lab.veth(client, "c0", ingress, "i0")
    client.add_addresses("c0", [f"{address}/24" for address in CLIENTS] + ["fd00::2/64"])
    client.ip_batch(["route add default via 10.0.0.1", "route add ::/0 via fd00::1"])
    ingress.add_addresses("i0", ["10.0.0.1/24", "fd00::1/64"])
    ports = [LanPort(ingress, ("10.2.0.1/24", "fd00:2::1/64"), "i1")]
    ports += [LanPort(ns, (f"{BINDING[n]}/24", f"{BINDING6[n]}/64"), "eth0") for n, ns in instances.items()]
    transit = lab.lan("dp-transit", ports).hub
    transit.add_addresses("br0", ["10.2.0.254/24", "fd00:2::fe/64"])
    transit.ip_batch(["route add 10.0.0.0/24 via 10.2.0.1", "route add fd00::/64 via fd00:2::1",
                      *(f"route add fc00:{n}::/64 via {BINDING6[n]}" for n in NAMES)])
    transit.enable_forwarding()
    ingress.enable_forwarding()
    ingress.set_sysctls({"net.ipv4.conf.all.rp_filter": 1, "net.ipv4.conf.default.rp_filter": 1})
    ingress.ip_batch(["route add fc00::/16 via fd00:2::fe"])
    srv6 = ingress.run(["sysctl", "-q", "-w", "net.netfilter.nf_hooks_lwtunnel=1"], check=False).returncode == 0
    for name, ns in instances.items():
        ns.add_addresses("lo", [f"{d}/32" for d in D_SIDS] + [f"{d}/128" for d in D_SIDS6])
        ns.ip_batch(["route add default via 10.2.0.254", "route add ::/0 via fd00:2::fe",
                     f"route add fc00:{name}::100/128 encap seg6local action End.DX4 nh4 0.0.0.0 dev eth0",
                     f"route add fc00:{name}::106/128 encap seg6local action End.DT6 table 255 dev eth0"])
        ns.set_sysctls({"net.ipv6.conf.all.seg6_enabled": 1, "net.ipv6.conf.eth0.seg6_enabled": 1,
                        # anycast addresses on lo: never answer ARP for them, never use them as ARP source (LVS-DR)
                        "net.ipv4.conf.all.arp_ignore": 1, "net.ipv4.conf.all.arp_announce": 2})
        lab.spawn(ns, f"serve-{name}", [sys.executable, "-m", "dyncast_bgp.dataplane.traffic", "serve",
                                         "--name", name, "--port", str(PORT)])
    _permanent_neighbours([(ingress, "i1", ("10.2.0.1", "fd00:2::1")), (transit, "br0", ("10.2.0.254", "fd00:2::fe"))]
                          + [(ns, "eth0", (BINDING[n], BINDING6[n])) for n, ns in instances.items()])
    topo = Topology(lab, client, ingress, transit, instances, srv6)
    for name, ns in instances.items():
        expect(functools.partial(_listening, ns), lambda out: f":{PORT}" in out,
               what=f"server {name} listening", timeout=10)
    return topo


def _permanent_neighbours(members: list[tuple[Namespace, str, tuple[str, str]]]) -> None:
    """Every LAN member knows every other's MAC: on this kernel the first ARP requests of a fresh
    namespace sometimes go unanswered for seconds, which would read as lost flows (the probe tests
    pin their neighbours for the same reason)."""
    macs = {ns.name: json.loads(ns.ip("-j", "link", "show", ifname))[0]["address"] for ns, ifname, _ in members}
    for ns, ifname, _ in members:
        ns.ip_batch([f"neigh replace {address} lladdr {macs[other.name]} dev {ifname} nud permanent"
                     for other, _, addresses in members if other is not ns for address in addresses])


# -- desired states ------------------------------------------------------------------------------------


def service(dsid: str, weights: dict[str, float], *, affinity: Affinity = Affinity.FLOW, timeout: float = 300,
            forwarding: dict[str, Forwarding] | None = None) -> ServiceTarget:
    sid = ServiceId.parse(dsid)
    table = BINDING6 if sid.version == 6 else BINDING

    def forward(name: str) -> Forwarding:
        return (forwarding or {}).get(name, Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address(table[name])))

    return ServiceTarget(sid, tuple(
        InstanceTarget(InstanceKey(sid, ipaddress.ip_address(table[name])), weight, forward(name), name)
        for name, weight in weights.items()), affinity, timeout)


def key(dsid: str, name: str) -> InstanceKey:
    sid = ServiceId.parse(dsid)
    return InstanceKey(sid, ipaddress.ip_address((BINDING6 if sid.version == 6 else BINDING)[name]))


# -- traffic --------------------------------------------------------------------------------------------


def traffic(topo: Topology, mode: str, target: str, *args: str) -> dict[str, Any]:
    done = topo.client.run([sys.executable, "-m", "dyncast_bgp.dataplane.traffic", mode, "--target", target,
                            "--port", str(PORT), *args], timeout=60)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Holder:
    """Long-lived TCP and UDP flows from the client (``traffic hold``), checked on demand."""

    def __init__(self, topo: Topology, target: str, tcp: int, udp: int, sources: Sequence[str] = ()) -> None:
        argv = topo.client.exec_argv([sys.executable, "-m", "dyncast_bgp.dataplane.traffic", "hold", "--target",
                                      target, "--port", str(PORT), "--tcp", str(tcp), "--udp", str(udp),
                                      *(arg for source in sources for arg in ("--source", source))])
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(self._line())
        assert ready.get("ready"), ready
        self.start = self.check()

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise AssertionError(f"hold helper exited ({self.process.poll()})")
        return line

    def check(self) -> dict[str, list[str]]:
        """One round trip on every flow: the instance name that answered, or ``error:...``."""
        assert self.process.stdin is not None
        self.process.stdin.write("check\n")
        self.process.stdin.flush()
        result: dict[str, list[str]] = json.loads(self._line())
        return result

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()  # our own child, by pid
                self.process.wait()

    def __enter__(self) -> Holder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- kernel snapshots ------------------------------------------------------------------------------------


def snapshot(ns: Namespace) -> dict[str, str]:
    """Everything of ours in the kernel, in a comparable form (no counters, no expiring affinity entries)."""
    nft = ns.run(["nft", "-s", "list", "table", "inet", "dyncast"], check=False).stdout
    routes = {family: "\n".join(line for line in ns.run(["ip", family, "route", "show", "table", "all"]).stdout
                                .splitlines() if re.search(r"table 11452\d+", line))
              for family in ("-4", "-6")}
    return {"nft": _without_affinity_entries(nft), "rules4": ns.ip("-4", "rule", "show"),
            "rules6": ns.ip("-6", "rule", "show"), "routes4": routes["-4"], "routes6": routes["-6"],
            "links": " ".join(sorted(re.findall(r"^\d+: (dc[0-9a-f]{10})", ns.ip("-o", "link", "show"), re.M)))}


def _without_affinity_entries(text: str) -> str:
    out, skipping, in_affinity = [], False, False
    for line in text.splitlines():
        if line.strip().startswith("map dc_aff"):
            in_affinity = True
        elif in_affinity and line.strip().startswith("elements = {"):
            skipping = True
        if skipping:
            skipping = not line.rstrip().endswith("}")
            continue
        if line.strip() == "}":
            in_affinity = False
        out.append(line)
    return "\n".join(out)


def chi_square(observed: dict[str, int], shares: dict[str, float]) -> float:
    total = sum(observed.values())
    return sum((observed.get(name, 0) - total * share) ** 2 / (total * share) for name, share in shares.items())


def pick_counters(ns: Namespace, chain: str) -> dict[str, int]:
    """New flows per mark from the pick rules' counters of one service chain."""
    text = ns.run(["nft", "list", "chain", "inet", "dyncast", chain]).stdout
    return {m.group(2): int(m.group(1)) for m in re.finditer(r"counter packets (\d+) .*dc pick (0x[0-9a-f]+)", text)}


# -- tests ------------------------------------------------------------------------------------------------


def test_golden_rulesets_load_in_the_kernel(topo: Topology) -> None:
    for path in sorted(GOLDEN.glob("*.nft")):
        if ".remove." in path.name or ".reweight." in path.name:
            continue  # incremental: they need the base ruleset, covered by the tests below
        done = topo.client.run(["nft", "-c", "-f", str(path)], check=False)
        assert done.returncode == 0, f"{path.name}: {done.stderr}"


def test_weights_70_30_hold_over_2000_connections(topo: Topology) -> None:
    dp = topo.backend()
    dp.apply(DesiredState.of([service(D_SIDS[0], {"a": 0.7, "b": 0.3})]))
    result = traffic(topo, "burst", D_SIDS[0], "--count", "2000", "--concurrency", "64")
    assert result["errors"] == {}, result
    names = result["names"]
    statistic = chi_square(names, {"a": 0.7, "b": 0.3})
    print(f"\n2000 connections at 70/30: {names}, chi-square {statistic:.2f} (bound {CHI2_P001_DF1})")
    assert sum(names.values()) == 2000 and set(names) == {"a", "b"}
    assert statistic < CHI2_P001_DF1
    counters = pick_counters(topo.ingress, "dc_s_203_0_113_10_32")  # the kernel saw the same split
    assert sorted(counters.values()) == sorted(names.values())


def test_ipv6_service_is_steered_and_answers(topo: Topology) -> None:
    dp = topo.backend()
    dp.apply(DesiredState.of([service(D_SIDS6[0], {"a": 1, "b": 1})]))
    result = traffic(topo, "burst", D_SIDS6[0], "--count", "200")
    assert result["errors"] == {} and set(result["names"]) == {"a", "b"}, result
    with Holder(topo, D_SIDS6[0], tcp=2, udp=2) as flows:
        assert all(not name.startswith("error") for name in flows.check()["udp"])


def test_flows_keep_their_instance_across_20_weight_changes(topo: Topology) -> None:
    dp = topo.backend()
    dsid = D_SIDS[1]
    dp.apply(DesiredState.of([service(dsid, {"a": 0.5, "b": 0.5})]))
    sequence = [(1, 0), (0, 1), (0.3, 0.7), (0.9, 0.1), (0, 1), (0.5, 0.5), (1, 0), (0.2, 0.8), (0.6, 0.4), (0, 1),
                (0.75, 0.25), (1, 0), (0.1, 0.9), (0.4, 0.6), (0, 1), (0.99, 0.01), (0.5, 0.5), (1, 0), (0.3, 0.7),
                (0, 1)]
    with Holder(topo, dsid, tcp=24, udp=2) as flows:
        start = flows.start
        assert not any(name.startswith("error") for name in start["tcp"] + start["udp"]), start
        assert set(start["tcp"]) == {"a", "b"}, start  # P(24 flows on one instance) = 2^-23
        for step, (wa, wb) in enumerate(sequence):
            result = dp.apply(DesiredState.of([service(dsid, {"a": wa, "b": wb})]))
            assert result.changed and set(result.details) == {"services_changed"}, result
            now = flows.check()
            assert now == start, f"step {step} ({wa}/{wb}): {now} != {start}"
            if wa == 0:  # soft drain: no new flow goes to a, its existing flows stay
                fresh = traffic(topo, "burst", dsid, "--count", "20")
                assert fresh["names"] == {"b": 20}, fresh
                assert dp.flow_counts()[key(dsid, "a")] >= start["tcp"].count("a") + start["udp"].count("a")


def test_client_affinity_keeps_a_client_on_one_instance_until_timeout(topo: Topology) -> None:
    dp = topo.backend()
    dsid = D_SIDS[2]
    dp.apply(DesiredState.of([service(dsid, {"a": 0.5, "b": 0.5}, affinity=Affinity.CLIENT, timeout=2)]))
    first = traffic(topo, "burst", dsid, "--count", str(10 * len(CLIENTS)),
                    *(arg for client in CLIENTS for arg in ("--source", client)))
    assert first["errors"] == {}, first
    by_source = first["by_source"]
    assert all(len(names) == 1 and sum(names.values()) == 10 for names in by_source.values()), by_source
    assert {next(iter(names)) for names in by_source.values()} == {"a", "b"}  # P(all on one) = 2^-19
    pinned = {source: next(iter(names)) for source, names in by_source.items()}
    with Holder(topo, dsid, tcp=0, udp=4, sources=[CLIENTS[0]]) as media:  # e.g. RTP audio + video, other ports
        assert media.start["udp"] == [pinned[CLIENTS[0]]] * 4, (media.start, pinned[CLIENTS[0]])
    expect(lambda: topo.ingress.run(["nft", "list", "map", "inet", "dyncast", "dc_aff4"]).stdout,
           lambda text: dsid not in text, what="client affinity entries to expire", timeout=6, wait=0.2)
    second = traffic(topo, "burst", dsid, "--count", str(len(CLIENTS)),
                     *(arg for client in CLIENTS for arg in ("--source", client)))
    moved = [s for s, names in second["by_source"].items() if next(iter(names)) != pinned[s]]
    assert moved, "after the timeout clients pick again: some of 20 must land elsewhere (P(none) = 2^-20)"


def test_audience_clients_take_their_own_draw_and_read_back_the_same(topo: Topology) -> None:
    """A client-prefix canary: clients 10.0.0.2-7 draw among a and c (c is the new version); the others
    never reach c. A second backend reads the audience back and finds nothing to change."""
    dsid = D_SIDS[3]
    target = service(dsid, {"a": 1.0, "b": 1.0, "c": 0.0})
    audience = Audience((ipaddress.ip_network("10.0.0.2/31"), ipaddress.ip_network("10.0.0.4/30")),
                        {key(dsid, "a"): 0.5, key(dsid, "c"): 0.5})
    dp = topo.backend()
    dp.apply(DesiredState.of([target.replace(audience=audience)]))
    inside, outside = CLIENTS[:6], CLIENTS[6:]
    result = traffic(topo, "burst", dsid, "--count", str(20 * len(CLIENTS)),
                     *(arg for client in CLIENTS for arg in ("--source", client)))
    assert result["errors"] == {}, result
    by_source = result["by_source"]
    seen_inside = sum((Counter(by_source[source]) for source in inside), Counter())
    seen_outside = sum((Counter(by_source[source]) for source in outside), Counter())
    print(f"\naudience 10.0.0.2-7: {dict(seen_inside)}; other clients: {dict(seen_outside)}")
    assert set(seen_inside) == {"a", "c"} and "c" not in seen_outside and set(seen_outside) == {"a", "b"}
    assert chi_square(dict(seen_inside), {"a": 0.5, "c": 0.5}) < CHI2_P001_DF1
    readback = topo.backend().reconcile().services[ServiceId.parse(dsid)]
    assert readback.audience is not None and readback.audience.clients == ("10.0.0.2/31", "10.0.0.4/30")
    again = topo.backend()
    again.reconcile()
    assert not again.apply(DesiredState.of([target.replace(audience=audience)])).details.get("services_changed")
    dp.apply(DesiredState.of([target]))  # the audience ends (a commit): everyone draws a and b again
    after = traffic(topo, "burst", dsid, "--count", "60", *(arg for client in inside for arg in ("--source", client)))
    assert "c" not in after["names"], after


def test_hard_removal_moves_exactly_the_removed_instances_flows(topo: Topology) -> None:
    dp = topo.backend()
    dsid = D_SIDS[4]
    dp.apply(DesiredState.of([service(dsid, {"a": 1, "b": 1, "c": 1})]))
    with Holder(topo, dsid, tcp=36, udp=6) as flows:  # P(an instance gets no TCP flow) = 3 * (2/3)^36 < 2e-6
        start = flows.start
        assert {"a", "b", "c"} <= set(start["tcp"]), start
        dp.apply(DesiredState.of([service(dsid, {"a": 0, "b": 1, "c": 1})]))  # soft first: nothing moves
        assert flows.check() == start
        assert dp.evict([key(dsid, "a")]) >= start["tcp"].count("a") + start["udp"].count("a")
        after = flows.check()
        for kind in ("tcp", "udp"):
            for before, now in zip(start[kind], after[kind], strict=True):
                if before == "a":
                    assert now != "a", (kind, start, after)  # re-pinned: reset (TCP) or answered elsewhere
                    if kind == "udp":
                        assert now in ("b", "c"), after
                else:
                    assert now == before, (kind, start, after)
        assert dp.flow_counts()[key(dsid, "a")] == 0
        # removing an instance from the desired state is a hard removal too
        on_b = [i for i, name in enumerate(after["udp"]) if name == "b"]
        dp.apply(DesiredState.of([service(dsid, {"a": 0, "c": 1})]))
        final = flows.check()
        assert all(final["udp"][i] == "c" for i in on_b), final
        assert all(now == before for before, now in zip(after["tcp"], final["tcp"], strict=True)
                   if before == "c"), final


def test_restart_reconciles_without_breaking_flows(topo: Topology, tmp_path: Path) -> None:
    desired_file = tmp_path / "desired.yml"
    desired_file.write_text(json.dumps({"services": [
        {"dsid": D_SIDS[0], "instances": [{"binding": BINDING["a"], "name": "a", "weight": 0.5},
                                          {"binding": BINDING["b"], "name": "b", "weight": 0.5}]},
        {"dsid": D_SIDS[2], "affinity": "client", "affinity_timeout": 60,
         "instances": [{"binding": BINDING["b"], "name": "b", "weight": 1},
                       {"binding": BINDING["c"], "name": "c", "weight": 1}]},
        {"dsid": D_SIDS6[0], "instances": [{"binding": BINDING6["a"], "name": "a", "weight": 1}]}]}))
    router = (f"import sys, time; from pathlib import Path; from dyncast_bgp.dataplane.fileformat import parse; "
              f"from dyncast_bgp.dataplane.linux import LinuxDataplane; "
              f"dp = LinuxDataplane(); dp.apply(parse(Path({str(desired_file)!r}).read_text())); "
              f"print('applied', flush=True); time.sleep(120)")
    process = topo.lab.spawn(topo.ingress, "router-1", [sys.executable, "-c", router])
    expect(process.log_tail, lambda text: "applied" in text, what="the first router to apply", timeout=20,
           diagnose=process.log_tail)
    with Holder(topo, D_SIDS[0], tcp=6, udp=2) as flows, Holder(topo, D_SIDS[2], tcp=4, udp=1) as pinned:
        before = snapshot(topo.ingress)
        topo.lab.stop(process)  # the router goes away (SIGTERM, then SIGKILL)
        assert flows.check() == flows.start and pinned.check() == pinned.start
        restarted = topo.backend()
        restarted.reconcile()
        assert snapshot(topo.ingress) == before  # adopting changes nothing
        cli = topo.ingress.run([sys.executable, "-m", "dyncast_bgp.dataplane.commands", "apply", str(desired_file),
                                "--json"])
        assert set(json.loads(cli.stdout)["details"]) == {"routes"}  # nothing rewritten, routes re-asserted
        assert snapshot(topo.ingress) == before
        assert flows.check() == flows.start and pinned.check() == pinned.start
        shown = json.loads(topo.ingress.run([sys.executable, "-m", "dyncast_bgp.dataplane.commands", "show",
                                             "--json"]).stdout)
        live = {i["name"]: i["flows"] for s in shown["services"] if s["service"] == f"{D_SIDS[0]}/32"
                for i in s["instances"]}
        assert sum(live.values()) >= 8 and set(live) == {"a", "b"}, live


def test_srv6_encapsulation_reaches_instances_the_transit_cannot_route(topo: Topology) -> None:
    if not topo.srv6:
        pytest.skip("cannot set net.netfilter.nf_hooks_lwtunnel=1 (needed for conntrack with SRv6 encap)")
    assert topo.transit.run(["ip", "route", "get", D_SIDS[3]], check=False).returncode != 0  # transit: no D-SID
    sid = {n: Forwarding(Encap.SRV6, remote=ipaddress.ip_address(f"fc00:{n}::100")) for n in NAMES}
    sid6 = {n: Forwarding(Encap.SRV6, remote=ipaddress.ip_address(f"fc00:{n}::106")) for n in NAMES}
    dp = topo.backend()
    dp.apply(DesiredState.of([service(D_SIDS[3], {"a": 1, "b": 1}, forwarding=sid),
                              service(D_SIDS6[1], {"b": 1, "c": 1}, forwarding=sid6)]))
    routes = topo.ingress.run(["ip", "route", "show", "table", "all"]).stdout
    assert "encap seg6 mode encap segs 1 [ fc00:a::100 ] dev i1" in routes
    for dsid, expected in ((D_SIDS[3], {"a", "b"}), (D_SIDS6[1], {"b", "c"})):
        result = traffic(topo, "burst", dsid, "--count", "200")
        assert result["errors"] == {} and set(result["names"]) == expected, result
    with Holder(topo, D_SIDS[3], tcp=4, udp=2) as flows:  # replies return, and flows stay put
        dp.apply(DesiredState.of([service(D_SIDS[3], {"a": 0, "b": 1}, forwarding=sid),
                                  service(D_SIDS6[1], {"b": 1, "c": 1}, forwarding=sid6)]))
        assert flows.check() == flows.start
        assert not any(name.startswith("error") for name in flows.start["tcp"] + flows.start["udp"])


def _kernel_has(kind: str, topo: Topology) -> bool:
    done = topo.client.run(["ip", "link", "add", "dcprobe", "type", kind, "local", "10.0.0.2", "remote", "10.0.0.9"],
                           check=False)
    topo.client.run(["ip", "link", "del", "dcprobe"], check=False)
    return done.returncode == 0


@pytest.mark.parametrize("mode", [Encap.IPIP, Encap.GRE])
def test_tunnel_encapsulation_reaches_instances_the_transit_cannot_route(topo: Topology, mode: Encap) -> None:
    kind = "ipip" if mode is Encap.IPIP else "gre"
    if not _kernel_has(kind, topo):
        pytest.skip(f"this kernel cannot create {kind} devices (CONFIG_NET_IPIP / CONFIG_NET_IPGRE unset)")
    endpoint = {"a": "10.9.0.11", "b": "10.9.0.12"}
    for name, address in endpoint.items():  # the tunnel ends on the instance; the transit routes only that address
        ns = topo.instances[name]
        ns.ip_batch([f"address add {address}/32 dev lo",
                     f"link add tun-{kind} type {kind} local {address} remote 10.2.0.1", f"link set tun-{kind} up"])
        ns.set_sysctls({"net.ipv4.conf.all.rp_filter": 0, f"net.ipv4.conf.tun-{kind}.rp_filter": 0})
        topo.transit.ip_batch([f"route replace {address}/32 via {BINDING[name]}"])
    topo.ingress.ip_batch(["route replace 10.9.0.0/24 via 10.2.0.254"])
    # replies come back plain through the transit while the route leaves by the tunnel: loose rp_filter
    topo.ingress.set_sysctls({"net.ipv4.conf.all.rp_filter": 2})
    try:
        forwarding = {n: Forwarding(mode, remote=ipaddress.ip_address(a), local=ipaddress.ip_address("10.2.0.1"))
                      for n, a in endpoint.items()}
        dp = topo.backend()
        dp.apply(DesiredState.of([service(D_SIDS[5], {"a": 1, "b": 1}, forwarding=forwarding)]))
        assert topo.transit.run(["ip", "route", "get", D_SIDS[5]], check=False).returncode != 0
        result = traffic(topo, "burst", D_SIDS[5], "--count", "200")
        assert result["errors"] == {} and set(result["names"]) == {"a", "b"}, result
    finally:
        topo.ingress.set_sysctls({"net.ipv4.conf.all.rp_filter": 1})
        for name in endpoint:
            topo.instances[name].run(["ip", "link", "del", f"tun-{kind}"], check=False)


def test_rendered_tunnel_lines_pass_iproute2_and_reach_the_kernel(topo: Topology) -> None:
    """Every tunnel device the golden file renders is accepted by this iproute2's parser.

    Where the kernel has the device type the line creates the device;
    where it lacks it (no CONFIG_NET_IPIP / CONFIG_NET_IPGRE ...), iproute2
    has still parsed the arguments and sent RTM_NEWLINK: the refusal is the
    kernel's "Unknown device type", never a usage or parse error.
    """
    lines = [line for line in (GOLDEN / "encapsulation.routes").read_text().splitlines()
             if line.startswith("link add ")]
    assert {line.split()[4] for line in lines} == {"ipip", "sit", "gre", "ip6tnl", "ip6gre"}
    scratch = topo.lab.namespace("dp-tunnels")
    scratch.ip_batch(["link add eth1 type veth peer name eth1p", "link set eth1 up"])  # the lines' underlay
    for line in lines:
        done = scratch.run(["ip", "-batch", "-"], input=line + "\n", check=False)
        if done.returncode == 0:
            scratch.run(["ip", "link", "del", line.split()[2]])
        else:
            assert done.stderr.startswith("Error: Unknown device type."), (line, done.stderr)
    bad = lines[0] + " bogus 1"  # the control: an argument iproute2 refuses never reaches the kernel
    refused = scratch.run(["ip", "-batch", "-"], input=bad + "\n", check=False)
    assert refused.returncode != 0 and "Unknown device type" not in refused.stderr


def test_bad_input_is_refused_and_the_previous_state_stays(topo: Topology, tmp_path: Path) -> None:
    dp = topo.backend()
    good = DesiredState.of([service(D_SIDS[0], {"a": 0.5, "b": 0.5})])
    dp.apply(good)
    before = snapshot(topo.ingress)
    everything = service("0.0.0.0/0", {"a": 1})
    with pytest.raises(DataplaneInputError, match="default prefix"):
        dp.apply(DesiredState.of([everything]))
    nowhere = Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address(BINDING["c"]), device="eth7")
    with pytest.raises(DataplaneInputError, match="unknown device"):
        dp.apply(DesiredState.of([service(D_SIDS[0], {"a": 0.5, "b": 0.5, "c": 1}, forwarding={"c": nowhere})]))
    with pytest.raises(DataplaneInputError, match="unknown instance"):
        dp.evict([key(D_SIDS[0], "c")])
    bad_file = tmp_path / "bad.yml"
    bad_file.write_text(f"services: [{{dsid: {D_SIDS[0]}, instances: [{{binding: 10.2.0.11, weight: -1}}]}}]")
    cli = topo.ingress.run([sys.executable, "-m", "dyncast_bgp.dataplane.commands", "apply", str(bad_file)],
                           check=False)
    assert cli.returncode == 2 and "services[0].instances[0].weight" in cli.stderr
    assert snapshot(topo.ingress) == before
    result = traffic(topo, "burst", D_SIDS[0], "--count", "50")
    assert result["errors"] == {} and set(result["names"]) <= {"a", "b"}, result
    assert not dp.apply(good).changed


def test_cleanup_removes_ours_and_nothing_else(topo: Topology) -> None:
    dp = topo.backend()
    dp.apply(DesiredState.of([service(D_SIDS[0], {"a": 1, "b": 1}), service(D_SIDS6[0], {"c": 1})]))
    ingress = topo.ingress
    ingress.run(["nft", "add", "table", "inet", "someone_else"])
    ingress.run(["nft", "add", "chain", "inet", "someone_else", "pre", "{ type filter hook prerouting priority 0; }"])
    ingress.ip_batch(["rule add priority 10001 fwmark 0x44430099 lookup 100",
                      "route add 198.51.100.0/24 via 10.2.0.11 table 100"])
    try:
        cli = ingress.run([sys.executable, "-m", "dyncast_bgp.dataplane.commands", "cleanup"])
        assert "table removed" in cli.stdout
        left = snapshot(ingress)
        assert left["nft"] == "" and left["routes4"] == "" and left["routes6"] == ""
        assert "0x44430099 lookup 100" in left["rules4"] and "11452" not in left["rules4"] + left["rules6"]
        assert "nop" not in left["rules4"] + left["rules6"]
        assert "table inet someone_else" in ingress.run(["nft", "list", "tables"]).stdout
        assert "198.51.100.0/24" in ingress.ip("route", "show", "table", "100")
        assert ingress.run(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"]).stdout.strip() == "0"
        again = ingress.run([sys.executable, "-m", "dyncast_bgp.dataplane.commands", "cleanup"])
        assert "table absent" in again.stdout
    finally:
        ingress.run(["nft", "delete", "table", "inet", "someone_else"], check=False)
        ingress.ip_batch(["rule del priority 10001 fwmark 0x44430099 lookup 100", "route flush table 100"])
