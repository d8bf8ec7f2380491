"""The real agent inside a real ExaBGP 5.0 announces to ExaBGP, FRR (RR + client), BIRD and GoBGP.

The speaker runs the ExaBGP configuration rendered by `dyncast exabgp-conf --role
agent` from the agent's own YAML config. The phases run in file order on one
agent (module scope): announce, metric change, health failure, SIGTERM. At each
phase every receiver's own view must show the exact communities the agent sent:
ExaBGP JSON, BIRD's `show route all`, GoBGP's JSON, and FRR through its route
reflector client (FRR prints unknown extended communities without their value).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dyncast_bgp.lab.agent_speaker import RenderedExaBgp, child_pids, start_agent
from dyncast_bgp.lab.daemons import wait_routes
from dyncast_bgp.lab.interop import InteropLab, instance_address
from dyncast_bgp.lab.netns import Lab
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.rib import Route
from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import LinkBandwidth, decode
from dyncast_bgp.wire.metrics import decode_metrics, encode_metrics

pytestmark = [pytest.mark.netns, pytest.mark.interop]

SLOT = 1
DSID4 = "203.0.113.40/32"
DSID6 = "2001:db8:40::1/128"
A4, B4, C6 = instance_address(4, "ipv4"), instance_address(5, "ipv4"), instance_address(4, "ipv6")
RECEIVERS = ["exabgp", "frr", "bird", "gobgp"]


@dataclass
class Agent:
    directory: Path
    speaker: RenderedExaBgp

    def set_metrics(self, text: str) -> None:
        target = self.directory / "a.metrics"
        temporary = target.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(target)


def agent_config(directory: Path) -> dict[str, object]:
    return {
        "bgp": {"add_path": True, "link_bandwidth": True},
        "agent": {"respawn": False, "publish": {"min_interval": 0.2, "refresh_interval": 30,
                                                "threshold": {"relative": 0.05}}},
        "services": [
            {"name": "web", "dsid": DSID4, "instances": [
                {"name": "a", "binding": A4, "capacity": 1000, "version": 7,
                 "metrics": [{"type": "file", "path": str(directory / "a.metrics"), "interval": 0.2,
                              "timeout": 0.2}]},
                {"name": "b", "binding": B4, "static": {"cpu_utilization": 55.5},
                 "health": {"type": "command", "argv": ["/usr/bin/test", "-e", str(directory / "b.healthy")],
                            "interval": 0.5, "fast_interval": 0.1, "timeout": 0.4, "rise": 1, "fall": 2}},
            ]},
            {"name": "dns", "dsid": DSID6, "instances": [
                {"name": "c", "binding": C6, "capacity": 500,
                 "static": {"cpu_utilization": 12.5, "service_delay": 800}}]},
        ],
    }


@pytest.fixture(scope="module")
def agent(lab: Lab, interop: InteropLab) -> Iterator[Agent]:
    directory = lab.directory("agent")
    (directory / "a.metrics").write_text("cpu_utilization=20\nactive_sessions=120\n")
    (directory / "b.healthy").write_text("")
    speaker = start_agent(interop, SLOT, agent_config(directory), directory)
    interop.wait_established([SLOT])
    yield Agent(directory, speaker)
    speaker.stop()


def expected(values: dict[str, float], *, flags: StateFlag = StateFlag.NONE, version: int | None = None,
             capacity_for_bandwidth: float | None = None) -> list[str]:
    communities: list[object] = list(encode_metrics(values, flags=flags, version=version))
    if capacity_for_bandwidth is not None:
        free = capacity_for_bandwidth * (1 - values.get("cpu_utilization", 0.0) / 100)
        communities.append(LinkBandwidth.of(65000, free))
    return sorted("0x" + c.pack().hex() for c in communities)  # type: ignore[attr-defined]


def by_next_hop(routes: list[Route]) -> dict[str, list[str] | None]:
    return {route.next_hop: route.communities_hex() for route in routes}


def wait_paths(interop: InteropLab, receiver: str, prefix: str, want: dict[str, list[str]]) -> list[Route]:
    return wait_routes(interop.value_view(receiver), prefix, lambda found: by_next_hop(found) == want,
                       what=f"{prefix} at {receiver} == {want}", timeout=15)


A_FIRST = {"cpu_utilization": 20.0, "active_sessions": 120.0, "capacity": 1000.0}
B_STATIC = {"cpu_utilization": 55.5}
C_STATIC = {"cpu_utilization": 12.5, "service_delay": 800.0, "capacity": 500.0}


@pytest.mark.parametrize("interop_receiver", RECEIVERS, indirect=True)
def test_1_both_instances_and_ipv6_arrive_with_exact_metrics(agent: Agent, interop: InteropLab,
                                                            interop_receiver: str) -> None:
    routes = wait_paths(interop, interop_receiver, DSID4, {
        A4: expected(A_FIRST, version=7, capacity_for_bandwidth=1000),
        B4: expected(B_STATIC)})
    decoded = {r.next_hop: decode_metrics([decode(raw) for raw in r.ext_communities or ()]) for r in routes}
    assert decoded[A4].metrics.values == A_FIRST and decoded[A4].metrics.version == 7
    bandwidth = decoded[A4].link_bandwidth
    assert bandwidth is not None and bandwidth.bytes_per_second == 800.0
    assert decoded[B4].metrics.values == B_STATIC and not decoded[B4].problems
    wait_paths(interop, interop_receiver, DSID6, {C6: expected(C_STATIC, capacity_for_bandwidth=500)})


def test_2_add_path_ids_reach_exabgp_and_the_rr_client(agent: Agent, interop: InteropLab) -> None:
    for view in (interop.daemons["exabgp"], interop.rr_client):
        routes = wait_routes(view, DSID4, lambda found: len(found) == 2)
        ids = {route.next_hop: route.path_id for route in routes}
        if view is interop.daemons["exabgp"]:
            assert ids == {A4: 1, B4: 2}  # the agent's own path ids, received directly
        else:
            assert len(set(ids.values())) == 2  # FRR re-numbers, but keeps two distinct paths


@pytest.mark.parametrize("interop_receiver", RECEIVERS, indirect=True)
def test_3_metric_change_is_reannounced(agent: Agent, interop: InteropLab, interop_receiver: str) -> None:
    agent.set_metrics("cpu_utilization=70\nactive_sessions=480\n")
    changed = {"cpu_utilization": 70.0, "active_sessions": 480.0, "capacity": 1000.0}
    wait_paths(interop, interop_receiver, DSID4, {
        A4: expected(changed, version=7, capacity_for_bandwidth=1000), B4: expected(B_STATIC)})


@pytest.mark.parametrize("interop_receiver", RECEIVERS, indirect=True)
def test_4_failed_health_check_withdraws_only_that_instance(agent: Agent, interop: InteropLab,
                                                            interop_receiver: str) -> None:
    (agent.directory / "b.healthy").unlink(missing_ok=True)
    routes = wait_routes(interop.value_view(interop_receiver), DSID4, lambda found: [r.next_hop for r in found] == [A4],
                         what=f"only {A4} left at {interop_receiver}", timeout=15)
    assert routes[0].next_hop == A4


def test_5_sigterm_withdraws_everything_at_every_receiver(agent: Agent, interop: InteropLab) -> None:
    pids = expect(lambda: child_pids(agent.speaker), lambda found: len(found) == 1,
                  what="the agent process under ExaBGP")
    subprocess.run(["kill", "-TERM", str(pids[0])], check=True)
    for receiver in [name for name in RECEIVERS if name in interop.receiver_names]:
        view = interop.value_view(receiver)
        for prefix in (DSID4, DSID6):
            wait_routes(view, prefix, lambda found: not found, what=f"{prefix} withdrawn at {receiver}", timeout=15)
    log = (agent.speaker.directory / "exabgp.log").read_text(errors="replace")
    assert "agent_signal" in log and "SIGTERM" in log
