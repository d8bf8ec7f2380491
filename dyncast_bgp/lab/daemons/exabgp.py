"""ExaBGP 5.0 in a namespace, as a speaker (with API processes) and/or a JSON receiver.

Facts this module relies on (ExaBGP 5.0.15 on Python 3.11):

- Environment: ``exabgp_daemon_user=root`` (else it drops to ``nobody``),
  ``exabgp_api_cli=false`` (else it wants its CLI named pipes in /run),
  ``exabgp_tcp_bind=<addresses>`` to listen (empty: never listens, every
  peer must then be active), ``exabgp_tcp_port``.
- Give ``family { ipv4 unicast; ipv6 unicast; }`` or it offers every family.
  ``capability { add-path send/receive; }`` applies to all listed families.
- Each API process gets its own ``api`` block in the neighbor, so one
  process can receive updates while another only sends commands. ``api``
  block names are global to the file (an unnamed block is named after the
  current microsecond), so they are named ``<process>.<neighbor index>``.
- The API acknowledges every command line with a plain ``done`` or ``error``
  line on the process's stdin, also with ``encoder json``; a process that
  never reads its stdin eventually blocks ExaBGP.
- ExaBGP puts each API process in a process group of its own and terminates
  them when it exits; the namespace sweep of the lab catches any left over.
- Every instance here gets one extra API process, the lab sink
  (:mod:`dyncast_bgp.lab.exabgp_sink`), subscribed to neighbor changes and
  (for receivers) parsed updates; sessions and the Adj-RIB-In are rebuilt
  from that file (:mod:`dyncast_bgp.lab.daemons.exabgp_json`). Received
  ADD-PATH ids show as ``"path-information": "0.0.0.1"``.
- An active ExaBGP whose first connection is refused retries within a
  second, so it can start before its passive peers.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer
from dyncast_bgp.lab.daemons.exabgp_json import ExaBgpView, read_view
from dyncast_bgp.lab.errors import DaemonError
from dyncast_bgp.lab.netns import Lab, Namespace
from dyncast_bgp.lab.rib import Family, Route

SINK_NAME = "lab-sink"
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_UNSAFE = re.compile(r"[\s;{}\[\]\"']")


@dataclass(frozen=True, slots=True)
class ApiProcess:
    """An ExaBGP ``process``: a command ExaBGP runs, reading its stdout as API commands."""

    name: str
    argv: tuple[str, ...]
    encoder: Literal["json", "text"] = "json"
    receive_updates: bool = False
    neighbor_changes: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise DaemonError(f"ExaBGP process name {self.name!r} must be letters, digits, '_' or '-'")
        bad = [arg for arg in self.argv if not arg or _UNSAFE.search(arg)]
        if not self.argv or bad:
            raise DaemonError(f"ExaBGP process {self.name}: arguments must be non-empty without spaces, "
                              f"quotes, ';' or braces (ExaBGP splits 'run' on spaces): {bad or self.argv}")


def sink_process(events: Path, *, receive_updates: bool) -> ApiProcess:
    """The lab sink: appends every JSON message to ``events``."""
    return ApiProcess(SINK_NAME, (sys.executable, "-m", "dyncast_bgp.lab.exabgp_sink", str(events)),
                      receive_updates=receive_updates, neighbor_changes=True)


def render_config(local: Local, peers: Sequence[Peer], processes: Sequence[ApiProcess]) -> str:
    """The ExaBGP 5.0 configuration text."""
    lines: list[str] = []
    for process in processes:
        lines += [f"process {process.name} {{", f"  run {' '.join(process.argv)};",
                  f"  encoder {process.encoder};", "}"]
    for index, peer in enumerate(peers):
        lines += _render_neighbor(local, peer, processes, index)
    return "\n".join(lines) + "\n"


def _render_neighbor(local: Local, peer: Peer, processes: Sequence[ApiProcess], index: int) -> list[str]:
    add_path = {(True, True): "send/receive", (True, False): "receive", (False, True): "send"}
    mode = add_path.get((peer.add_path_receive, peer.add_path_send))
    lines = [f"neighbor {peer.address} {{", f"  router-id {local.router_id};",
             f"  local-address {local.address_for(peer.address)};", f"  local-as {local.asn};",
             f"  peer-as {peer.asn};"]
    if peer.description:
        lines.append(f'  description "{peer.description}";')
    if peer.passive:
        lines.append("  passive;")
    if mode is not None:
        lines.append(f"  capability {{ add-path {mode}; }}")
    lines.append("  family { " + " ".join(f"{family} unicast;" for family in peer.families) + " }")
    for process in processes:
        lines.append(f"  api {process.name}.{index} {{ processes [ {process.name} ];"
                     + (" neighbor-changes;" if process.neighbor_changes else "")
                     + (" receive { parsed; update; }" if process.receive_updates else "") + " }")
    lines.append("}")
    return lines


def environment(local: Local, peers: Sequence[Peer], *, port: int = 179) -> dict[str, str]:
    """ExaBGP's environment: listen on the local addresses only when some peer is passive."""
    listen = " ".join(local.address_for(peer.address) for peer in peers if peer.passive)
    unique = " ".join(dict.fromkeys(listen.split()))
    return {"exabgp_daemon_user": "root", "exabgp_api_cli": "false", "exabgp_tcp_bind": unique,
            "exabgp_tcp_port": str(port), "exabgp_log_short": "true"}


class ExaBgp(Daemon):
    """ExaBGP with the lab sink and any extra API processes (an announcer, the agent)."""

    binaries: ClassVar[tuple[str, ...]] = ("exabgp",)

    def __init__(self, lab: Lab, namespace: Namespace, *, name: str, local: Local, peers: Sequence[Peer],
                 processes: Sequence[ApiProcess] = (), receive_updates: bool = True,
                 executable: str | None = None, extra_env: dict[str, str] | None = None) -> None:
        self.api_processes = tuple(processes)
        self.receive_updates = receive_updates
        self.executable = executable or _default_executable()
        self.extra_env = dict(extra_env or {})
        self._view = ExaBgpView()
        self._offset = 0
        super().__init__(lab, namespace, name=name, local=local, peers=peers)

    @classmethod
    def missing_binaries(cls) -> list[str]:
        try:
            _default_executable()
        except DaemonError:
            return ["exabgp"]
        return []

    @property
    def config_path(self) -> Path:
        return self.directory / "exabgp.conf"

    @property
    def events_path(self) -> Path:
        return self.directory / "events.jsonl"

    def write_config(self) -> None:
        processes = (sink_process(self.events_path, receive_updates=self.receive_updates), *self.api_processes)
        self.config_path.write_text(render_config(self.local, self.peers, processes))

    def start(self) -> None:
        """Spawn ExaBGP; a restarted instance starts from an empty view, like its Adj-RIB-In."""
        self._view = ExaBgpView()
        self._offset = self.events_path.stat().st_size if self.events_path.exists() else 0
        env = {**_base_env(), **environment(self.local, self.peers), **self.extra_env}
        self.spawn("exabgp", [self.executable, str(self.config_path)], env=env)

    def view(self) -> ExaBgpView:
        """Sessions and paths so far (reads only the complete lines added since the last call)."""
        try:
            with self.events_path.open("rb") as events:
                events.seek(self._offset)
                data = events.read()
        except FileNotFoundError:
            return self._view
        complete = data[: data.rfind(b"\n") + 1]
        self._offset += len(complete)
        return read_view(complete.decode(errors="replace").splitlines(), self._view)

    def sessions(self) -> dict[str, bool]:
        self.view()
        return {peer: self._view.established(peer) for peer in self._view.states}

    def rib(self, family: Family) -> list[Route]:
        return self.view().routes(family)


def _default_executable() -> str:
    beside = Path(sys.executable).with_name("exabgp")
    if beside.exists():
        return str(beside)
    found = shutil.which("exabgp")
    if found is None:
        raise DaemonError("exabgp not found next to the Python interpreter nor on PATH")
    return found


def _base_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.lower().startswith("exabgp")}

