"""The lab harness against real daemons, driven by the scripted announcer (not the agent).

A D-SID with two instances is announced by ExaBGP 5.0 with ADD-PATH, one
path per instance, each carrying metric extended communities (type 0x83) and
a link-bandwidth community. Every receiver must show both paths with the
exact 8 octets of every community, for an IPv4 and an IPv6 D-SID, and lose
them on withdraw. FRR is a route reflector: it shows the received path ids
but not unknown community values, so values are checked at its client.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest

from dyncast_bgp.lab.announcer import AnnounceError, Announcer
from dyncast_bgp.lab.daemons import Bird, Frr, Local, Peer, wait_established, wait_routes
from dyncast_bgp.lab.errors import DaemonError
from dyncast_bgp.lab.interop import RECEIVERS, InteropLab, instance_address
from dyncast_bgp.lab.netns import Lab, list_namespaces, sweep_stale
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.rib import Family, Route
from dyncast_bgp.wire.community import LinkBandwidth, MetricCommunity, decode

pytestmark = [pytest.mark.netns, pytest.mark.interop]

FAMILIES: tuple[Family, ...] = ("ipv4", "ipv6")
DSID = {"ipv4": "203.0.113.10/32", "ipv6": "2001:db8::10/128"}


@dataclass(frozen=True)
class InstancePath:
    """One instance of a D-SID as announced: its D-BID index, ADD-PATH id and communities."""

    instance: int
    path_id: int
    metrics: dict[str, float]
    bandwidth: float

    def communities(self) -> tuple[bytes, ...]:
        metric = [MetricCommunity.of(name, value).pack() for name, value in self.metrics.items()]
        return (*metric, LinkBandwidth.of(65000, self.bandwidth).pack())

    def announce(self, prefix: str, family: Family) -> str:
        hexed = " ".join("0x" + raw.hex() for raw in self.communities())
        return (f"announce route {prefix} next-hop {instance_address(self.instance, family)} "
                f"path-information {self.path_id} extended-community [ {hexed} ]")

    def withdraw(self, prefix: str, family: Family) -> str:
        return (f"withdraw route {prefix} next-hop {instance_address(self.instance, family)} "
                f"path-information {self.path_id}")


PATHS = (
    InstancePath(0, 1, {"cpu_utilization": 37.5, "active_sessions": 120, "overall_score": 7.25}, 1.25e8),
    InstancePath(1, 2, {"cpu_utilization": 81.0, "active_sessions": 3, "overall_score": 2.5}, 5.0e7),
)


def expected(family: Family) -> list[tuple[str, list[str]]]:
    return [(instance_address(p.instance, family), sorted("0x" + c.hex() for c in p.communities())) for p in PATHS]


def observed(routes: list[Route]) -> list[tuple[str, list[str] | None]]:
    return [(route.next_hop, route.communities_hex()) for route in routes]


def metric_values(route: Route) -> dict[str, float]:
    assert route.ext_communities is not None
    decoded = [decode(raw) for raw in route.ext_communities]
    return {c.name: c.value for c in decoded if isinstance(c, MetricCommunity)}


@pytest.fixture(scope="module")
def announced(announcer: Announcer) -> None:
    announcer.send(*(path.announce(DSID[family], family) for family in FAMILIES for path in PATHS))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("interop_receiver", RECEIVERS, indirect=True)
def test_receiver_shows_both_instances_with_exact_communities(
        interop: InteropLab, announced: None, interop_receiver: str, family: Family) -> None:
    view = interop.value_view(interop_receiver)
    routes = wait_routes(view, DSID[family], lambda found: len(found) == len(PATHS), timeout=10)
    assert observed(routes) == expected(family)
    for route, path in zip(routes, PATHS, strict=True):
        assert metric_values(route) == path.metrics
        assert route.peer is not None


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("interop_receiver", ["exabgp"], indirect=True)
def test_exabgp_and_rr_client_see_add_path_ids(interop: InteropLab, announced: None, interop_receiver: str,
                                               family: Family) -> None:
    direct = wait_routes(interop.daemons["exabgp"], DSID[family], lambda found: len(found) == 2)
    assert [route.path_id for route in direct] == [path.path_id for path in PATHS]
    if "frr" in interop.receiver_names:
        reflected = wait_routes(interop.rr_client, DSID[family], lambda found: len(found) == 2)
        ids = [route.path_id for route in reflected]
        assert None not in ids and len(set(ids)) == 2  # FRR assigns its own tx path ids


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("interop_receiver", ["frr"], indirect=True)
def test_frr_route_reflector_holds_both_paths_with_received_ids(
        interop: InteropLab, announced: None, interop_receiver: str, family: Family) -> None:
    routes = wait_routes(interop.daemons["frr"], DSID[family], lambda found: len(found) == 2)
    assert [(r.next_hop, r.path_id) for r in routes] == [
        (instance_address(p.instance, family), p.path_id) for p in PATHS]
    assert all(r.ext_communities is None and "UNK:131, 1" in r.text for r in routes), [r.text for r in routes]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("interop_receiver", RECEIVERS, indirect=True)
def test_withdraw_reaches_receiver(interop: InteropLab, announcer: Announcer, interop_receiver: str,
                                   family: Family) -> None:
    number = 20 + RECEIVERS.index(interop_receiver)
    prefix = f"203.0.113.{number}/32" if family == "ipv4" else f"2001:db8::{number}/128"
    view = interop.value_view(interop_receiver)
    announcer.send(*(path.announce(prefix, family) for path in PATHS))
    wait_routes(view, prefix, lambda found: len(found) == 2)
    announcer.send(PATHS[0].withdraw(prefix, family))
    remaining = wait_routes(view, prefix, lambda found: len(found) == 1)
    assert observed(remaining) == expected(family)[1:]
    announcer.send(PATHS[1].withdraw(prefix, family))
    wait_routes(view, prefix, lambda found: not found, what=f"{prefix} withdrawn from {interop_receiver}")


def test_speaker_restart_drops_its_routes_and_sessions_come_back(lab: Lab, interop: InteropLab) -> None:
    relay = Announcer(lab.directory("restart-announcer"), name="restart")
    speaker = interop.exabgp_speaker(1, processes=[relay.process()], name="restart-speaker")
    prefix = "198.51.100.40/32"
    views = [interop.value_view(name) for name in interop.receiver_names]
    try:
        for attempt in ("first", "after restart"):
            speaker.start()
            interop.wait_established([1], timeout=20)
            relay.send(PATHS[0].announce(prefix, "ipv4"))
            for view in views:
                wait_routes(view, prefix, lambda found: len(found) == 1, what=f"{prefix} at {view.name}, {attempt}")
            speaker.stop()
            for view in views:
                wait_routes(view, prefix, lambda found: not found, what=f"{prefix} gone from {view.name}, {attempt}")
    finally:
        speaker.stop()


def test_exabgp_refusal_is_reported(announcer: Announcer) -> None:
    with pytest.raises(AnnounceError, match="refused"):
        announcer.send("announce route 203.0.113.99/32 next-hop nonsense")


@pytest.mark.parametrize("interop_receiver", ["bird"], indirect=True)
def test_daemon_that_dies_is_reported_with_its_log(lab: Lab, interop_receiver: str) -> None:
    namespace = lab.namespace("broken")
    bird = Bird(lab, namespace, name="broken-bird", local=Local(65099, "10.99.0.1", ("10.99.0.1",)),
                peers=[Peer("10.99.0.2", 65098, passive=True)])
    (bird.directory / "bird.conf").write_text("this is not a bird config;\n")
    bird.start()
    with pytest.raises(DaemonError, match=r"(?s)broken-bird.*exited.*syntax error"):
        wait_established([(bird, "10.99.0.2")], timeout=10)


@pytest.mark.parametrize("interop_receiver", ["frr"], indirect=True)
def test_frr_starts_and_answers_without_peers_up(lab: Lab, interop_receiver: str) -> None:
    frr = Frr(lab, lab.namespace("frr-alone"), name="frr-alone", local=Local(65098, "10.98.0.1", ("10.98.0.1",)),
              peers=[Peer("10.98.0.2", 65097, passive=True)])
    frr.start()
    sessions = expect(frr.sessions, lambda found: "10.98.0.2" in found, what="FRR to list its peer", timeout=10)
    assert sessions == {"10.98.0.2": False}
    assert frr.rib("ipv4") == []


@pytest.mark.usefixtures("netns_ready")
def test_namespace_links_addresses_routes_and_sysctls() -> None:
    with Lab() as throwaway:
        client, server = throwaway.namespaces("client", "server")
        throwaway.veth(client, "to-server", server, "to-client")
        client.add_addresses("to-server", ["10.78.0.1/30", "fd00:78::1/64"])
        server.add_addresses("to-client", ["10.78.0.2/30", "fd00:78::2/64"])
        server.add_addresses("lo", ["203.0.113.10/32", "2001:db8::10/128"])  # an anycast D-SID on lo
        server.enable_forwarding()
        client.add_route("203.0.113.10/32", via="10.78.0.2")
        client.add_route("2001:db8::10/128", via="fd00:78::2")
        assert server.run(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        assert "203.0.113.10 via 10.78.0.2" in client.ip("route", "show")
        for target in ("203.0.113.10", "2001:db8::10"):
            client.run(["ping", "-c", "1", "-W", "2", target])


def gone(pid: int) -> bool:
    """The process no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.usefixtures("netns_ready")
def test_lab_removes_namespaces_and_processes_after_an_exception() -> None:
    with pytest.raises(RuntimeError, match="boom"), Lab(stop_grace=0.3) as throwaway:
        first, second = throwaway.namespaces("a", "b")
        throwaway.veth(first, "to-b", second, "to-a")
        first.add_addresses("to-b", ["10.77.0.1/30", "fd00:77::1/64"])
        # a process that ignores SIGTERM, and a child that leaves its process group
        stubborn = throwaway.spawn(first, "stubborn", ["sh", "-c", "trap '' TERM; setsid sleep 60 & sleep 60"])
        names = throwaway.namespace_names
        pids = expect(first.pids, lambda found: len(found) >= 3, what="sh and its two sleeps", timeout=5)
        raise RuntimeError("boom")
    assert not set(names) & set(list_namespaces())
    assert stubborn.returncode == -signal.SIGKILL
    assert expect(lambda: [pid for pid in pids if not gone(pid)], lambda alive: not alive,
                  what="every process of the lab to be gone", timeout=5) == []


@pytest.mark.usefixtures("netns_ready")
def test_sweep_stale_removes_only_the_namespaces_of_dead_owners(tmp_path: Path) -> None:
    with Lab(state_dir=tmp_path) as live, Lab(state_dir=tmp_path) as crashed:
        (kept,) = live.namespaces("live")
        (stale,) = crashed.namespaces("crashed")
        state_file = tmp_path / f"{crashed.token}.json"
        state = json.loads(state_file.read_text())
        state["owner_pid"], state["owner_start"] = 2**22 + 1, None  # above any pid_max: no such owner
        state_file.write_text(json.dumps(state))
        assert sweep_stale(tmp_path) == [stale.name]
        assert kept.name in list_namespaces() and stale.name not in list_namespaces()
        assert not state_file.exists()
