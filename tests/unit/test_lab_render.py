"""Lab daemon configurations pass each daemon's own checker; pure helpers of the harness behave.

The checkers run without namespaces or root: ``exabgp validate``, ``bird -p``,
``gobgpd -d`` and ``bgpd -C`` (FRR reports failed lines but exits 0, so its
output is checked too). A test skips when its daemon is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import tomllib
from pathlib import Path

import pytest

from dyncast_bgp.lab.announcer import AnnounceError, Announcer
from dyncast_bgp.lab.daemons import bird, exabgp, frr, gobgp
from dyncast_bgp.lab.daemons.base import Local, Peer
from dyncast_bgp.lab.errors import DaemonError, LabError, WaitTimeoutError
from dyncast_bgp.lab.netns import address_command, route_command
from dyncast_bgp.lab.poll import expect, run_and_expect

LOCAL = Local(65000, "10.0.0.3", ("10.0.0.3", "fd00::3"))
PEERS = (
    Peer("10.0.0.11", 65000, passive=True, export_routes=False, description="speaker0"),
    Peer("fd00::4", 65000, rr_client=True, add_path_send=True, families=("ipv6",)),
    Peer("10.0.0.5", 65005, add_path_receive=False),
)


def checker(binary: str) -> str:
    found = shutil.which(binary, path=f"/usr/lib/frr:/usr/sbin:/usr/bin:{os.environ.get('PATH', '')}")
    if found is None:
        pytest.skip(f"{binary} is not installed")
    return found


def check(argv: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          env=None if env is None else {**os.environ, **env})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_exabgp_config_validates(tmp_path: Path) -> None:
    executable = Path(sys.executable).with_name("exabgp")
    if not executable.exists():
        pytest.skip("exabgp is not installed next to this Python")
    relay = Announcer(tmp_path)
    processes = [exabgp.sink_process(tmp_path / "events.jsonl", receive_updates=True), relay.process()]
    text = exabgp.render_config(LOCAL, PEERS, processes)
    assert text.count("api lab-sink.") == len(PEERS) and "api announcer.2 {" in text
    assert "capability { add-path send/receive; }" in text and "family { ipv6 unicast; }" in text
    (tmp_path / "exabgp.conf").write_text(text)
    check([str(executable), "validate", str(tmp_path / "exabgp.conf")],
          env={"exabgp_api_cli": "false", "exabgp_daemon_user": "root"})


def test_exabgp_environment_listens_only_for_passive_peers() -> None:
    env = exabgp.environment(LOCAL, PEERS)
    assert env["exabgp_tcp_bind"] == "10.0.0.3"
    assert exabgp.environment(LOCAL, PEERS[1:])["exabgp_tcp_bind"] == ""


def test_exabgp_process_arguments_are_checked() -> None:
    with pytest.raises(DaemonError, match="spaces"):
        exabgp.ApiProcess("agent", ("/usr/bin/env", "a b"))


def test_bird_config_parses(tmp_path: Path) -> None:
    binary = checker("bird")
    text = bird.render_config(LOCAL, PEERS)
    assert "add paths tx;" not in text and "export none;" in text and "rr client;" in text
    (tmp_path / "bird.conf").write_text(text)
    check([binary, "-p", "-c", str(tmp_path / "bird.conf")])


def test_gobgp_config_is_toml_and_accepted(tmp_path: Path) -> None:
    binary = checker("gobgpd")
    text = gobgp.render_config(LOCAL, PEERS)
    parsed = tomllib.loads(text)
    assert parsed["global"]["config"]["local-address-list"] == ["10.0.0.3", "fd00::3"]
    first, second, third = parsed["neighbors"]
    assert first["apply-policy"]["config"]["default-export-policy"] == "reject-route"
    assert second["route-reflector"]["config"]["route-reflector-client"] is True
    assert [s["config"]["afi-safi-name"] for s in second["afi-safis"]] == ["ipv6-unicast"]
    assert third["afi-safis"][0]["add-paths"]["config"] == {"receive": False}
    (tmp_path / "gobgpd.toml").write_text(text)
    check([binary, "-d", "-f", str(tmp_path / "gobgpd.toml"), "-t", "toml"])


def test_frr_config_is_accepted_by_bgpd(tmp_path: Path) -> None:
    binary = checker("bgpd")
    if os.geteuid() != 0:
        pytest.skip("bgpd -C needs root here")
    text = frr.render_bgpd("rr", LOCAL, PEERS)
    assert " neighbor 10.0.0.5 timers connect 1" in text and "  neighbor fd00::4 addpath-tx-all-paths" in text
    (tmp_path / "bgpd.conf").write_text(text)
    output = check([binary, "-C", "-Z", "-p", "0", "-S", "-u", "root", "-g", "root", "-f", str(tmp_path / "bgpd.conf"),
                    "--log", "stdout", "-z", str(tmp_path / "zserv.api"), "-i", str(tmp_path / "bgpd.pid"),
                    "--vty_socket", str(tmp_path)])
    assert "Config Failed" not in output and "% " not in output, output


def test_address_and_route_commands() -> None:
    assert address_command("eth0", "10.0.0.1/24") == "address add 10.0.0.1/24 dev eth0"
    assert address_command("lo", "2001:db8::10/128") == "address add 2001:db8::10/128 dev lo nodad"
    assert route_command("203.0.113.0/24", via="10.0.0.1") == "route add 203.0.113.0/24 via 10.0.0.1"
    assert (route_command("2001:db8::/32", dev="eth0", table=100, onlink=True)
            == "route add 2001:db8::/32 dev eth0 table 100 onlink")
    with pytest.raises(LabError, match="needs a gateway"):
        route_command("203.0.113.0/24")


def test_local_address_of_the_peer_family() -> None:
    assert LOCAL.address_for("fd00::9") == "fd00::3"
    with pytest.raises(DaemonError, match="no local IPv6 address"):
        Local(65000, "10.0.0.3", ("10.0.0.3",)).address_for("fd00::9")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def time(self) -> float:
        return self.now


def test_run_and_expect_is_bounded_by_count() -> None:
    clock = FakeClock()
    calls: list[int] = []

    def count_calls() -> int:
        calls.append(1)
        return len(calls)

    ok, last = run_and_expect(count_calls, lambda n: n == 3, count=5, wait=0.5, sleep=clock.sleep)
    assert (ok, last, clock.now) == (True, 3, 1.0)
    ok, last = run_and_expect(lambda: 0, lambda n: n == 1, count=3, wait=0.5, sleep=clock.sleep)
    assert (ok, last) == (False, 0)


def test_expect_times_out_with_the_last_observation_and_diagnosis() -> None:
    clock = FakeClock()
    with pytest.raises(WaitTimeoutError, match=r"(?s)2s waiting for peers.*last observed: \['a'\].*log tail"):
        expect(lambda: ["a"], lambda down: not down, what="peers", timeout=2, wait=0.5,
               diagnose=lambda: "log tail", sleep=clock.sleep, clock=clock.time)
    assert clock.now == 2.0


def test_announcer_relays_commands_and_reports_refusals(tmp_path: Path) -> None:
    relay = Announcer(tmp_path)
    child = subprocess.Popen(relay.process().argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    stdin, stdout = child.stdin, child.stdout
    seen: list[str] = []

    def fake_exabgp() -> None:  # acknowledges like ExaBGP: 'error' for what it cannot parse
        for raw in stdout:
            line = raw.decode().strip()
            seen.append(line)
            stdin.write(b"error\n" if "nonsense" in line else b"done\n")
            stdin.flush()

    thread = threading.Thread(target=fake_exabgp, daemon=True)
    thread.start()
    try:
        relay.send("announce route 203.0.113.1/32 next-hop 10.0.0.101",
                   "withdraw route 203.0.113.1/32 next-hop 10.0.0.101")
        with pytest.raises(AnnounceError, match="nonsense"):
            relay.send("announce route 203.0.113.2/32 next-hop nonsense")
        with pytest.raises(AnnounceError, match="single command line"):
            relay.send("announce a\nannounce b")
    finally:
        stdin.close()
        assert child.wait(timeout=10) == 0
    thread.join(timeout=5)
    assert seen == ["announce route 203.0.113.1/32 next-hop 10.0.0.101",
                    "withdraw route 203.0.113.1/32 next-hop 10.0.0.101",
                    "announce route 203.0.113.2/32 next-hop nonsense"]
    assert relay.acks() == ["done", "done", "error"]
