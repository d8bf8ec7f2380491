"""containerlab files run in namespaces: tests/data/clab/line.clab.yml (h1 --- r1 FRR --- h2) comes up,
carries UDP and TCP across, impairs h1's egress by the configured delay, and leaves nothing behind.

Delay is measured with a UDP echo (h2's ``cmd``), not ICMP. Where the kernel
has no netem, h1's link runs through the userspace forwarder; the test prints
which one was used.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.netns import list_namespaces, start_time
from dyncast_bgp.lab.runner import LabRun, read_record, record_path

pytestmark = [pytest.mark.netns, pytest.mark.slow, pytest.mark.timing]

DATA = Path(__file__).parent.parent / "data" / "clab"
LINE = DATA / "line.clab.yml"
DELAY_MS = 30.0
RTT_CLIENT = r"""
import json, socket, sys, time
target, count = sys.argv[1], int(sys.argv[2])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(0.2)
for attempt in range(50):  # until the echo server (h2's cmd) listens; also resolves ARP
    try:
        sock.sendto(b"warm", (target, 9960))
        sock.recv(100)
        break
    except OSError:
        time.sleep(0.1)
sock.settimeout(1.0)
rtts = []
for index in range(count):
    started = time.monotonic()
    sock.sendto(b"%d" % index, (target, 9960))
    sock.recv(100)
    rtts.append((time.monotonic() - started) * 1000)
print(json.dumps(sorted(rtts)))
"""
TCP_SERVER = r"""
import socket
server = socket.create_server(("0.0.0.0", 9961))
while True:
    conn, _ = server.accept()
    with conn:
        data = b""
        while len(data) < 200000:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        conn.sendall(str(len(data)).encode())
"""
TCP_CLIENT = r"""
import socket, sys
with socket.create_connection((sys.argv[1], 9961), timeout=10) as conn:
    conn.sendall(b"x" * 200000)
    print(conn.recv(100).decode())
"""


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, e.g. in CI)"
    missing = [tool for tool in ("ip", "tc", "/usr/lib/frr/zebra", "vtysh") if shutil.which(tool) is None]
    return f"missing {', '.join(missing)}" if missing else None


@pytest.fixture(scope="module")
def run() -> Iterator[LabRun]:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    lines: list[str] = []
    lab = LabRun(load_topology(LINE), progress=lines.append, stop_grace=2.0)
    with lab:
        print(f"\nimpairment: {lab.record.netem}; " + "; ".join(lines))
        yield lab
    names, pids = lab.record.namespaces, [p.pid for p in lab.record.processes]
    assert not set(names) & set(list_namespaces()), "namespaces left behind"
    assert all(start_time(pid) is None for pid in pids), "processes left behind"
    assert read_record(lab.topology) is None


def rtts(run: LabRun, target: str, count: int = 20) -> list[float]:
    done = run.exec("h1", [sys.executable, "-c", RTT_CLIENT, target, str(count)], timeout=30.0)
    values: list[float] = json.loads(done.stdout)
    return values


def test_udp_crosses_the_router_with_the_configured_delay(run: LabRun) -> None:
    measured = rtts(run, "10.40.99.1")  # a static route in r1's frr.conf leads there
    median = measured[len(measured) // 2]
    print(f"netem delay {DELAY_MS:g} ms: RTT min {measured[0]:.2f} median {median:.2f} max {measured[-1]:.2f} ms")
    assert measured[0] >= DELAY_MS and median <= DELAY_MS + 3.0


def test_impair_changes_the_delay_at_run_time(run: LabRun) -> None:
    run.impair("h1", "eth1", delay_ms=5.0)
    try:
        measured = rtts(run, "10.40.2.2")
    finally:
        run.impair("h1", "eth1", delay_ms=DELAY_MS)
    print(f"impair 5 ms: RTT min {measured[0]:.2f} median {measured[len(measured) // 2]:.2f} ms")
    assert measured[0] >= 5.0 and measured[len(measured) // 2] <= 8.0
    with pytest.raises(LabError, match="not on an impairable link") if run.record.netem == "userspace" \
            else _no_error():
        run.impair("r1", "eth2", delay_ms=1.0)
        run.impair("r1", "eth2")


class _no_error:  # noqa: N801 - reads like a context manager name
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_tcp_crosses_the_impaired_link(run: LabRun) -> None:
    server = run.spawn("h2", "tcp-sink", [sys.executable, "-c", TCP_SERVER])
    try:
        done = run.exec("h1", [sys.executable, "-c", TCP_CLIENT, "10.40.2.2"], timeout=30.0, check=False)
        if done.returncode != 0 and "refused" in done.stderr:  # the server was still starting
            done = run.exec("h1", [sys.executable, "-c", TCP_CLIENT, "10.40.2.2"], timeout=30.0)
        assert done.stdout.strip() == "200000", (done.stdout, done.stderr)
    finally:
        run.stop(server)


def test_exec_and_frr_from_the_integrated_config(run: LabRun) -> None:
    routes = json.loads(run.exec("r1", "vtysh -c 'show ip route json'").stdout)
    assert routes["10.40.99.0/24"][0]["protocol"] == "static"
    assert run.exec("h2", "echo $ECHO_PORT").stdout.strip() == "9960"
    assert run.exec("h1", ["sh", "-c", "exit 3"], check=False).returncode == 3


def test_each_node_has_its_own_temporary_directory(run: LabRun) -> None:
    """As a container has its own /tmp: inside the lab's work directory, so it goes with the lab (what
    ``dyncast exabgp-run`` writes by default was left in the host's /tmp after every lab run)."""
    workdir = Path(run.record.workdir)
    where = {node: Path(run.exec(node, [sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"]
                                 ).stdout.strip()) for node in ("h1", "h2")}
    assert where["h1"] != where["h2"]
    for node, tmp in where.items():
        assert tmp.is_relative_to(workdir) and tmp.is_dir(), (node, tmp)
        assert tmp.stat().st_mode & 0o7777 == 0o1777
    exabgp_dir = run.exec("h1", [sys.executable, "-c", "from pathlib import Path; from dyncast_bgp.exabgp.run "
                                 "import default_workdir; print(default_workdir(Path('x.yml'), 'router'))"])
    assert Path(exabgp_dir.stdout.strip()).parent == where["h1"]
    detached = subprocess.run([sys.executable, "-m", "dyncast_bgp.lab.topology_cli", "exec", str(LINE), "h2", "--",
                               "sh", "-c", "echo $TMPDIR"], capture_output=True, text=True, timeout=60, check=False)
    assert detached.stdout.strip() == str(where["h2"]), detached.stdout + detached.stderr  # the record's env


def test_the_command_line_sees_the_running_lab(run: LabRun) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dyncast_bgp.lab.topology_cli", *args], capture_output=True,
                              text=True, timeout=60, check=False)

    status = cli("status", str(LINE))
    assert status.returncode == 1, status.stdout + status.stderr  # the tcp-sink was stopped
    assert "r1-zebra" in status.stdout and "present" in status.stdout
    assert "tcp-sink" in status.stdout and "dead (exit -15)" in status.stdout
    assert cli("exec", str(LINE), "h2", "--", "sh", "-c", "exit 7").returncode == 7
    assert cli("netem", str(LINE), "h1:eth1", "--delay", str(DELAY_MS)).returncode == 0
    second = cli("up", str(LINE))
    assert second.returncode == 1 and "already up" in second.stderr


def test_a_failing_exec_leaves_nothing_behind(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    for item in DATA.iterdir():
        (tmp_path / item.name).symlink_to(item)
    broken = tmp_path / "broken.clab.yml"
    broken.write_text(LINE.read_text().replace("name: dcb-line", "name: dcb-broken").replace(
        "- ip addr add 10.40.99.1/32 dev lo", "- ip addr add 10.40.99.1/32 dev nosuchdev"))
    before = set(list_namespaces())
    lab = LabRun(load_topology(broken), stop_grace=1.0)
    with pytest.raises(LabError, match="nosuchdev") as info:
        lab.start()
    assert "exec 'ip addr add 10.40.99.1/32 dev nosuchdev' exited" in str(info.value)
    assert set(list_namespaces()) == before
    assert all(start_time(p.pid) is None for p in lab.record.processes)
    assert read_record(lab.topology) is None


def test_detached_up_and_down(tmp_path: Path) -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    topology = tmp_path / "pair.clab.yml"
    topology.write_text("name: dcb-pair\ntopology:\n  nodes:\n    a: {kind: linux, exec: [ip addr add 10.41.0.1/30 "
                        "dev e1], cmd: sleep 600}\n    b: {kind: linux, exec: [ip addr add 10.41.0.2/30 dev e1]}\n"
                        "  links:\n    - endpoints: [a:e1, b:e1]\n")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dyncast_bgp.lab.topology_cli", *args, str(topology)],
                              capture_output=True, text=True, timeout=120, check=False)

    up = cli("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    record = read_record(load_topology(topology))
    assert record is not None and record.owner_alive()
    try:
        assert cli("status").returncode == 0
        again = cli("up", "--detach")
        assert again.returncode == 1 and "already up" in again.stderr
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert not set(record.namespaces) & set(list_namespaces())
    assert not record.owner_alive() and all(not p.alive() for p in record.processes)
    assert cli("status").returncode == 3
    record_path(load_topology(topology)).with_suffix(".log").unlink(missing_ok=True)  # the supervisor's log
