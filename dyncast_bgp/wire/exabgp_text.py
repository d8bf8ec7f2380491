"""ExaBGP text API: the commands a helper process writes, the replies it reads.

ExaBGP reads one command per line from the process's stdout. With acks on
(the default, ``exabgp.api.ack``), it answers each command on the process's
stdin with ``done`` or ``error``; a process must keep reading stdin or ExaBGP
stalls writing to it (DESIGN.md section 5). Pure: rendering and parsing only.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from dyncast_bgp.model import IPAddress, ServiceId
from dyncast_bgp.wire.community import Community, to_hex


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


Command = Announce | Withdraw


def render_all(commands: Sequence[Command]) -> str:
    """All commands as one block of newline-terminated lines (one write)."""
    return "".join(command.render() + "\n" for command in commands)


class Reply(enum.Enum):
    DONE = "done"
    ERROR = "error"
    SHUTDOWN = "shutdown"
    OTHER = "other"


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
