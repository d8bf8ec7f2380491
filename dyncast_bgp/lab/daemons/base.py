"""What every lab BGP daemon has in common: its peering spec, its life cycle and its queries.

A daemon object renders its configuration into its own directory when
constructed, :meth:`Daemon.start` spawns it (non-blocking, so several daemons
start in parallel), :meth:`Daemon.sessions` and :meth:`Daemon.rib` query it,
and the owning :class:`~dyncast_bgp.lab.netns.Lab` stops it. Waiting is done
with :func:`wait_established` and :func:`wait_routes`, bounded polls that
report the daemon's log tail when they give up.
"""

from __future__ import annotations

import ipaddress
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

from dyncast_bgp.lab.errors import DaemonError
from dyncast_bgp.lab.netns import Lab, Namespace
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.process import Process
from dyncast_bgp.lab.rib import FAMILIES, Family, Route, family_of, select, show


@dataclass(frozen=True, slots=True)
class Local:
    """The daemon's own identity: AS, router id, and the addresses it speaks BGP from."""

    asn: int
    router_id: str
    addresses: tuple[str, ...]

    def address_for(self, peer: str) -> str:
        """The local address of the same family as ``peer`` (the session's source)."""
        version = ipaddress.ip_address(peer).version
        for address in self.addresses:
            if ipaddress.ip_address(address).version == version:
                return address
        raise DaemonError(f"no local IPv{version} address among {self.addresses} to reach peer {peer}")


@dataclass(frozen=True, slots=True)
class Peer:
    """One BGP session as seen from the daemon being configured.

    ``families`` are negotiated over this one session (IPv6 routes over an
    IPv4 session are fine: MP-BGP). ``add_path_receive``/``add_path_send``
    ask for the ADD-PATH capability (FRR always offers receive and sends all
    paths with ``add_path_send``); ``rr_client`` makes the peer a route
    reflector client. ``passive`` waits for the peer to connect.
    ``export_routes=False`` sends the peer nothing (a pure receiver's side).
    """

    address: str
    asn: int
    families: tuple[Family, ...] = FAMILIES
    passive: bool = False
    add_path_receive: bool = True
    add_path_send: bool = False
    rr_client: bool = False
    export_routes: bool = True
    description: str = ""

    def __post_init__(self) -> None:
        ipaddress.ip_address(self.address)
        unknown = set(self.families) - set(FAMILIES)
        if unknown or not self.families:
            raise DaemonError(f"peer {self.address}: families must be among {FAMILIES}, got {self.families}")


class Daemon(ABC):
    """A BGP daemon in a namespace, configured in ``<lab workdir>/<name>/``.

    Subclasses set their own attributes, then call ``super().__init__``,
    which creates the directory and renders the configuration.
    """

    binaries: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lab: Lab, namespace: Namespace, *, name: str, local: Local, peers: Sequence[Peer]) -> None:
        self.lab = lab
        self.namespace = namespace
        self.name = name
        self.local = local
        self.peers = tuple(peers)
        self.processes: list[Process] = []
        for peer in self.peers:
            if peer.rr_client and peer.asn != local.asn:
                raise DaemonError(f"{name}: peer {peer.address} (AS {peer.asn}) cannot be a route reflector client "
                                  f"of AS {local.asn}: only iBGP peers can")
            local.address_for(peer.address)  # a source address of the peer's family exists
        self.directory = lab.directory(name)
        self.write_config()

    @classmethod
    def missing_binaries(cls) -> list[str]:
        """The programs this daemon needs that are not installed."""
        return require_binaries(cls.binaries)

    @abstractmethod
    def write_config(self) -> None:
        """Render the configuration files into ``self.directory``."""

    @abstractmethod
    def start(self) -> None:
        """Spawn the daemon's processes; must not wait for sessions."""

    @abstractmethod
    def sessions(self) -> dict[str, bool]:
        """Peer address -> whether the session is Established."""

    @abstractmethod
    def rib(self, family: Family) -> list[Route]:
        """Every path the daemon holds for ``family`` (received routes, all ADD-PATH paths)."""

    def spawn(self, role: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Process:
        """Start one of the daemon's processes (log in ``<directory>/<role>.log``)."""
        if any(p.name == f"{self.name}-{role}" and p.alive() for p in self.processes):
            raise DaemonError(f"{self.name}: {role} is already running (stop() before start())")
        process = self.lab.spawn(self.namespace, f"{self.name}-{role}", argv, env=env,
                                 log_path=self.directory / f"{role}.log")
        self.processes.append(process)
        return process

    def stop(self) -> None:
        """Stop this daemon now (the lab would at close anyway); :meth:`start` may run it again."""
        self.lab.stop(*reversed(self.processes))
        self.processes.clear()

    def check_running(self) -> None:
        """Raise :class:`DaemonError` with the log tail if one of the daemon's processes has exited."""
        for process in self.processes:
            if not process.alive():
                raise DaemonError(f"{self.name} in {self.namespace.name}: {process.describe()}\n"
                                  f"--- last lines of {process.log_path} ---\n{process.log_tail()}")

    def diagnostics(self) -> str:
        """Log tails of every process, for failure messages."""
        parts = [f"--- {p.describe()} ---\n{p.log_tail()}" for p in self.processes]
        return "\n".join(parts) if parts else f"{self.name}: not started"

    def established(self, peer: str) -> bool:
        self.check_running()
        return self.sessions().get(str(ipaddress.ip_address(peer)), False)


def require_binaries(binaries: Iterable[str]) -> list[str]:
    """The binaries missing from PATH (``/usr/lib/frr`` and ``/usr/sbin`` included)."""
    search = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/lib/frr"
    return [binary for binary in binaries if shutil.which(binary, path=search) is None
            and shutil.which(binary) is None]


def wait_established(pairs: Iterable[tuple[Daemon, str]], *, timeout: float = 20.0) -> None:
    """Wait until every (daemon, peer address) session is Established; polls them all in each round."""
    pending = list(pairs)

    def not_up() -> list[str]:
        return [f"{daemon.name}->{peer}" for daemon, peer in pending if not daemon.established(peer)]

    def diagnose() -> str:
        return "\n".join(daemon.diagnostics() for daemon in {id(d): d for d, _ in pending}.values())

    expect(not_up, lambda down: not down, what="BGP sessions to be Established", timeout=timeout, wait=0.1,
           diagnose=diagnose)


def wait_routes(daemon: Daemon, prefix: str, expected: Callable[[list[Route]], bool], *,
                what: str = "", timeout: float = 10.0) -> list[Route]:
    """Poll ``daemon``'s RIB until the routes for ``prefix`` satisfy ``expected``; return them."""
    family = family_of(prefix)

    def routes() -> list[Route]:
        daemon.check_running()
        return select(daemon.rib(family), prefix)

    def diagnose() -> str:
        return f"{daemon.name} RIB for {prefix}:\n{show(routes())}\n{daemon.diagnostics()}"

    return expect(routes, expected, what=what or f"routes for {prefix} in {daemon.name}", timeout=timeout,
                  wait=0.05, diagnose=diagnose)
