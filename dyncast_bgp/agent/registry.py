"""Function names to D-SIDs: the same answer at every site without the agents talking. Pure.

ETSI GR NFV-EVE 020 (clauses 5.1.2.3 and 5.2.2.3) has the orchestrator name a
function ("the function name can be used as the global unique identifier of a
function"); the routers need an anycast prefix (D-SID). A name maps to:

1. the D-SID of the service of that name in the static config (``services``);
2. else the D-SID given for it in ``agent.api.names``;
3. else, when ``agent.api.pool`` is set, an address of the pool picked by a
   stable hash of the name (SHA-256), probing linearly past addresses that
   (1) and (2) already use.

Every agent with the same ``services``/``names``/``pool`` therefore maps one
name to one D-SID. The limits (docs/orchestrator.md): two *allocated* names
can hash to the same address (each agent only knows its own names, so it
cannot probe past a name another site allocated); a pool of N addresses gives
a collision among k names with probability about k²/2N, so use a large pool
(an IPv6 /64) or name functions in ``agent.api.names``. A collision this agent
can see (the address is already another name's) is refused, never re-used.
Agents whose config differs may disagree: a registration that names a D-SID
different from the mapping is refused as a conflict.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass

from dyncast_bgp.model import ServiceId

Pool = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class NameMapping:
    """Where a name's D-SID comes from: ``config``, ``names`` or ``pool``."""

    name: str
    service_id: ServiceId
    origin: str


@dataclass(frozen=True, slots=True)
class NameConflict:
    """A name that cannot be mapped, or a D-SID asked for that differs from the mapping."""

    name: str
    message: str


def hash_index(name: str, size: int) -> int:
    """Where probing starts: the name's SHA-256 as an integer, modulo the pool size."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big") % size


class NameRegistry:
    def __init__(self, *, services: Mapping[str, ServiceId], names: Mapping[str, ServiceId],
                 pool: Pool | None) -> None:
        self._fixed: dict[str, NameMapping] = {name: NameMapping(name, sid, "names") for name, sid in names.items()}
        self._fixed.update({name: NameMapping(name, sid, "config") for name, sid in services.items()})
        self._taken: dict[ServiceId, str] = {}
        self.conflicts: list[NameConflict] = []
        for mapping in sorted(self._fixed.values(), key=lambda m: (m.origin != "config", m.name)):
            other = self._taken.setdefault(mapping.service_id, mapping.name)
            if other != mapping.name:
                self.conflicts.append(NameConflict(
                    mapping.name, f"agent.api.names gives {mapping.name!r} D-SID {mapping.service_id}, "
                    f"which is {other!r}'s"))
        for name, sid in names.items():
            configured = services.get(name)
            if configured is not None and configured != sid:
                self.conflicts.append(NameConflict(
                    name, f"agent.api.names gives {name!r} D-SID {sid} but the config's service has "
                    f"{configured}; the config wins"))
        self.pool = pool

    def lookup(self, name: str) -> NameMapping | NameConflict:
        """The D-SID of ``name``, or why it has none."""
        fixed = self._fixed.get(name)
        if fixed is not None:
            return fixed
        if self.pool is None:
            return NameConflict(name, f"unknown service {name!r}: not in the config's services or agent.api.names, "
                                "and no agent.api.pool to allocate from")
        return self._allocate(name, self.pool)

    def _allocate(self, name: str, pool: Pool) -> NameMapping | NameConflict:
        size = pool.num_addresses
        start = hash_index(name, size)
        host = 32 if pool.version == 4 else 128
        for step in range(min(size, len(self._taken) + 1)):
            address = pool.network_address + (start + step) % size
            sid = ServiceId(ipaddress.ip_network(f"{address}/{host}"))
            if sid not in self._taken:
                return NameMapping(name, sid, "pool")
        return NameConflict(name, f"agent.api.pool {pool} is full: every address is a configured name's")

    def check(self, name: str, asked: ServiceId | None, in_use: Mapping[ServiceId, str]) -> NameMapping | NameConflict:
        """The mapping of ``name`` for a registration that asked for ``asked`` (None: whatever it maps to).

        ``in_use`` holds the D-SIDs of services this agent runs now (with their
        names): an allocated address that another name already uses is refused.
        """
        mapping = self.lookup(name)
        if isinstance(mapping, NameConflict):
            return mapping
        if asked is not None and asked != mapping.service_id:
            return NameConflict(name, f"D-SID conflict: {name!r} maps to {mapping.service_id} "
                                f"(from {mapping.origin}), the registration names {asked}")
        holder = in_use.get(mapping.service_id)
        if holder is not None and holder != name:
            return NameConflict(name, f"D-SID conflict: {name!r} maps to {mapping.service_id} "
                                f"(from {mapping.origin}), which service {holder!r} already uses; "
                                f"give {name!r} its own D-SID in agent.api.names")
        return mapping

    def table(self) -> list[dict[str, str]]:
        """The fixed names (config and agent.api.names), for GET /v1/services."""
        return [{"name": m.name, "dsid": str(m.service_id), "origin": m.origin}
                for m in sorted(self._fixed.values(), key=lambda m: m.name)]
