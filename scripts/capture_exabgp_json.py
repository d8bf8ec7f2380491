#!/usr/bin/env python3
"""Capture real ExaBGP JSON API output as golden inputs for dyncast_bgp.wire.exabgp_json.

Two ExaBGP speakers peer over loopback (127.0.83.1 announces, 127.0.83.2
receives, on a free high port). The announcer's API process replays a fixed
plan of text commands (announce/withdraw with next-hop, path-information,
metric extended communities, as-path, med, local-preference, several NLRIs,
IPv6, a flow route, end-of-RIB, route refresh), then tears the session down
with NOTIFICATIONs, lets it come back (ExaBGP re-sends its RIB), and is
finally stopped so that the receiver sees the peer go down. The receiver's
API process (``encoder json``) appends every line it is given to a file.

Variants: receiver ExaBGP 5.0 or 4.2; "basic" is eBGP (65001 -> 65002) with an
extra ``ipv4 flow`` family, "addpath" is iBGP (65001 <-> 65001, so LOCAL_PREF is
carried) with ``add-path send/receive``. The announcer is always the ExaBGP the
agent uses (5.0 unless ``--announcer`` says otherwise). The session is torn
down twice (Cease subcodes 4 and 3) before the final stop.

    .venv/bin/python scripts/capture_exabgp_json.py \\
        --exabgp50 .venv/bin/exabgp --exabgp42 /tmp/exa42/bin/exabgp \\
        --out tests/golden/exabgp_json

Every process this script starts runs in its own session and is stopped by
its process-group id before the script returns, also on error.

The same file is the API helper ExaBGP runs: ``--role record`` and
``--role announce`` are the two child roles and are not meant to be run by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ANNOUNCER = "127.0.83.1"
RECEIVER = "127.0.83.2"
ANNOUNCER_AS = 65001
RECEIVER_AS = 65002
SENTINEL = "198.51.100.255/32"
STEP_PAUSE = 0.4  # seconds between commands, so that each becomes its own UPDATE

# Metric extended communities (DESIGN.md section 3), written out so that a
# codec change cannot silently change the captures:
#   0x83 01 2280 422a0000  cpu_utilization, raw, float32, percent, measured, current = 42.5
#   0x83 20 a0c0 40f00000  overall_score, L2, float32, none, normalized, current = 7.5
#   0x83 04 0480 00000011  active_sessions, raw, uint32, count, measured, current = 17
#   0x83 30 0000 00000001  state flags, raw, uint32, none, nominal = draining
#   0x83 06 0600 000003e8  capacity, raw, uint32, per second, nominal = 1000
#   0x83 7f 0000 deadbeef  unknown sub-type 0x7f (carried verbatim)
#   0x40 04 fde8 4b3ebc20  link bandwidth, AS 65000, 12.5e6 bytes/s (float32)
CPU = "0x83012280422a0000"
SCORE = "0x8320a0c040f00000"
SESSIONS = "0x8304048000000011"
DRAINING = "0x8330000000000001"
CAPACITY = "0x83060600000003e8"
UNKNOWN = "0x837f0000deadbeef"
LINK_BW = "0x4004fde84b3ebc20"


def plan(addpath: bool, flow: bool) -> list[dict[str, object]]:
    """The announcer's steps: ``{"cmd": text}``, ``{"wait": "up"}``, ``{"sleep": s}``."""

    def pi(value: str) -> str:
        return f" path-information {value}" if addpath else ""

    commands = [
        f"announce route 203.0.113.10/32{pi('1')} next-hop 192.0.2.11 "
        f"extended-community [ {CPU} {SCORE} {SESSIONS} ]",
        f"announce route 203.0.113.10/32{pi('2')} next-hop 192.0.2.12 "
        f"extended-community [ {DRAINING} {CAPACITY} {UNKNOWN} {LINK_BW} ]",
        f"announce attributes{pi('3')} next-hop 192.0.2.21 med 10 local-preference 150 "
        f"as-path [ {ANNOUNCER_AS} 65100 ] extended-community [ {SCORE} ] "
        "nlri 203.0.113.20/32 203.0.113.21/32 203.0.113.22/32",
        f"announce route 2001:db8:cafe::10/128{pi('1')} next-hop 2001:db8::11 "
        f"as-path [ {ANNOUNCER_AS} 65200 ] med 20 local-preference 200 extended-community [ {CPU} {SCORE} ]",
        f"announce route 2001:db8:cafe::10/128{pi('0.0.0.2')} next-hop 2001:db8::12 "
        f"extended-community [ {SESSIONS} ]",
        f"announce route 203.0.113.30/32{pi('4000000000')} next-hop 192.0.2.31 origin incomplete "
        f"community [ {ANNOUNCER_AS}:100 no-export ] large-community [ {ANNOUNCER_AS}:1:2 ] "
        f"extended-community [ target:{ANNOUNCER_AS}:7 {SCORE} ]",
        "announce route 2001:db8:cafe::/48 next-hop 2001:db8::21 "
        "as-path [ 65001 65300 ] med 30 local-preference 300",
        "announce route 2001:db8:beef::/48 next-hop 2001:db8::21 "
        "as-path [ 65001 65300 ] med 30 local-preference 300",
        f"announce route 203.0.113.40/32{pi('5')} next-hop 192.0.2.41 "
        "as-path [ 65001 4200000001 ] ( 65301 65302 ) extended-community [ 0x8320a0c041200000 ]",
    ]
    if flow:
        commands.append("announce flow route { match { destination 203.0.113.99/32; protocol tcp; } "
                        "then { discard; } }")
    commands += [
        f"withdraw route 203.0.113.21/32{pi('3')}",
        f"withdraw route 2001:db8:cafe::10/128{pi('2')}",
        f"withdraw attributes{pi('3')} next-hop 192.0.2.21 nlri 203.0.113.20/32 203.0.113.22/32",
        "announce eor ipv4 unicast",
        "announce eor ipv6 unicast",
        "announce route-refresh ipv4 unicast",
        f"announce route {SENTINEL} next-hop 192.0.2.254",
    ]
    steps: list[dict[str, object]] = [{"wait": "up"}, {"sleep": 1.0}]
    for command in commands:
        steps += [{"cmd": command}, {"sleep": STEP_PAUSE}]
    # Cease / administrative reset (RFC 4486 subcode 4): the receiver logs the
    # NOTIFICATION and a down, the announcer reconnects and re-sends its RIB.
    # (ExaBGP 4.2.25 cannot decode the one 5.0.15 sends and resets instead.)
    steps += [{"sleep": 1.0}, {"cmd": f"neighbor {RECEIVER} teardown 4"}, {"wait": "up"}, {"sleep": 2.0},
              {"cmd": "withdraw attributes next-hop 2001:db8::21 nlri 2001:db8:cafe::/48 2001:db8:beef::/48"},
              {"sleep": STEP_PAUSE},
              # Cease / peer de-configured (subcode 3, no data): the one ExaBGP 4.2 decodes from 5.0
              {"sleep": 1.0}, {"cmd": f"neighbor {RECEIVER} teardown 3"}, {"wait": "up"}, {"sleep": 1.0}]
    return steps


# ---------------------------------------------------------------- child roles


def role_record(out: Path) -> int:
    """Append every line ExaBGP writes to our stdin to ``out`` (flushed per line)."""
    with contextlib.suppress(KeyboardInterrupt), out.open("a", encoding="utf-8") as sink:
        for line in sys.stdin:
            sink.write(line if line.endswith("\n") else line + "\n")
            sink.flush()
    return 0


def _is_up(line: str) -> bool:
    return '"state": "up"' in line or line.rstrip().endswith(" up")


def role_announce(plan_file: Path, status: Path) -> int:
    """Run the plan: send commands, wait for acks and for the session to come up."""
    steps = json.loads(plan_file.read_text(encoding="utf-8"))
    lines: queue.Queue[str | None] = queue.Queue()

    def reader() -> None:
        for line in sys.stdin:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=reader, daemon=True).start()
    ups_seen = 0
    ups_waited = 0
    with status.open("a", encoding="utf-8") as log:

        def next_line(timeout: float) -> str | None:
            nonlocal ups_seen
            item = lines.get(timeout=timeout)
            if item is None:
                raise EOFError
            log.write(f"< {item}\n")
            log.flush()
            if _is_up(item):
                ups_seen += 1
            return item

        try:
            for step in steps:
                if "sleep" in step:
                    time.sleep(float(step["sleep"]))
                elif "wait" in step:
                    ups_waited += 1
                    deadline = time.monotonic() + 60
                    while ups_seen < ups_waited:
                        next_line(max(0.1, deadline - time.monotonic()))
                else:
                    command = str(step["cmd"])
                    log.write(f"> {command}\n")
                    log.flush()
                    sys.stdout.write(command + "\n")
                    sys.stdout.flush()
                    while (answer := next_line(10)) not in ("done", "error"):
                        pass
                    if answer == "error":
                        log.write(f"FAILED {command}\n")
                        log.flush()
            log.write("PLAN-DONE\n")
            log.flush()
            while True:  # keep draining stdin until ExaBGP stops us
                next_line(3600)
        except (EOFError, queue.Empty, KeyboardInterrupt):
            return 0


# ---------------------------------------------------------------- driver


@dataclass(frozen=True)
class Variant:
    name: str
    receiver: str  # path of the receiving exabgp executable
    addpath: bool
    flow: bool
    ibgp: bool

    @property
    def receiver_as(self) -> int:
        return ANNOUNCER_AS if self.ibgp else RECEIVER_AS


def exabgp_version(exe: str) -> str:
    python = Path(exe).parent / "python"
    out = subprocess.run([str(python), "-c", "from exabgp.version import version; print(version)"],
                         check=True, capture_output=True, text=True, timeout=60)
    return out.stdout.strip()


def exabgp_command(exe: str, conf: Path) -> list[str]:
    """5.0 takes ``exabgp server <conf>``, 4.2 ``exabgp <conf>``."""
    return [exe, "server", str(conf)] if exabgp_version(exe).startswith("5.") else [exe, str(conf)]


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def _families(flow: bool) -> str:
    return "family { ipv4 unicast; ipv6 unicast; " + ("ipv4 flow; " if flow else "") + "}"


def _capabilities(addpath: bool) -> str:
    return "capability { route-refresh; " + ("add-path send/receive; " if addpath else "") + "}"


def receiver_conf(variant: Variant, out: Path) -> str:
    me = f"{sys.executable} {Path(__file__).resolve()}"
    return f"""
process recorder {{
    run {me} --role record --file {out};
    encoder json;
}}

neighbor {ANNOUNCER} {{
    router-id {RECEIVER};
    local-address {RECEIVER};
    local-as {variant.receiver_as};
    peer-as {ANNOUNCER_AS};
    passive true;
    {_families(variant.flow)}
    {_capabilities(variant.addpath)}
    api {{
        processes [ recorder ];
        neighbor-changes;
        receive {{ parsed; update; notification; open; keepalive; refresh; operational; }}
    }}
}}
"""


def announcer_conf(variant: Variant, port: int, plan_file: Path, status: Path) -> str:
    me = f"{sys.executable} {Path(__file__).resolve()}"
    return f"""
process announcer {{
    run {me} --role announce --file {plan_file} --status {status};
    encoder text;
}}

neighbor {RECEIVER} {{
    router-id {ANNOUNCER};
    local-address {ANNOUNCER};
    local-as {ANNOUNCER_AS};
    peer-as {variant.receiver_as};
    connect {port};
    {_families(variant.flow)}
    {_capabilities(variant.addpath)}
    api {{
        processes [ announcer ];
        neighbor-changes;
    }}
}}
"""


def _env(bind: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"exabgp_daemon_user": "root", "exabgp_api_cli": "false", "exabgp_tcp_bind": bind,
                "exabgp_tcp_port": str(port), "exabgp_log_destination": "stderr",
                "exabgp_daemon_daemonize": "false", "PYTHONUNBUFFERED": "1"})
    return env


@contextlib.contextmanager
def started(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` in its own session; on exit stop its whole process group by id."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM the group led by ``proc`` (ExaBGP and its API processes), then SIGKILL leftovers."""
    pgid = proc.pid
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)  # API helpers left behind, if any


def wait_until(what: str, check: Callable[[], bool], timeout: float, logs: list[Path]) -> None:
    """Bounded polling; on timeout show the tail of every log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    tails = "\n".join(f"--- {log}\n" + "\n".join(_read(log).splitlines()[-25:]) for log in logs)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}\n{tails}")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def listening(address: str, port: int) -> bool:
    """Whether a TCP socket listens on address:port (from /proc/net/tcp, no connection made)."""
    packed = ipaddress.IPv4Address(address).packed[::-1].hex().upper()
    wanted = f"{packed}:{port:04X}"
    for line in _read(Path("/proc/net/tcp")).splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[1] == wanted and fields[3] == "0A":
            return True
    return False


def settled(path: Path, quiet: float) -> Callable[[], bool]:
    """A check that is true once ``path`` has not grown for ``quiet`` seconds."""
    state = {"size": -1, "since": time.monotonic()}

    def check() -> bool:
        size = path.stat().st_size if path.exists() else 0
        now = time.monotonic()
        if size != state["size"]:
            state["size"], state["since"] = size, now
            return False
        return now - state["since"] >= quiet

    return check


def count(path: Path, needle: str) -> int:
    return sum(needle in line for line in _read(path).splitlines())


def capture(variant: Variant, announcer_exe: str, workdir: Path) -> list[str]:
    """Run one announcer/receiver pair and return the receiver's JSON lines."""
    work = workdir / variant.name
    work.mkdir(parents=True)
    out, status, plan_file = work / "received.jsonl", work / "announcer.status", work / "plan.json"
    plan_file.write_text(json.dumps(plan(variant.addpath, variant.flow)), encoding="utf-8")
    port = free_port(RECEIVER)
    (work / "receiver.conf").write_text(receiver_conf(variant, out), encoding="utf-8")
    (work / "announcer.conf").write_text(announcer_conf(variant, port, plan_file, status), encoding="utf-8")
    logs = [work / "receiver.log", work / "announcer.log", status, out]
    with started(exabgp_command(variant.receiver, work / "receiver.conf"), _env(RECEIVER, port),
                 work / "receiver.log") as receiver:
        wait_until("the receiver to listen", lambda: listening(RECEIVER, port), 60, logs)
        with started(exabgp_command(announcer_exe, work / "announcer.conf"), _env("", port),
                     work / "announcer.log") as announcer:
            wait_until("the announcer to finish its plan", lambda: "PLAN-DONE" in _read(status), 120, logs)
            wait_until("the RIB replay after the teardown", lambda: count(out, SENTINEL.partition("/")[0]) >= 3,
                       60, logs)
            wait_until("the receiver to settle", settled(out, 2.0), 30, logs)
            stop(announcer)
            wait_until("the receiver to see the peer down", lambda: count(out, '"down"') >= 3, 30, logs)
            wait_until("the receiver to settle", settled(out, 1.0), 30, logs)
        stop(receiver)
    failed = [line for line in _read(status).splitlines() if line.startswith("FAILED")]
    if failed:
        raise RuntimeError(f"{variant.name}: commands refused by ExaBGP:\n" + "\n".join(failed))
    return [line for line in _read(out).splitlines() if line.strip()]


def variants(exabgp50: str, exabgp42: str) -> list[Variant]:
    return [
        Variant("v50_basic", exabgp50, addpath=False, flow=True, ibgp=False),
        Variant("v50_addpath", exabgp50, addpath=True, flow=False, ibgp=True),
        Variant("v42_basic", exabgp42, addpath=False, flow=True, ibgp=False),
        Variant("v42_addpath", exabgp42, addpath=True, flow=False, ibgp=True),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--role", choices=["record", "announce"], help=argparse.SUPPRESS)
    parser.add_argument("--file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--status", type=Path, help=argparse.SUPPRESS)
    bindir = Path(sys.executable).parent
    parser.add_argument("--exabgp50", default=str(bindir / "exabgp"), help="ExaBGP 5.0 executable")
    parser.add_argument("--exabgp42", default="/tmp/exa42/bin/exabgp", help="ExaBGP 4.2 executable")
    parser.add_argument("--announcer", help="announcing ExaBGP (default: --exabgp50)")
    parser.add_argument("--out", type=Path, default=Path("tests/golden/exabgp_json"))
    parser.add_argument("--only", action="append", help="capture only these variants (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    args = parser.parse_args(argv)
    if args.role == "record":
        return role_record(args.file)
    if args.role == "announce":
        return role_announce(args.file, args.status)

    chosen = [v for v in variants(args.exabgp50, args.exabgp42) if not args.only or v.name in args.only]
    announcer = args.announcer or args.exabgp50
    workdir = Path(tempfile.mkdtemp(prefix="capture-exabgp-json-"))
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        for variant in chosen:
            started_at = time.monotonic()
            lines = capture(variant, announcer, workdir)
            target = args.out / f"{variant.name}.jsonl"
            target.write_text("\n".join(lines) + "\n", encoding="utf-8")
            print(f"{variant.name}: {len(lines)} lines from exabgp {exabgp_version(variant.receiver)} "
                  f"(announcer {exabgp_version(announcer)}) in {time.monotonic() - started_at:.1f}s -> {target}")
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}")
        else:
            subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
