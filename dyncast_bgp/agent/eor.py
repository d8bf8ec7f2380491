"""When the agent sends End-of-RIB (RFC 4724) to a neighbour: once what it has to announce is sent.

Left to itself, ExaBGP sends End-of-RIB as soon as a session is up and the routes it holds are sent. After the
agent's node restarts (ExaBGP and the agent), it holds none yet: the marker goes first, and a peer that kept
the node's routes as stale across the restart (graceful restart: FRR, BIRD, the dyncast router) flushes them
at once. Every instance of the node is then gone from every ingress until the agent announces it again, about
1-2 s in the three-site lab: the gap graceful restart is there to avoid.

With ``agent.end_of_rib_wait`` > 0 (the default) the rendered ExaBGP configuration says ``manual-eor true``
and ``neighbor-changes``: ExaBGP tells the agent when a session comes up, and the agent sends the marker of
each of that neighbour's families when the agent state is settled (every instance announced, or known not to
be: unhealthy, withdrawn, a failing source; :meth:`AgentState.settled`), or when the wait is over, whichever
comes first. ExaBGP sends it after the routes written before it. A session that comes up again owes its
marker again; one that goes down before it owes none. When the agent starts, every neighbour is owed one: an
agent respawned by ExaBGP while its sessions stay up hears no ``up`` line, and with ``manual-eor`` nobody else
would send the marker (ExaBGP refuses it, with an ``error`` ack, for a session not established yet).

Markers go only for the families the agent announces (its services' D-SIDs) among the neighbour's configured
ones: ExaBGP's own marker covers the negotiated families only, and the agent cannot see what was negotiated
(the text encoder writes nothing for it). A peer that did not negotiate IPv4 while the agent has IPv4
services gets no IPv4 route either; configure ``families`` as the peer does.

Pure bookkeeping (no I/O): the runtime feeds it the session changes and asks what is due.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from dyncast_bgp.model import IPAddress
from dyncast_bgp.wire.exabgp_json import Family
from dyncast_bgp.wire.exabgp_text import EndOfRib


@dataclass(frozen=True, slots=True)
class Sent:
    """End-of-RIB sent to ``neighbor``: its markers, ``waited`` seconds after the session came up, and whether
    the state was settled then (False: the wait ran out)."""

    neighbor: IPAddress
    markers: tuple[EndOfRib, ...]
    waited: float
    settled: bool


class EndOfRibBook:
    """The neighbours owed an End-of-RIB, each with the time its session came up."""

    def __init__(self, wait: float, families: Mapping[IPAddress, Sequence[Family]]) -> None:
        if not wait > 0.0:
            raise ValueError(f"end_of_rib_wait must be > 0 to send End-of-RIB from the agent, not {wait!r}")
        self.wait = wait
        self._families = {neighbor: tuple(found) for neighbor, found in families.items()}
        self._owed: dict[IPAddress, float] = {}  # neighbour -> when its session came up

    def knows(self, neighbor: IPAddress) -> bool:
        """Whether ``neighbor`` is configured (ExaBGP reports only those; anything else is a mistake to log)."""
        return neighbor in self._families

    def start(self, now: float) -> None:
        """The agent starts: every configured neighbour is owed its markers (see the module docstring)."""
        for neighbor in self._families:
            self._owed[neighbor] = now

    def up(self, neighbor: IPAddress, now: float) -> None:
        """The session to ``neighbor`` is up: it is owed its markers (again, if it was up before)."""
        if neighbor in self._families:
            self._owed[neighbor] = now

    def down(self, neighbor: IPAddress) -> None:
        """The session is down: nothing is owed until it is up again."""
        self._owed.pop(neighbor, None)

    @property
    def owed(self) -> bool:
        return bool(self._owed)

    def due(self, now: float, *, settled: bool, announced: Collection[Family]) -> list[Sent]:
        """The markers to send now, by neighbour (in address order), taken out of what is owed: all of them
        when ``settled``, else those whose wait is over. ``announced``: the families the agent announces; a
        neighbour's markers are those of its families among them (none: a ``Sent`` without markers)."""
        sent: list[Sent] = []
        for neighbor in sorted(self._owed, key=lambda address: (address.version, address)):
            since = self._owed[neighbor]
            if settled or now >= since + self.wait:
                del self._owed[neighbor]
                markers = tuple(EndOfRib(neighbor, family) for family in self._families[neighbor]
                                if family in announced)
                sent.append(Sent(neighbor, markers, max(0.0, now - since), settled))
        return sent

    def next_due(self) -> float | None:
        """When the first wait runs out (None: nothing owed)."""
        return min(self._owed.values()) + self.wait if self._owed else None
