"""ExaBGP text API: the commands a helper process writes, the replies it reads.

ExaBGP reads one command per line from the process's stdout. With acks on
(the default, ``exabgp.api.ack``), it answers each command on the process's
stdin with ``done`` or ``error``; a process must keep reading stdin or ExaBGP
stalls writing to it (DESIGN.md section 5). With ``neighbor-changes`` in the
neighbour's ``api`` block, its text encoder also writes ``neighbor ADDRESS up``,
``... connected`` and ``... down - REASON`` (4.2 and 5.0 alike). Pure: rendering
and parsing only.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

from dyncast_bgp.model import IPAddress, ServiceId
from dyncast_bgp.wire.community import Community, to_hex
from dyncast_bgp.wire.exabgp_json import FAMILIES, Family


@dataclass(frozen=True, slots=True)
class Announce:
    service: ServiceId
    next_hop: IPAddress
    path_id: int = 0
    communities: tuple[Community, ...] = ()

    def render(self) -> str:
        parts = [f"announce route {self.service.prefix} next-hop {self.next_hop}"]
        if self.path_id:
            parts.append(f"path-information {self.path_id}")
        if self.communities:
            parts.append("extended-community [ " + " ".join(to_hex(c) for c in self.communities) + " ]")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Withdraw:
    service: ServiceId
    next_hop: IPAddress
    path_id: int = 0

    def render(self) -> str:
        text = f"withdraw route {self.service.prefix} next-hop {self.next_hop}"
        return f"{text} path-information {self.path_id}" if self.path_id else text


@dataclass(frozen=True, slots=True)
class EndOfRib:
    """The End-of-RIB marker (RFC 4724) of one family, to one neighbour: ExaBGP sends it after the routes it
    still has to send that neighbour (``manual-eor true``; without it ExaBGP sends its own when a session
    comes up)."""

    neighbor: IPAddress
    family: Family

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"End-of-RIB for an unknown family {self.family!r} (one of {', '.join(FAMILIES)})")

    def render(self) -> str:
        return f"neighbor {self.neighbor} announce eor {self.family}"


Command = Announce | Withdraw
"""A route command (what the agent's state plans)."""
ApiLine = Command | EndOfRib
"""Anything the agent writes to ExaBGP."""


def render_all(commands: Sequence[ApiLine]) -> str:
    """All commands as one block of newline-terminated lines (one write)."""
    return "".join(command.render() + "\n" for command in commands)


class Reply(enum.Enum):
    DONE = "done"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    OTHER = "other"


class NeighborChange(NamedTuple):
    neighbor: IPAddress
    state: Literal["up", "connected", "down"]


_SESSION_STATES: dict[str, Literal["up", "connected", "down"]] = {
    "up": "up", "connected": "connected", "down": "down"}


def parse_neighbor_change(line: str) -> NeighborChange | None:
    """``neighbor ADDRESS up|connected|down ...`` as ExaBGP's text encoder writes it; None for any other line
    (replies, updates, a malformed address)."""
    words = line.split()
    state = _SESSION_STATES.get(words[2]) if len(words) >= 3 and words[0] == "neighbor" else None
    if state is None or (state != "down" and len(words) != 3):  # only `down` carries more: `- REASON`
        return None
    try:
        return NeighborChange(ipaddress.ip_address(words[1]), state)
    except ValueError:
        return None


def parse_reply(line: str) -> Reply:
    """Classify one line ExaBGP wrote to the process's stdin."""
    word = line.strip().lower()
    if word == "done":
        return Reply.DONE
    if word == "error":
        return Reply.ERROR
    if word == "shutdown":
        return Reply.SHUTDOWN
    return Reply.OTHER
