"""`dyncast lab up|down|status|exec|netem FILE`: containerlab topology files run in network namespaces.

``up`` stays in the foreground (progress, then waits for Ctrl-C or SIGTERM and
tears down); ``up --detach`` starts a supervisor process that owns the lab
and returns once the lab is up. ``down`` asks the supervisor to stop (SIGTERM
to its recorded pid, checked by start time) and, if it is gone or does not
finish, tears down from the record: processes by recorded pid, then the
recorded namespaces. Nothing is ever killed by name.

Wiring: ``add_commands(lab_subparsers)`` adds the actions to ``dyncast lab``;
``python -m dyncast_bgp.lab.topology_cli ACTION ...`` runs them directly.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from dyncast_bgp.config.loader import ConfigError
from dyncast_bgp.lab.clab import Topology, load_topology
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.impair import ImpairError, Impairment
from dyncast_bgp.lab.netns import list_namespaces
from dyncast_bgp.lab.process import tail
from dyncast_bgp.lab.runner import LabRun, RunRecord, apply_impairment, read_record, record_path, teardown_record

UP_TIMEOUT = 180.0
DOWN_TIMEOUT = 30.0


def add_commands(lab_subparsers: Any) -> None:
    """Add ``up``, ``down``, ``status``, ``exec`` and ``netem`` to the ``dyncast lab`` actions."""
    up = lab_subparsers.add_parser("up", help="run a containerlab topology in network namespaces")
    up.add_argument("file", help="a *.clab.yml topology file")
    up.add_argument("--detach", action="store_true", help="leave a supervisor owning the lab and return")
    up.add_argument("--impairable", action="append", default=[], metavar="NODE:IFACE|all",
                    help="build this link through the userspace impairment (kernels without netem)")
    up.add_argument("--supervise", action="store_true", help=argparse.SUPPRESS)
    up.set_defaults(handler=_up)
    down = lab_subparsers.add_parser("down", help="stop a lab started with 'dyncast lab up'")
    down.add_argument("file")
    down.set_defaults(handler=_down)
    status = lab_subparsers.add_parser("status", help="nodes, namespaces and processes of a running lab")
    status.add_argument("file")
    status.set_defaults(handler=_status)
    run = lab_subparsers.add_parser("exec", help="run a command in a node's namespace: exec FILE NODE -- CMD...")
    run.add_argument("file")
    run.add_argument("node")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(handler=_exec)
    netem = lab_subparsers.add_parser("netem", help="impair a node interface's egress (delay, jitter, loss)")
    netem.add_argument("file")
    netem.add_argument("endpoint", metavar="NODE:IFACE")
    netem.add_argument("--delay", type=float, default=0.0, metavar="MS")
    netem.add_argument("--jitter", type=float, default=0.0, metavar="MS")
    netem.add_argument("--loss", type=float, default=0.0, metavar="PCT")
    netem.set_defaults(handler=_netem)


def _load(file: str) -> Topology:
    try:
        return load_topology(file)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _fail(message: str, code: int = 1) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def _need_root(action: str) -> None:
    if os.geteuid() != 0:
        _fail(f"dyncast lab {action}: needs root (it creates network namespaces)", 2)


def _running(topology: Topology) -> RunRecord:
    record = read_record(topology)
    if record is None or not record.owner_alive():
        _fail(f"lab {topology.name!r} from {topology.origin} is not up", 3)
    return record


# ------------------------------------------------------------------- up


class _Stop(BaseException):
    """SIGTERM/SIGINT while the lab runs."""


def _up(args: argparse.Namespace) -> int:
    _need_root("up")
    topology = _load(args.file)
    impairable: list[str] | bool = True if "all" in args.impairable else list(args.impairable)
    if args.detach:
        return _detach(args.file, topology, args.impairable)
    for note in topology.notes:
        print(f"note: {note}")

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Stop(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        with LabRun(topology, progress=lambda line: print(line, flush=True), impairable=impairable) as run:
            print(f"up; work directory {run.workdir}; " + ("stop with 'dyncast lab down " + args.file + "'"
                                                         if args.supervise else "Ctrl-C to stop"), flush=True)
            reported: set[int] = set()
            while True:
                time.sleep(1.0)
                run.save()
                for process in run.dead():
                    if process.pid not in reported:
                        reported.add(process.pid)
                        print(f"exited: {process.describe()}", flush=True)
    except _Stop:
        print("stopped", flush=True)
        return 0
    except (LabError, ImpairError, ConfigError) as exc:
        print(f"dyncast lab up: {exc}", file=sys.stderr)
        return 1


def _detach(file: str, topology: Topology, impairable: Sequence[str]) -> int:
    existing = read_record(topology)
    if existing is not None and existing.owner_alive():
        _fail(f"lab {topology.name!r} from {topology.origin} is already up (owner pid {existing.owner_pid}); "
              f"run 'dyncast lab down {file}' first")
    log = record_path(topology).with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "dyncast_bgp.lab.topology_cli", "up", file, "--supervise",
            *(arg for endpoint in impairable for arg in ("--impairable", endpoint))]
    with log.open("w") as output:
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    deadline = time.monotonic() + UP_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            _fail(f"dyncast lab up: the supervisor exited {child.returncode}:\n{tail(log, 30)}")
        record = read_record(topology)
        if record is not None and record.owner_pid == child.pid and record.state == "up":
            print(tail(log, 60))
            print(f"lab {topology.name} is up, supervised by pid {child.pid} (log {log})")
            return 0
        time.sleep(0.1)
    os.kill(child.pid, signal.SIGTERM)
    _fail(f"dyncast lab up: not up after {UP_TIMEOUT:g}s; stopping the supervisor (log {log})")


# ------------------------------------------------------------------- down, status


def _down(args: argparse.Namespace) -> int:
    _need_root("down")
    topology = _load(args.file)
    record = read_record(topology)
    if record is None:
        print(f"lab {topology.name!r} from {args.file} is not up")
        return 0
    if record.owner_alive():
        os.kill(record.owner_pid, signal.SIGTERM)
        deadline = time.monotonic() + DOWN_TIMEOUT
        while record.owner_alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not record.owner_alive() and read_record(topology) is None:
            record_path(topology).with_suffix(".log").unlink(missing_ok=True)  # the supervisor's log: a clean stop
            print(f"lab {topology.name} is down")
            return 0
        print(f"the owner (pid {record.owner_pid}) did not finish; removing from the record", file=sys.stderr)
    problems = teardown_record(record)
    record_path(topology).unlink(missing_ok=True)
    if problems:
        _fail("; ".join(problems))
    print(f"lab {topology.name} is down (removed from its record)")
    return 0


def _status(args: argparse.Namespace) -> int:
    topology = _load(args.file)
    record = read_record(topology)
    if record is None:
        print(f"lab {topology.name!r} from {args.file}: not up")
        return 3
    owner = "running" if record.owner_alive() else "DEAD (run 'dyncast lab down' to clean up)"
    print(f"lab {record.name} ({record.file}): {record.state}, owner pid {record.owner_pid} {owner}")
    print(f"impairment: {'kernel netem' if record.netem == 'kernel' else 'userspace forwarder'}; "
          f"work directory {record.workdir}")
    present = set(list_namespaces())
    for name, node in record.nodes.items():
        print(f"  {name:16} {node.namespace:40} {'present' if node.namespace in present else 'MISSING'}"
              f"  {node.daemon}")
    dead = 0
    for process in record.processes:
        if process.alive():
            state = "alive"
        else:
            dead += 1
            state = "dead" + (f" (exit {process.returncode})" if process.returncode is not None else "")
        print(f"  process {process.name:28} pid {process.pid:<8} {state:16} {process.log}")
    return 0 if record.owner_alive() and not dead else 1


# ------------------------------------------------------------------- exec, netem


def _exec(args: argparse.Namespace) -> int:
    topology = _load(args.file)
    record = _running(topology)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        _fail("dyncast lab exec: give a command after the node: exec FILE NODE -- CMD...", 2)
    node = record.nodes.get(args.node)
    if node is None:
        _fail(f"no node {args.node!r} in lab {record.name!r}; nodes: {', '.join(record.nodes)}", 2)
    env = {**os.environ, **node.env}
    try:
        return subprocess.run(["ip", "netns", "exec", node.namespace, *command], env=env, check=False).returncode
    except KeyboardInterrupt:
        return 130


def _netem(args: argparse.Namespace) -> int:
    _need_root("netem")
    topology = _load(args.file)
    record = _running(topology)
    node, _, ifname = args.endpoint.partition(":")
    if not ifname:
        _fail("dyncast lab netem: the endpoint is NODE:IFACE", 2)
    try:
        impairment = Impairment(args.delay, args.jitter, args.loss / 100.0)
        apply_impairment(record, node, ifname, impairment)
    except (ValueError, LabError, ImpairError) as exc:
        _fail(f"dyncast lab netem: {exc}")
    print(f"{args.endpoint}: delay {args.delay:g} ms, jitter {args.jitter:g} ms, loss {args.loss:g}% "
          f"({'kernel netem' if record.netem == 'kernel' else 'userspace forwarder'})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyncast_bgp.lab.topology_cli")
    add_commands(parser.add_subparsers(dest="action", metavar="ACTION", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
