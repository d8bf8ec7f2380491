"""`dyncast ctl` drains and undrains an instance of the real agent running inside real ExaBGP.

Its own small lab (namespaces, one LAN): the agent in an ExaBGP speaker,
started from the config `dyncast exabgp-conf --role agent` renders, exactly as
an operator runs it, with ``agent.control_socket`` set; an ExaBGP receiver
shows what arrives. `dyncast ctl` runs as an ordinary command on the host (the
socket is a file; namespaces only separate the network). The receiver must
see the draining flag after `drain`, the plain route after `undrain`, and the
other instance must not move.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.lab.agent_speaker import RenderedExaBgp, dyncast_executable, start_agent
from dyncast_bgp.lab.daemons import wait_routes
from dyncast_bgp.lab.interop import InteropLab, instance_address, missing_binaries
from dyncast_bgp.lab.netns import Lab
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.rib import Route
from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import decode
from dyncast_bgp.wire.metrics import decode_metrics

pytestmark = [pytest.mark.netns, pytest.mark.interop]

DSID = "203.0.113.70/32"
A, B = instance_address(20, "ipv4"), instance_address(21, "ipv4")


class Running:
    def __init__(self, lab: InteropLab, speaker: RenderedExaBgp, socket: Path) -> None:
        self.lab, self.speaker, self.socket = lab, speaker, socket

    def ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([dyncast_executable(), "ctl", "--socket", str(self.socket), *args],
                              check=False, capture_output=True, text=True, timeout=30)

    def ctl_json(self, *args: str) -> dict[str, Any]:
        done = self.ctl(*args, "--json")
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def flags_at_receiver(self) -> dict[str, StateFlag]:
        routes = wait_routes(self.lab.daemons["exabgp"], DSID, lambda found: len(found) == 2, timeout=30)
        return flags_by_next_hop(routes)

    def wait_flags(self, want: dict[str, StateFlag]) -> None:
        wait_routes(self.lab.daemons["exabgp"], DSID, lambda found: flags_by_next_hop(found) == want,
                    what=f"{DSID} at the receiver with flags {want}", timeout=30)


def flags_by_next_hop(routes: list[Route]) -> dict[str, StateFlag]:
    return {route.next_hop: decode_metrics([decode(raw) for raw in route.ext_communities or ()]).metrics.flags
            for route in routes}


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 to create network namespaces (run as root, e.g. in CI)")
    if missing_binaries(["exabgp"]):
        pytest.skip("exabgp is not installed in this environment")
    with Lab() as lab:
        interop = InteropLab(lab, speakers=1, receivers=["exabgp"])
        interop.start_receivers()
        directory = lab.directory("agent")
        socket = directory / "agent.sock"
        config = {
            "bgp": {"add_path": True},
            "agent": {"respawn": False, "control_socket": str(socket), "control_socket_mode": "0600",
                      "publish": {"min_interval": 0.2, "refresh_interval": 30}},
            "services": [{"name": "web", "dsid": DSID, "instances": [
                {"name": "a", "binding": A, "capacity": 100, "static": {"cpu_utilization": 30}},
                {"name": "b", "binding": B, "capacity": 100, "static": {"cpu_utilization": 60}}]}],
        }
        speaker = start_agent(interop, 0, config, directory)
        try:
            interop.wait_established([0])
            expect(socket.exists, bool, what=f"the agent's control socket {socket}", timeout=30)
            yield Running(interop, speaker, socket)
        finally:
            speaker.stop()
        assert not socket.exists(), "the agent removes its control socket when it stops"


def test_1_both_instances_arrive_without_flags(running: Running) -> None:
    assert running.flags_at_receiver() == {A: StateFlag.NONE, B: StateFlag.NONE}
    listed = running.ctl("instances")
    assert listed.returncode == 0, listed.stderr
    assert "web/a" in listed.stdout and "web/b" in listed.stdout and "active" in listed.stdout


def test_2_drain_reaches_the_receiver_as_the_draining_flag(running: Running) -> None:
    done = running.ctl("drain", "web/a")
    assert done.returncode == 0, done.stderr
    assert "web/a: active -> draining" in done.stdout
    running.wait_flags({A: StateFlag.DRAINING, B: StateFlag.NONE})
    views = {v["instance"]: v for v in running.ctl_json("instances")["instances"]}
    assert views["a"]["admin"] == "draining" and views["a"]["published_flags"] == ["draining"]


def test_3_undrain_clears_it(running: Running) -> None:
    done = running.ctl("undrain", "a")  # a bare name: unique in this config
    assert done.returncode == 0, done.stderr
    running.wait_flags({A: StateFlag.NONE, B: StateFlag.NONE})


def test_4_errors_are_reported_and_change_nothing(running: Running) -> None:
    refused = running.ctl("undrain", "web/zz")
    assert refused.returncode == 2 and "no instance 'web/zz'" in refused.stderr
    status = running.ctl_json("status")["status"]
    assert status["admin_changes"] == 2 and status["control_rejected"] == 1
    assert running.flags_at_receiver() == {A: StateFlag.NONE, B: StateFlag.NONE}
    log = (running.speaker.directory / "exabgp.log").read_text(errors="replace")
    assert log.count("instance_admin_changed") == 2
