"""Session shift on failure (issue 9 item 4) with real traffic, on a copy of labs/intra-site.

- UDP, ``shift_on_failure: true``: one UDP flow (one socket, so one 5-tuple and one conntrack entry at the
  router) is answered by one instance; that instance's process is killed (SIGKILL). The router sees it
  fail (probes unanswered, then the agent's health check), evicts the flow's conntrack entry, and the
  flow's next datagrams (same socket) are answered by another instance: the flow moved.
- TCP, ``shift_on_failure: false`` (the default): one keep-alive HTTP connection is served by one
  instance; that instance freezes (SIGSTOP), so it fails its health check and its probes. The router takes
  it out of new flows but does not touch the connection's conntrack entry (same mark before and after),
  evicts nothing, and when the instance wakes (SIGCONT) the request sent meanwhile on the same
  connection is answered by the same instance: the flow did not move.

The copy is renamed (``intra-shift``) so it never shares namespaces or run files with the original lab.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.runner import LabRun
from dyncast_bgp.lab.udpflow import Datagram, read_flow
from dyncast_bgp.router.status import read_status
from tests.integration.intra_copy import intra_site_copy
from tests.integration.test_intra_site_lab import INSTANCES, skip_reason

pytestmark = [pytest.mark.netns, pytest.mark.lab, pytest.mark.slow, pytest.mark.timing]

RUN = "/run/dyncast-lab/intra-shift"
DSID, PORT = "203.0.113.10", 8080
NAMES = {address: name for name, address in INSTANCES.items()}
MOVE_WITHIN = 5.0  # seconds from the kill to the first answer from another instance (measured ~1 s)


def lab_copy(tmp_path: Path, *, shift: bool) -> Path:
    """labs/intra-site renamed, every instance also answering UDP on the D-SID, shift_on_failure as asked."""
    def topology(text: str) -> str:
        text, count = re.subn(r"(--echo 10\.10\.\d\.2)", rf"\1 --udp {DSID}", text)
        assert count == 3, "every instance's cmd line should carry --echo"
        return text

    def access(text: str) -> str:
        text, count = re.subn(r"(\n    affinity_timeout: \d+\n)",
                              rf"\1    shift_on_failure: {'true' if shift else 'false'}\n", text)
        assert count == 1, "access.yml's router defaults should set affinity_timeout"
        return text

    return intra_site_copy(tmp_path, "intra-shift", RUN, topology=topology, access=access)


def rows(document: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    entry = ((document or {}).get("services") or {}).get(f"{DSID}/32") or {}
    return {NAMES.get(str(item.get("instance")), str(item.get("instance"))): item
            for item in entry.get("instances", [])}


def counters(document: dict[str, Any] | None) -> dict[str, Any]:
    return dict((document or {}).get("counters") or {})


def started_lab(tmp_path: Path, *, shift: bool) -> tuple[LabRun, Path, float]:
    pytest.importorskip("uvloop")
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    status_file = Path(f"{RUN}/access.status.json")
    status_file.unlink(missing_ok=True)  # a previous run's file would pass the first wait at once
    return LabRun(load_topology(lab_copy(tmp_path, shift=shift)), stop_grace=2.0), status_file, time.time()


def wait_all_weighted(status_file: Path, since: float) -> None:
    def fresh() -> dict[str, Any] | None:
        document = read_status(status_file)
        return document if document is not None and float(document.get("time", 0)) >= since else None

    expect(lambda: rows(fresh()), lambda r: set(r) == set(INSTANCES) and all(
        float(row.get("weight") or 0) > 0 for row in r.values()), timeout=60.0, wait=0.25,
        what="a decision giving all three instances new flows")


def flow_of(path: Path) -> tuple[dict[str, Any], list[Datagram]]:
    try:
        with path.open(encoding="utf-8") as lines:
            return read_flow(lines, origin=str(path))
    except FileNotFoundError:
        return {}, []


def test_udp_flow_moves_off_a_killed_instance_with_shift_on_failure(tmp_path: Path) -> None:
    lab, status_file, since = started_lab(tmp_path, shift=True)
    with lab as run:
        wait_all_weighted(status_file, since)
        flow_file = run.workdir / "udp-flow.jsonl"
        client = run.spawn("client", "udp-flow", [
            str(Path(sys.executable).with_name("dyncast")), "lab", "udp-flow", "--target", f"{DSID}:{PORT}",
            "--interval", "0.05", "--timeout", "0.2", "--duration", "40", "--out", str(flow_file)])
        _, first = expect(lambda: flow_of(flow_file), lambda f: sum(d.instance is not None for d in f[1]) >= 20,
                          timeout=15.0, wait=0.1, what="20 answered datagrams of the UDP flow")
        owner = next(d.instance for d in first if d.instance is not None)
        assert owner in INSTANCES and {d.instance for d in first} <= {owner, None}, first

        victims = run.node_processes(owner)
        assert victims, f"no process in {owner}"
        killed = time.time()
        for process in victims:
            process.send_signal(signal.SIGKILL)
        expect(lambda: [p for p in victims if p.alive()], lambda alive: not alive, timeout=5.0,
               what=f"{owner}'s processes gone")

        def after_kill() -> list[Datagram]:
            return [d for d in flow_of(flow_file)[1] if d.t >= killed]

        moved = expect(after_kill, lambda items: any(d.instance not in (None, owner) for d in items),
                       timeout=MOVE_WITHIN + 5.0, wait=0.1, what=f"an answer from an instance other than {owner}")
        first_new = next(d for d in moved if d.instance not in (None, owner))
        taken = first_new.t - killed
        # the flow then stays on its new instance
        expect(after_kill, lambda items: sum(d.t > first_new.t for d in items) >= 20, timeout=10.0, wait=0.1,
               what="20 more datagrams after the move")
        later = [d for d in after_kill() if d.t > first_new.t]
        document = read_status(status_file)
        run.stop(client)
        print(f"\nUDP flow: {owner} killed; first answer from {first_new.instance} {taken:.2f} s later; "
              f"after it {sum(d.instance is not None for d in later)}/{len(later)} answered; "
              f"router counters: shifted_flows={counters(document).get('shifted_flows')}, "
              f"shift_evictions={counters(document).get('shift_evictions')}; "
              f"{owner}: {rows(document).get(owner, {}).get('reason') or 'withdrawn'}")
        assert taken <= MOVE_WITHIN
        assert {d.instance for d in later} <= {first_new.instance, None}
        assert sum(d.instance == first_new.instance for d in later) >= 0.9 * len(later)
        assert int(counters(document).get("shift_evictions", 0)) >= 1
        assert int(counters(document).get("shifted_flows", 0)) >= 1


HELD_CONNECTION = r"""
import json, os, re, socket, sys, time
go = sys.argv[1]
conn = socket.create_connection((DSID, PORT), timeout=60)

def ask():
    conn.sendall(b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("closed by the server")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        body += conn.recv(4096)
    return re.search(rb"(?i)x-instance:\s*(\S+)", head).group(1).decode()

print(json.dumps({"port": conn.getsockname()[1], "instance": ask()}), flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
sent = time.time()
try:
    who = ask()
    print(json.dumps({"instance": who, "sent": sent, "answered": time.time()}), flush=True)
except OSError as exc:
    print(json.dumps({"error": str(exc), "sent": sent}), flush=True)
""".replace("DSID, PORT", f"{DSID!r}, {PORT}")


def log_lines(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    except FileNotFoundError:
        return []


def conntrack_marks(run: LabRun, port: int) -> list[str]:
    done = run.exec("access", ["conntrack", "-L", "-p", "tcp", "--sport", str(port)], check=False)
    return re.findall(r"mark=(\d+)", done.stdout)


def test_tcp_flow_stays_on_its_failed_instance_without_shift_on_failure(tmp_path: Path) -> None:
    lab, status_file, since = started_lab(tmp_path, shift=False)
    with lab as run:
        wait_all_weighted(status_file, since)
        go = run.workdir / "go"
        client = run.spawn("client", "held-connection", [sys.executable, "-c", HELD_CONNECTION, str(go)])
        log = Path(client.log_path)
        first = expect(lambda: log_lines(log), lambda lines: len(lines) >= 1, timeout=15.0, wait=0.1,
                       what="the held connection's first answer")[0]
        owner, port = str(first["instance"]), int(first["port"])
        marks_before = conntrack_marks(run, port)
        assert len(marks_before) == 1, marks_before

        frozen = run.node_processes(owner)
        for process in frozen:
            process.send_signal(signal.SIGSTOP)
        try:
            out = expect(lambda: rows(read_status(status_file)).get(owner),
                         lambda row: not (row or {}).get("eligible", False), timeout=10.0, wait=0.1,
                         what=f"the router taking the frozen {owner} out of new flows")
            reason = (out or {}).get("reason") or "withdrawn"
            go.touch()  # the next request on the held connection, sent to the frozen instance
            time.sleep(1.0)
            marks_during = conntrack_marks(run, port)
            assert log_lines(log)[1:] == [], "the request was answered while its instance was frozen"
        finally:
            for process in frozen:
                process.send_signal(signal.SIGCONT)
        second = expect(lambda: log_lines(log), lambda lines: len(lines) >= 2, timeout=20.0, wait=0.1,
                        what="the held connection's second answer")[1]
        document = read_status(status_file)
        run.stop(client)
        print(f"\nTCP connection on {owner} ({reason}): conntrack mark {marks_before} before, {marks_during} "
              f"while frozen; second request answered by {second.get('instance')} after "
              f"{float(second.get('answered', 0)) - float(second.get('sent', 0)):.2f} s; router counters: "
              f"shifted_flows={counters(document).get('shifted_flows')}, "
              f"shift_evictions={counters(document).get('shift_evictions')}")
        assert marks_during == marks_before
        assert second.get("instance") == owner, second
        assert int(counters(document).get("shift_evictions", 0)) == 0
        assert int(counters(document).get("shifted_flows", 0)) == 0
