"""Run a containerlab topology in network namespaces: every node a namespace, every link a veth pair.

``LabRun(topology).start()`` (or ``with LabRun.up(topology) as run:``) builds,
in this order, and tears everything down again if any step fails:

1. one namespace per node (``clab-<lab>-<token>-<node>``, ``lo`` up, DAD off,
   the node's ``sysctls``), then every link as a veth pair with the
   endpoint names inside the two namespaces (``mtu`` applied);
2. every node's ``exec`` lines in file order, each ``sh -c`` in the node's
   namespace with its env, waited for; a failing line fails the ``up`` with
   its stderr;
3. daemons: an ``frrouting/frr`` image gets zebra, staticd and the daemons
   ``/etc/frr/daemons`` enables (or ``frr.conf`` needs), configured from the
   bound integrated ``frr.conf`` with ``vtysh -b``; a ``bird`` image gets
   ``bird`` with its bound ``bird.conf``; any other node with ``cmd`` gets it
   as a background ``sh -c``, logged in the lab's work directory.

Commands see the bind host paths where the file says container paths
(:func:`dyncast_bgp.lab.clab.rewrite_paths`), and a ``PATH`` that starts with
a per-node directory (``vtysh``/``birdc`` wrappers bound to the node's
daemons) and the running Python's ``bin`` directory (``dyncast``, ``exabgp``).
Each node has its own temporary directory in the lab's work directory
(``TMPDIR``, unless the node's env sets it), as a container has its own
``/tmp``: what a node's programs leave there (``dyncast exabgp-run``'s work
directory, say) goes with the lab instead of piling up in the host's ``/tmp``.

Impairment: ``tc ... netem`` exec lines run as written where the kernel has
netem. Where it does not, a link with such a line (or named in
``impairable``) is built through a middle namespace holding the userspace
forwarder of :mod:`dyncast_bgp.lab.impair`, and the line sets the forwarder
instead; :meth:`LabRun.impair` changes either at run time.

A running lab is recorded in ``/run/dyncast-lab/clab/<lab>-<hash of the
file path>.json`` (namespaces, processes with pid and start time, control
sockets) and holds an exclusive lock on ``<same>.lock`` for its lifetime:
a second ``up`` of the same file is refused, ``dyncast lab down`` finds what
to stop (:func:`teardown_record`), and a lab whose owner died is cleaned up
by the next ``up`` or ``down``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

from dyncast_bgp.lab.clab import Endpoint, Link, NodePlan, Topology, frr_daemons, node_plan
from dyncast_bgp.lab.errors import CommandError, LabError
from dyncast_bgp.lab.impair import ImpairControl, Impairment
from dyncast_bgp.lab.netns import STATE_DIR, Lab, Namespace, remove_namespaces, start_time
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.process import Process

REGISTRY = STATE_DIR / "clab"
FRR_LIB = Path("/usr/lib/frr")
FRR_USER = "frr"
NetemMode = Literal["auto", "kernel", "userspace"]
Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


# ------------------------------------------------------------------- the record of a running lab


@dataclass
class ProcessRecord:
    name: str
    node: str | None
    pid: int
    start: int | None
    log: str
    returncode: int | None = None

    def alive(self) -> bool:
        return self.start is not None and start_time(self.pid) == self.start


@dataclass
class NodeRecord:
    namespace: str
    daemon: str
    env: dict[str, str]


@dataclass
class ImpairRecord:
    control: str
    direction: str  # the forwarder direction that is this endpoint's egress


@dataclass
class RunRecord:
    """What ``dyncast lab down|status|exec|netem`` need to know about a running lab."""

    file: str
    name: str
    owner_pid: int
    owner_start: int | None
    workdir: str
    netem: str = "userspace"
    state: str = "starting"
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    impairments: dict[str, ImpairRecord] = field(default_factory=dict)
    processes: list[ProcessRecord] = field(default_factory=list)
    lab_state_file: str | None = None

    def owner_alive(self) -> bool:
        return self.owner_start is not None and start_time(self.owner_pid) == self.owner_start

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        data = json.loads(text)
        data["nodes"] = {name: NodeRecord(**value) for name, value in data.get("nodes", {}).items()}
        data["impairments"] = {name: ImpairRecord(**value) for name, value in data.get("impairments", {}).items()}
        data["processes"] = [ProcessRecord(**value) for value in data.get("processes", [])]
        return cls(**data)


def registry_key(topology: Topology) -> str:
    """``<lab name>-<8 hex of the file's absolute path>``: labs from different files never share it."""
    digest = hashlib.sha256(str(Path(topology.origin).resolve()).encode()).hexdigest()[:8]
    return f"{_slug(topology.name, 32)}-{digest}"


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-") or "lab"


def record_path(topology: Topology, registry: Path = REGISTRY) -> Path:
    return registry / f"{registry_key(topology)}.json"


def read_record(topology: Topology, registry: Path = REGISTRY) -> RunRecord | None:
    try:
        return RunRecord.from_json(record_path(topology, registry).read_text())
    except FileNotFoundError:
        return None
    except (ValueError, TypeError, KeyError) as exc:
        raise LabError(f"unreadable lab record {record_path(topology, registry)}: {exc}") from None


def write_record(path: Path, record: RunRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(record.to_json())
    temporary.replace(path)


def teardown_record(record: RunRecord, *, grace: float = 3.0) -> list[str]:
    """Stop a lab from its record alone (its owner is gone): recorded processes that still run (same pid
    and start time) by process group, then everything in its namespaces, then the namespaces. Returns
    what could not be removed."""
    alive = [p for p in record.processes if p.alive()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for process in alive:
            if process.alive():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 1.0)
        while any(p.alive() for p in alive) and time.monotonic() < deadline:
            time.sleep(0.05)
    problems = remove_namespaces(record.namespaces)
    if record.lab_state_file:
        Path(record.lab_state_file).unlink(missing_ok=True)
    if record.workdir and Path(record.workdir).name.startswith("clab-"):
        shutil.rmtree(record.workdir, ignore_errors=True)
    return problems


# ------------------------------------------------------------------- impairments


def apply_impairment(record: RunRecord, node: str, ifname: str, impairment: Impairment) -> float:
    """Impair ``node:ifname``'s egress (kernel netem or the link's forwarder); returns when it took effect."""
    if node not in record.nodes:
        raise LabError(f"no node {node!r} in lab {record.name!r}; nodes: {', '.join(record.nodes)}")
    if record.netem == "kernel":
        namespace = Namespace(record.nodes[node].namespace)
        before = time.monotonic()
        if impairment.idle:
            namespace.run(["tc", "qdisc", "del", "dev", ifname, "root"], check=False)
        else:
            namespace.run(["tc", "qdisc", "replace", "dev", ifname, "root", "netem", *netem_args(impairment)])
        return before
    target = record.impairments.get(f"{node}:{ifname}")
    if target is None:
        impairable = ", ".join(sorted(record.impairments)) or "none"
        raise LabError(f"{node}:{ifname} is not on an impairable link (this kernel has no netem; impairable "
                       f"endpoints: {impairable}); declare a tc netem exec line for it, or bring the lab up "
                       "with impairable endpoints (--impairable NODE:IFACE or all)")
    return ImpairControl(Path(target.control)).set(target.direction, impairment)


def netem_args(impairment: Impairment) -> list[str]:
    args = ["delay", f"{impairment.delay_ms:g}ms"]
    if impairment.jitter_ms:
        args.append(f"{impairment.jitter_ms:g}ms")
    return [*args, "loss", f"{impairment.loss * 100:g}%"]


def kernel_has_netem(namespace: Namespace) -> bool:
    done = namespace.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"], check=False)
    namespace.run(["tc", "qdisc", "del", "dev", "lo", "root"], check=False)
    return done.returncode == 0


# ------------------------------------------------------------------- the run


class LabRun:
    """A topology brought up in namespaces; :meth:`close` (or leaving the ``with`` block) removes it all."""

    def __init__(self, topology: Topology, *, progress: Progress | None = None,
                 impairable: Collection[str] | bool = (), netem: NetemMode = "auto",
                 registry: Path = REGISTRY, stop_grace: float = 3.0, exec_timeout: float = 60.0) -> None:
        self.topology = topology
        self.progress = progress or _quiet
        self.impairable = impairable
        self.netem_mode = netem
        self.registry = registry
        self.stop_grace = stop_grace
        self.exec_timeout = exec_timeout
        self.plans = {node.name: node_plan(node) for node in topology.nodes}
        self._lab: Lab | None = None
        self._lock: IO[str] | None = None
        self._namespaces: dict[str, Namespace] = {}
        self._bins: dict[str, Path] = {}
        self._tmps: dict[str, Path] = {}  # each node's TMPDIR (see _node_tmp)
        self._record: RunRecord | None = None
        self._record_path = record_path(topology, registry)
        self._process_nodes: dict[int, str | None] = {}
        self._unknown = [e for e in (impairable if not isinstance(impairable, bool) else ())
                         if not self._is_endpoint(e)]
        if self._unknown:
            raise LabError(f"impairable endpoints not on any link of {topology.origin}: {', '.join(self._unknown)}")

    @classmethod
    def up(cls, topology: Topology, **options: Any) -> LabRun:
        """Create and :meth:`start` a run."""
        return cls(topology, **options).start()

    # -- life cycle ----------------------------------------------------------------------------------

    def start(self) -> LabRun:
        """Build the lab; on any failure (or Ctrl-C) remove what was built and re-raise."""
        try:
            self._acquire()
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Stop every process, delete every namespace and the record, release the lock."""
        problems: list[str] = []
        if self._lab is not None:
            self.progress(f"tearing down {self.topology.name}")
            try:
                self._lab.close()
            except LabError as exc:
                problems.append(str(exc))
            self._lab = None
        if self._lock is not None:
            self._record_path.unlink(missing_ok=True)
            self._record_path.with_suffix(".lock").unlink(missing_ok=True)  # still held: nobody else is inside
            self._lock.close()
            self._lock = None
        if problems:
            raise LabError("; ".join(problems))

    def __enter__(self) -> LabRun:
        return self if self._lab is not None else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.close()
        except LabError as cleanup_error:
            if exc is None:
                raise
            exc.add_note(str(cleanup_error))

    # -- using a running lab ---------------------------------------------------------------------------

    @property
    def lab(self) -> Lab:
        if self._lab is None:
            raise LabError(f"lab {self.topology.name!r} is not running")
        return self._lab

    @property
    def record(self) -> RunRecord:
        if self._record is None:
            raise LabError(f"lab {self.topology.name!r} is not running")
        return self._record

    @property
    def workdir(self) -> Path:
        return self.lab.workdir

    def namespace(self, node: str) -> Namespace:
        try:
            return self._namespaces[node]
        except KeyError:
            raise LabError(f"no node {node!r} in lab {self.topology.name!r}; "
                           f"nodes: {', '.join(self.topology.node_names)}") from None

    def env(self, node: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment commands of ``node`` run with."""
        self.namespace(node)
        return node_env(self.plans[node], self._bins.get(node), extra, tmp=self._tmps.get(node))

    def exec(self, node: str, command: str | Sequence[str], *, check: bool = True, timeout: float = 30.0,
             env: Mapping[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``command`` (a string goes through ``sh -c``) in ``node``'s namespace and wait for it."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        return self.namespace(node).run(argv, check=check, timeout=timeout, env=self.env(node, env), input=input)

    def spawn(self, node: str, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Process:
        """Start a background process in ``node``'s namespace (log ``<workdir>/<name>.log``); stopped at close."""
        process = self.lab.spawn(self.namespace(node), name, argv, env=self.env(node, env),
                                 cwd=self._node_dir(node))
        self._process_nodes[process.pid] = node
        self.save()
        return process

    def stop(self, *processes: Process) -> None:
        """Stop some of the lab's processes now (the record notes their exit)."""
        self.lab.stop(*processes)
        self.save()

    def impair(self, node: str, ifname: str, *, delay_ms: float = 0.0, jitter_ms: float = 0.0,
               loss: float = 0.0) -> float:
        """Impair ``node:ifname``'s egress like ``tc ... netem`` (``loss`` 0..1); returns when it took effect."""
        return apply_impairment(self.record, node, ifname, Impairment(delay_ms, jitter_ms, loss))

    def save(self) -> None:
        """Write the record (process states included) for the command line tools."""
        if self._record is None or self._lab is None:
            return
        self._record.processes = [
            ProcessRecord(p.name, self._process_nodes.get(p.pid), p.pid, start_time(p.pid) if p.alive() else None,
                          str(p.log_path), p.returncode if p.returncode is not None else _poll(p))
            for p in self._lab.processes]
        write_record(self._record_path, self._record)

    def dead(self) -> list[Process]:
        """Processes of the lab that have exited."""
        return [p for p in self.lab.processes if not p.alive()]

    # -- building ----------------------------------------------------------------------------------------

    def _acquire(self) -> None:
        self.registry.mkdir(parents=True, exist_ok=True)
        lock = self._record_path.with_suffix(".lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            record = read_record(self.topology, self.registry)
            owner = f" (owner pid {record.owner_pid})" if record else ""
            raise LabError(f"lab {self.topology.name!r} from {self.topology.origin} is already up{owner}; "
                           f"run 'dyncast lab down {self.topology.origin}' first") from None
        self._lock = lock
        stale = read_record(self.topology, self.registry)
        if stale is not None:  # its owner died without cleaning up (we hold the lock now)
            self.progress(f"removing the remains of an earlier run (owner pid {stale.owner_pid})")
            teardown_record(stale, grace=self.stop_grace)
            self._record_path.unlink(missing_ok=True)

    def _build(self) -> None:
        topology = self.topology
        prefix = f"clab-{_slug(topology.name, 18)}"
        lab = self._lab = Lab(prefix=prefix, stop_grace=self.stop_grace)
        self._record = RunRecord(
            file=str(Path(topology.origin).resolve()), name=topology.name, owner_pid=os.getpid(),
            owner_start=start_time(os.getpid()), workdir=str(lab.workdir),
            lab_state_file=str(STATE_DIR / f"{lab.token}.json"))
        kernel = self.netem_mode == "kernel" or (self.netem_mode == "auto" and self._probe_netem())
        self._record.netem = "kernel" if kernel else "userspace"
        middles = self._middle_links(kernel)
        roles = [node.role for node in topology.nodes]
        middle_roles = {link: _free_role(f"imp{index}", roles) for index, link in enumerate(middles)}
        self.progress(f"namespaces: {len(roles)} nodes" + (f", {len(middles)} impairment forwarders" if middles
                                                             else ""))
        created = lab.namespaces(*roles, *middle_roles.values())
        self._record.namespaces = [ns.name for ns in created]
        self._namespaces = {node.name: ns for node, ns in zip(topology.nodes, created, strict=False)}
        for node in topology.nodes:
            self._bins[node.name] = self._node_bin(node.name)
            self._tmps[node.name] = self._node_tmp(node.name)
            plan = self.plans[node.name]
            self._record.nodes[node.name] = NodeRecord(self._namespaces[node.name].name, plan.daemon,
                                                       node_env(plan, self._bins[node.name], None, base={},
                                                                tmp=self._tmps[node.name]))
        self.save()
        self._sysctls()
        self._links(middle_roles)
        self.save()
        self._run_exec()
        self._start_daemons()
        self._record.state = "up"
        self.save()
        self.progress(f"lab {topology.name} is up: " + ", ".join(
            f"{name}={ns.name}" for name, ns in self._namespaces.items()))

    def _is_endpoint(self, text: str) -> bool:
        node, _, ifname = text.partition(":")
        return any(Endpoint(node, ifname) in (link.a, link.b) for link in self.topology.links)

    def _netem_lines(self) -> dict[Endpoint, list[str]]:
        found: dict[Endpoint, list[str]] = {}
        for name, plan in self.plans.items():
            for step in plan.exec:
                if step.netem is not None:
                    found.setdefault(Endpoint(name, step.netem.interface), []).append(step.command)
        return found

    def _middle_links(self, kernel: bool) -> list[Link]:
        """The links that get a forwarder: none where the kernel has netem, else those with a netem line
        at either end or named impairable."""
        netem_lines = self._netem_lines()
        for endpoint, commands in netem_lines.items():
            with contextlib.suppress(KeyError):
                self.topology.link_of(endpoint)
                continue
            raise LabError(f"{self.topology.origin}: node {endpoint.node}: {commands[0]!r}: interface "
                           f"{endpoint.interface} is not on a link (only link interfaces can be impaired "
                           "without the kernel's netem)")
        if kernel:
            return []
        wanted = set(map(str, netem_lines)) | (set(self.impairable) if not isinstance(self.impairable, bool) else set())
        return [link for link in self.topology.links
                if self.impairable is True or str(link.a) in wanted or str(link.b) in wanted]

    def _probe_netem(self) -> bool:
        with Lab(prefix="clab-probe", state_dir=STATE_DIR) as probe:
            return kernel_has_netem(probe.namespace("netem"))

    def _sysctls(self) -> None:
        for node in self.topology.nodes:
            plan = self.plans[node.name]
            values: dict[str, str | int] = {"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0}
            if plan.daemon in ("frr", "bird"):
                values.update({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
            values.update(node.sysctls)
            try:
                self._namespaces[node.name].set_sysctls(values)
            except CommandError as exc:
                raise LabError(f"node {node.name}: sysctls {values}: {exc}") from None

    def _links(self, middles: Mapping[Link, str]) -> None:
        lab = self.lab
        for link in self.topology.links:
            a, b = self._namespaces[link.a.node], self._namespaces[link.b.node]
            if link in middles:
                self._forwarded_link(link, self._namespace_of_role(middles[link]))
            else:
                lab.veth(a, link.a.interface, b, link.b.interface)
            if link.mtu:
                a.ip_batch([f"link set {link.a.interface} mtu {link.mtu}"])
                b.ip_batch([f"link set {link.b.interface} mtu {link.mtu}"])
        self.progress(f"links: {len(self.topology.links)} veth pairs"
                      + (f" ({len(middles)} through userspace impairment)" if middles else ""))

    def _namespace_of_role(self, role: str) -> Namespace:
        return Namespace(f"{self.lab.prefix}-{self.lab.token}-{role}")

    def _forwarded_link(self, link: Link, middle: Namespace) -> None:
        lab = self.lab
        a, b = self._namespaces[link.a.node], self._namespaces[link.b.node]
        lab.veth(a, link.a.interface, middle, "pa")
        lab.veth(middle, "pb", b, link.b.interface)
        middle.set_sysctls({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})
        middle.ip_batch(["link set pa promisc on", "link set pb promisc on"])
        if link.mtu:
            middle.ip_batch([f"link set pa mtu {link.mtu}", f"link set pb mtu {link.mtu}"])
        for namespace, ifname in ((a, link.a.interface), (b, link.b.interface)):
            namespace.run([sys.executable, "-m", "dyncast_bgp.lab.impair", "offload", ifname])
        control = lab.workdir / f"{middle.name.rsplit('-', 1)[-1]}.sock"
        forwarder = lab.spawn(middle, f"impair-{link.a.node}-{link.a.interface}",
                              [sys.executable, "-m", "dyncast_bgp.lab.impair", "forward", "--port-a", "pa",
                               "--port-b", "pb", "--control", str(control)])
        self._process_nodes[forwarder.pid] = None

        def ready() -> bool:
            if not forwarder.alive():
                raise LabError(f"impairment forwarder for {link.a} -- {link.b} exited:\n{forwarder.log_tail()}")
            return control.exists()

        expect(ready, bool, what=f"the impairment forwarder of {link.a} -- {link.b}", timeout=10.0,
               diagnose=forwarder.log_tail)
        self.record.impairments[str(link.a)] = ImpairRecord(str(control), "ab")
        self.record.impairments[str(link.b)] = ImpairRecord(str(control), "ba")

    def _run_exec(self) -> None:
        for node in self.topology.nodes:
            plan = self.plans[node.name]
            if plan.exec:
                self.progress(f"{node.name}: {len(plan.exec)} exec command(s)")
            for step in plan.exec:
                if step.unsupported and self.record.netem == "userspace":
                    raise LabError(f"{self.topology.origin}: node {node.name}: {step.unsupported}")
                if step.netem is not None and self.record.netem == "userspace":
                    netem = step.netem
                    apply_impairment(self.record, node.name, netem.interface,
                                     Impairment(netem.delay_ms, netem.jitter_ms, netem.loss))
                    continue
                done = self.exec(node.name, step.command, check=False, timeout=self.exec_timeout)
                if done.returncode != 0:
                    raise LabError(f"{self.topology.origin}: node {node.name}: exec {step.command!r} exited "
                                   f"{done.returncode}: {(done.stderr.strip() or done.stdout.strip())[-2000:]}")

    def _start_daemons(self) -> None:
        for node in self.topology.nodes:
            self._start_node(node.name)

    def _start_node(self, name: str) -> None:
        node = self.topology.node(name)
        plan = self.plans[name]
        if plan.daemon == "frr":
            self.progress(f"{name}: FRR")
            self._start_frr(plan)
        elif plan.daemon == "bird":
            self.progress(f"{name}: BIRD")
            self._start_bird(plan)
        elif plan.daemon == "cmd" and plan.cmd is not None:
            self.progress(f"{name}: cmd {plan.cmd}")
            self.spawn(name, f"{node.role}-cmd", ["sh", "-c", plan.cmd])

    def node_processes(self, node: str) -> list[Process]:
        """The live processes started in ``node`` (its daemons, its cmd, whatever :meth:`spawn` put there)."""
        self.topology.node(node)  # KeyError naming the nodes when unknown
        return [process for process in self.lab.processes
                if self._process_nodes.get(process.pid) == node and process.alive()]

    def restart_node(self, node: str, *, down_for: float = 0.0) -> None:
        """Stop ``node``'s daemons or cmd (SIGTERM, then SIGKILL after the grace), wait ``down_for``, start again.

        Namespaces, links, addresses and kernel state stay: this is a process
        restart, as a container's would be. Stale FRR/BIRD sockets and pid files
        are removed first, so the new daemons never wait on a dead one's socket.
        """
        self.stop(*self.node_processes(node))
        daemon_dir = self._node_dir(node) / "daemon"
        if daemon_dir.is_dir():
            for stale in (*daemon_dir.glob("*.vty"), *daemon_dir.glob("*.pid"), *daemon_dir.glob("*.api"),
                          *daemon_dir.glob("*.ctl")):
                stale.unlink(missing_ok=True)
        if down_for > 0:
            time.sleep(down_for)
        self._start_node(node)
        self.save()

    def _node_dir(self, node: str) -> Path:
        path = self.lab.workdir / "nodes" / self.topology.node(node).role
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _node_bin(self, node: str) -> Path:
        path = self._node_dir(node) / "bin"
        path.mkdir(exist_ok=True)
        daemon_dir = self._node_dir(node) / "daemon"
        plan = self.plans[node]
        if plan.daemon == "frr":
            _wrapper(path / "vtysh", ["/usr/bin/vtysh", "--vty_socket", str(daemon_dir)])
        elif plan.daemon == "bird":
            _wrapper(path / "birdc", ["/usr/sbin/birdc", "-s", str(daemon_dir / "bird.ctl")])
        return path

    def _node_tmp(self, node: str) -> Path:
        """The node's temporary directory, writable by all with the sticky bit, as ``/tmp`` is."""
        path = self._node_dir(node) / "tmp"
        path.mkdir(exist_ok=True)
        path.chmod(0o1777)
        return path

    def _start_frr(self, plan: NodePlan) -> None:
        name = plan.node.name
        if plan.config is None or not plan.config.is_file():
            raise LabError(f"{self.topology.origin}: node {name}: an FRR image needs /etc/frr/frr.conf bound "
                           f"to an existing file (got {plan.config})")
        conf = plan.config.read_text()
        daemons_text = plan.frr_daemons.read_text() if plan.frr_daemons and plan.frr_daemons.is_file() else None
        directory = self._node_dir(name) / "daemon"
        directory.mkdir(exist_ok=True)
        (directory / "frr.conf").write_text(conf)
        daemons = ("zebra", *frr_daemons(daemons_text, conf))
        for daemon in daemons:
            (directory / f"{daemon}.conf").write_text("")
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, FRR_USER, FRR_USER)
        common = ["-z", str(directory / "zserv.api"), "--vty_socket", str(directory), "-P", "0", "--log", "stdout"]
        processes: list[Process] = []
        for daemon in daemons:
            user = ["-S", "-u", "root", "-g", "root"] if daemon == "bgpd" else ["-u", FRR_USER, "-g", FRR_USER]
            argv = [str(FRR_LIB / daemon), *user, "-i", str(directory / f"{daemon}.pid"),
                    "-f", str(directory / f"{daemon}.conf"), *common]
            processes.append(self.spawn(name, f"{plan.node.role}-{daemon}", argv))
            if daemon == "zebra":
                self._await(processes, (directory / "zserv.api").exists, f"{name}: zebra's socket")
        self._await(processes, lambda: all((directory / f"{d}.vty").exists() for d in daemons),
                    f"{name}: vty sockets of {', '.join(daemons)}")
        done = self.namespace(name).run(["vtysh", "--vty_socket", str(directory), "--config_dir", str(directory),
                                         "-b"], check=False, timeout=60.0)
        (directory / "vtysh-boot.log").write_text(done.stdout + done.stderr)
        if done.returncode != 0:
            raise LabError(f"{self.topology.origin}: node {name}: vtysh -b with {plan.config} exited "
                           f"{done.returncode}:\n{(done.stdout + done.stderr).strip()[-2000:]}")

    def _start_bird(self, plan: NodePlan) -> None:
        name = plan.node.name
        if plan.config is None or not plan.config.is_file():
            raise LabError(f"{self.topology.origin}: node {name}: a BIRD image needs /etc/bird/bird.conf bound "
                           f"to an existing file (got {plan.config})")
        directory = self._node_dir(name) / "daemon"
        directory.mkdir(exist_ok=True)
        process = self.spawn(name, f"{plan.node.role}-bird", ["bird", "-f", "-c", str(plan.config), "-s",
                                                              str(directory / "bird.ctl"), "-P",
                                                              str(directory / "bird.pid")])
        self._await([process], (directory / "bird.ctl").exists, f"{name}: bird's control socket")

    def _await(self, processes: Sequence[Process], ready: Callable[[], bool], what: str) -> None:
        def check() -> bool:
            for process in processes:
                if not process.alive():
                    raise LabError(f"{what}: {process.describe()}\n{process.log_tail()}")
            return ready()

        expect(check, bool, what=what, timeout=15.0, wait=0.02,
               diagnose=lambda: "\n".join(f"--- {p.describe()}\n{p.log_tail(10)}" for p in processes))


def _poll(process: Process) -> int | None:
    return None if process.alive() else process._popen.poll()


def _free_role(wanted: str, taken: Sequence[str]) -> str:
    role, index = wanted, 0
    while role in taken:
        index += 1
        role = f"{wanted}x{index}"
    return role


def _wrapper(path: Path, argv: Sequence[str]) -> None:
    path.write_text("#!/bin/sh\nexec " + " ".join(f"'{arg}'" for arg in argv) + ' "$@"\n')
    path.chmod(0o755)


def node_env(plan: NodePlan, node_bin: Path | None, extra: Mapping[str, str] | None, *,
             base: Mapping[str, str] | None = None, tmp: Path | None = None) -> dict[str, str]:
    """The environment for a node's commands: ``base`` (default ``os.environ``), ``TMPDIR`` set to ``tmp``
    (the node's own temporary directory), containerlab's ``CLAB_LABEL_*`` variables, the node's env,
    ``extra``, and a ``PATH`` starting with the node's wrapper directory and this Python's ``bin`` directory."""
    env = dict(os.environ if base is None else base)
    if tmp is not None:
        env["TMPDIR"] = str(tmp)
    labels = {"clab-node-name": plan.node.name, "clab-node-kind": plan.node.kind, **plan.node.labels}
    env.update({"CLAB_LABEL_" + re.sub(r"[^A-Za-z0-9]", "_", key).upper(): value for key, value in labels.items()})
    env.update(plan.env)
    env.update(extra or {})
    front = [str(path) for path in (node_bin, Path(sys.executable).parent) if path is not None]
    rest = env.get("PATH") or os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["PATH"] = ":".join(dict.fromkeys([*front, *rest.split(":"), "/usr/local/sbin", "/usr/sbin", "/sbin"]))
    return env


@contextlib.contextmanager
def running(topology: Topology, **options: Any) -> Iterator[LabRun]:
    """``with running(topology) as run:``, the same as ``with LabRun(topology) as run:``."""
    with LabRun(topology, **options) as run:
        yield run


__all__ = ["LabRun", "RunRecord", "apply_impairment", "read_record", "running", "teardown_record"]
