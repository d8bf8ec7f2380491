"""Network namespaces for labs: create, wire, address, run commands and daemons in them, remove.

A :class:`Lab` owns everything it creates and removes it in :meth:`Lab.close`
(or when its ``with`` block ends, also on an exception):

1. its processes, in parallel: SIGTERM to each process group, SIGKILL after
   ``stop_grace`` seconds (:func:`dyncast_bgp.lab.process.stop_all`);
2. any process still inside one of its namespaces (``ip netns pids``), e.g. a
   helper that put itself in another process group;
3. its namespaces, by name, in one ``ip -batch``;
4. its work directory (unless ``keep_workdir``) and its state file.

Namespace names are ``<prefix>-<token>-<role>``: the prefix (``dcb``) marks
them as ours, the random token keeps concurrent labs apart. Each lab writes
the names it created to ``/run/dyncast-lab/<token>.json`` with its owner's pid;
:func:`sweep_stale` removes the namespaces of labs whose owner died without
cleaning up (a SIGKILLed test run), and never touches a live lab's.

Interfaces are created inside their namespaces (``ip -n NS link add ... peer
name ... netns OTHER``), so no name ever appears in the host namespace. IPv6
addresses are added with ``nodad`` so they are usable at once. Commands are
batched per namespace (``ip -n NS -batch -``): a LAN of 6 members costs 8
``ip`` calls.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from dyncast_bgp.lab.errors import CommandError, LabError
from dyncast_bgp.lab.process import Process, spawn, stop_all

PREFIX = "dcb"
STATE_DIR = Path("/run/dyncast-lab")
_ROLE = re.compile(r"^[a-z0-9][a-z0-9-]{0,23}$")


def run(namespace: Namespace | str | None, argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 15.0, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (inside ``namespace`` when given) and capture its output as text.

    Raises :class:`CommandError` when it exits non-zero (if ``check``), times out or cannot start.
    """
    name = namespace.name if isinstance(namespace, Namespace) else namespace
    full = [*(["ip", "netns", "exec", name] if name else []), *argv]
    try:
        done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else dict(env), check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(full, None, _text(exc.stdout), _text(exc.stderr)) from None
    except OSError as exc:
        raise CommandError(full, None, "", str(exc)) from None
    if check and done.returncode != 0:
        raise CommandError(full, done.returncode, done.stdout, done.stderr)
    return done


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    return data if isinstance(data, str) else data.decode(errors="replace")


def address_command(ifname: str, cidr: str) -> str:
    """The ``ip -batch`` line adding ``cidr`` to ``ifname`` (IPv6 with ``nodad``)."""
    interface = ipaddress.ip_interface(cidr)
    suffix = " nodad" if interface.version == 6 else ""
    return f"address add {interface.with_prefixlen} dev {ifname}{suffix}"


def route_command(destination: str, *, via: str | None = None, dev: str | None = None,
                  table: int | None = None, onlink: bool = False) -> str:
    """The ``ip -batch`` line adding a route (``ip`` takes the family from the destination;
    batch lines cannot carry options such as ``-6``)."""
    network = ipaddress.ip_network(destination, strict=False)
    if via is None and dev is None:
        raise LabError(f"route to {destination} needs a gateway (via) or a device (dev)")
    parts = ["route", "add", network.with_prefixlen]
    if via is not None:
        parts += ["via", str(ipaddress.ip_address(via))]
    if dev is not None:
        parts += ["dev", dev]
    if table is not None:
        parts += ["table", str(table)]
    if onlink:
        parts.append("onlink")
    return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Namespace:
    """A network namespace, by name; every method runs a command inside it."""

    name: str

    def exec_argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` prefixed to run inside this namespace (``ip netns exec`` execs in place)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 15.0,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return run(self, argv, input=input, check=check, timeout=timeout, env=env)

    def ip(self, *args: str) -> str:
        """``ip -n NAME args...``; returns stdout."""
        return run(None, ["ip", "-n", self.name, *args]).stdout

    def ip_batch(self, commands: Sequence[str]) -> None:
        """Run ``ip`` commands (without the leading ``ip``) in one ``ip -n NAME -batch -``."""
        if commands:
            run(None, ["ip", "-n", self.name, "-batch", "-"], input="\n".join(commands) + "\n")

    def set_sysctls(self, values: Mapping[str, str | int]) -> None:
        """Set sysctls in this namespace in one call, e.g. ``{"net.ipv4.ip_forward": 1}``."""
        if values:
            self.run(["sysctl", "-q", "-w", *(f"{key}={value}" for key, value in values.items())])

    def enable_forwarding(self) -> None:
        self.set_sysctls({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})

    def add_addresses(self, ifname: str, cidrs: Sequence[str]) -> None:
        """Add addresses (v4 and v6, ``nodad``) to ``ifname``, e.g. anycast /32s on ``lo``."""
        self.ip_batch([address_command(ifname, cidr) for cidr in cidrs])

    def add_route(self, destination: str, *, via: str | None = None, dev: str | None = None,
                  table: int | None = None, onlink: bool = False) -> None:
        self.ip_batch([route_command(destination, via=via, dev=dev, table=table, onlink=onlink)])

    def pids(self) -> list[int]:
        """Pids of every process in this namespace (empty if it no longer exists)."""
        done = run(None, ["ip", "netns", "pids", self.name], check=False)
        return [int(token) for token in done.stdout.split() if token.isdigit()]


@dataclass(frozen=True, slots=True)
class LanPort:
    """One member of a LAN: its namespace, its interface there and the addresses on it."""

    namespace: Namespace
    addresses: tuple[str, ...]
    ifname: str = "eth0"


@dataclass(frozen=True, slots=True)
class Lan:
    """A shared L2 segment: a bridge in a hub namespace, one veth per member."""

    hub: Namespace
    bridge: str
    ports: tuple[LanPort, ...]


class Lab:
    """Creates namespaces, links, processes and files, and removes all of them on :meth:`close`."""

    def __init__(self, *, prefix: str = PREFIX, workdir: Path | None = None, keep_workdir: bool = False,
                 stop_grace: float = 3.0, state_dir: Path | None = STATE_DIR) -> None:
        if not _ROLE.match(prefix):
            raise LabError(f"lab prefix {prefix!r} must be lowercase letters, digits and '-'")
        self.prefix = prefix
        self.token = secrets.token_hex(3)
        self.stop_grace = stop_grace
        self.keep_workdir = keep_workdir
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{self.token}-")) if workdir is None else workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # daemons that drop privileges (FRR's zebra) must reach their directory
        self._namespaces: list[Namespace] = []
        self._processes: list[Process] = []
        self._state_file = None if state_dir is None else state_dir / f"{self.token}.json"
        self._closed = False

    # -- namespaces and links -------------------------------------------------------------

    def namespace(self, role: str) -> Namespace:
        """Create one namespace named ``<prefix>-<token>-<role>`` with ``lo`` up."""
        return self.namespaces(role)[0]

    def namespaces(self, *roles: str) -> list[Namespace]:
        """Create several namespaces in one batch, each with ``lo`` up."""
        for role in roles:
            if not _ROLE.match(role):
                raise LabError(f"namespace role {role!r} must be 1-24 lowercase letters, digits and '-'")
        created = [Namespace(f"{self.prefix}-{self.token}-{role}") for role in roles]
        names = [ns.name for ns in created]
        if len(set(names)) != len(names) or set(names) & set(self.namespace_names):
            raise LabError(f"namespace role used twice in this lab: {list(roles)}")
        taken = set(names) & set(list_namespaces())
        if taken:  # never adopt (and later delete) a namespace this lab did not create
            raise LabError(f"namespaces already exist: {sorted(taken)}")
        self._namespaces.extend(created)  # registered first: a half-done batch is still cleaned up
        self._write_state()
        run(None, ["ip", "-batch", "-"], input="".join(f"netns add {ns.name}\n" for ns in created))
        for ns in created:
            ns.ip_batch(["link set lo up"])
        return created

    def veth(self, a: Namespace, a_ifname: str, b: Namespace, b_ifname: str) -> None:
        """A veth pair between two namespaces, both ends up."""
        a.ip_batch([f"link add {a_ifname} type veth peer name {b_ifname} netns {b.name}",
                    f"link set {a_ifname} up"])
        b.ip_batch([f"link set {b_ifname} up"])

    def lan(self, hub_role: str, ports: Sequence[LanPort], *, bridge: str = "br0") -> Lan:
        """A bridge in a new hub namespace with each member attached by a veth, addresses added."""
        hub = self.namespace(hub_role)
        commands = [f"link add {bridge} type bridge", f"link set {bridge} up"]
        for index, port in enumerate(ports):
            hub_side = f"p{index}"
            commands += [f"link add {hub_side} type veth peer name {port.ifname} netns {port.namespace.name}",
                         f"link set {hub_side} master {bridge}", f"link set {hub_side} up"]
        hub.ip_batch(commands)
        for port in ports:
            port.namespace.ip_batch([f"link set {port.ifname} up",
                                     *(address_command(port.ifname, cidr) for cidr in port.addresses)])
        return Lan(hub=hub, bridge=bridge, ports=tuple(ports))

    # -- files and processes ----------------------------------------------------------------

    def directory(self, name: str) -> Path:
        """A fresh sub-directory of the work directory (mode 0755)."""
        path = self.workdir / name
        path.mkdir(mode=0o755)
        return path

    def spawn(self, namespace: Namespace | None, name: str, argv: Sequence[str], *,
              env: Mapping[str, str] | None = None, cwd: Path | None = None,
              log_path: Path | None = None) -> Process:
        """Start ``argv`` inside ``namespace`` (or here), output to ``log_path``; stopped on close."""
        full = namespace.exec_argv(argv) if namespace is not None else list(argv)
        process = spawn(name, full, log_path=log_path or self.workdir / f"{name}.log", env=env, cwd=cwd)
        self._processes.append(process)
        return process

    def stop(self, *processes: Process) -> None:
        """Stop some of this lab's processes now, in parallel (e.g. to test a peer going away)."""
        stop_all(processes, grace=self.stop_grace)

    @property
    def processes(self) -> tuple[Process, ...]:
        return tuple(self._processes)

    @property
    def namespace_names(self) -> tuple[str, ...]:
        return tuple(ns.name for ns in self._namespaces)

    # -- cleanup ---------------------------------------------------------------------------

    def close(self) -> None:
        """Remove everything this lab created; raise :class:`LabError` listing what could not be removed."""
        if self._closed:
            return
        self._closed = True
        problems: list[str] = []
        stop_all(reversed(self._processes), grace=self.stop_grace)
        _kill_members(self._namespaces)
        problems += _delete_namespaces([ns.name for ns in self._namespaces])
        if self._state_file is not None:
            self._state_file.unlink(missing_ok=True)
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        if problems:
            raise LabError("lab cleanup incomplete: " + "; ".join(problems))

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.close()
        except LabError as cleanup_error:
            if exc is None:
                raise
            exc.add_note(str(cleanup_error))  # keep the original failure in front

    def _write_state(self) -> None:
        if self._state_file is None:
            return
        self._state_file.parent.mkdir(parents=True, exist_ok=True)
        state = {"owner_pid": os.getpid(), "owner_start": _start_time(os.getpid()),
                 "namespaces": [ns.name for ns in self._namespaces], "workdir": str(self.workdir)}
        temporary = self._state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(state))
        temporary.replace(self._state_file)


def _kill_members(namespaces: Sequence[Namespace]) -> None:
    """SIGKILL every process still inside one of ``namespaces`` (they can only be ours)."""
    for ns in namespaces:
        for pid in ns.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _delete_namespaces(names: Sequence[str]) -> list[str]:
    existing = set(list_namespaces())
    doomed = [name for name in names if name in existing]
    if doomed:
        run(None, ["ip", "-force", "-batch", "-"], input="".join(f"netns del {name}\n" for name in doomed),
            check=False)
    left = sorted(set(doomed) & set(list_namespaces()))
    return [f"namespaces not deleted: {', '.join(left)}"] if left else []


def remove_namespaces(names: Sequence[str]) -> list[str]:
    """SIGKILL every process inside the namespaces ``names`` (those that exist), then delete them;
    returns what could not be removed. For tearing down a lab from its recorded state."""
    present = set(list_namespaces())
    _kill_members([Namespace(name) for name in names if name in present])
    return _delete_namespaces(names)


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot), or ``None`` if it does not run: with the pid,
    it names one process even after the pid is reused."""
    return _start_time(pid)


def list_namespaces() -> list[str]:
    """Names of all network namespaces (``ip netns list``)."""
    done = run(None, ["ip", "netns", "list"])
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def _start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (tells a reused pid apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def sweep_stale(state_dir: Path = STATE_DIR) -> list[str]:
    """Remove the namespaces of labs whose owner process is gone; return the names removed.

    Only namespaces listed in a state file whose owner (pid and start time)
    no longer runs are touched, so concurrent live labs are safe.
    """
    removed: list[str] = []
    for state_file in sorted(state_dir.glob("*.json")) if state_dir.is_dir() else []:
        try:
            state = json.loads(state_file.read_text())
            owner, started, names = int(state["owner_pid"]), state.get("owner_start"), list(state["namespaces"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _start_time(owner) is not None and _start_time(owner) == started:
            continue  # the owner still runs
        present = [Namespace(str(name)) for name in names if str(name) in set(list_namespaces())]
        _kill_members(present)
        if not _delete_namespaces([ns.name for ns in present]):
            removed += [ns.name for ns in present]
            state_file.unlink(missing_ok=True)
    return removed
