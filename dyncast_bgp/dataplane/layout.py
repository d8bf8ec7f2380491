"""Names and numbers of every kernel object the dataplane owns (pure).

One *slot* (1..65535) is allocated per instance and kept for the instance's
lifetime, across weight changes and restarts (the slot is read back from the
kernel, see :mod:`dyncast_bgp.dataplane.readback`). Everything else derives
from the slot:

==================  ====================================  ==========================
object              value                                 default for slot 7
==================  ====================================  ==========================
packet / ct mark    ``mark_base | slot``                  ``0x44430007``
routing table       ``table_base + slot``                 ``1145241607``
``ip rule``         ``priority rule_priority fwmark M``   ``10001: fwmark 0x44430007``
==================  ====================================  ==========================

``0x4443`` is "DC". The mark range ``mark_base/0xffff0000`` is ours: flows
whose conntrack mark lies in it are steered flows; nothing else is touched.
Two guard rules per family make every other packet skip our per-instance
rules: ``rule_priority - 1: not fwmark mark_base/0xffff0000 goto
rule_priority + 1`` and ``rule_priority + 1: nop``.

Names are derived from what they stand for, so they need no allocation:
service chains ``dc_s_<prefix>`` (``203_0_113_10_32``, ``2001_db8__10_128``)
and tunnel devices ``dc<10 hex digits>`` (a hash of kind, endpoints and
underlay device).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from dyncast_bgp.model import IPAddress, ServiceId

SLOT_BITS = 16
MAX_SLOT = (1 << SLOT_BITS) - 1
MARK_MASK = 0xFFFF0000
META_SLOT = 0  # the registry element holding schema version and saved sysctls
SCHEMA = 1
TABLE_NAME = "dyncast"
FAMILY = "inet"
TUNNEL_PREFIX = "dc"
TUNNEL_HASH_DIGITS = 10


@dataclass(frozen=True, slots=True)
class Layout:
    """Where the dataplane's objects live; the defaults suit one dataplane per network namespace."""

    mark_base: int = 0x44430000
    table_base: int = 0x44430000
    rule_priority: int = 10001
    resolution: int = 10_000  # buckets per service: weights are split in 0.01 % steps
    affinity_size: int = 262_144  # client-affinity entries per address family
    nft_chunk: int = 200  # set elements per `add element` statement (netlink attribute limit)

    def __post_init__(self) -> None:
        if self.mark_base & ~MARK_MASK or not 0 < self.mark_base <= MARK_MASK:
            raise ValueError(f"mark_base {self.mark_base:#x} must be a non-zero multiple of 0x10000")
        if not 0 < self.table_base <= 0xFFFFFFFF - MAX_SLOT:
            raise ValueError(f"table_base {self.table_base} out of range")
        if not (self.rule_priority - 1 >= 1 and self.rule_priority + 1 < 32766):
            raise ValueError(f"rule_priority {self.rule_priority} must leave room below the main table (32766)")
        if not 2 <= self.resolution <= 1 << 24:
            raise ValueError("resolution must be between 2 and 2**24")
        if not 1 <= self.nft_chunk <= 1000:
            raise ValueError("nft_chunk must be between 1 and 1000")

    def mark(self, slot: int) -> int:
        return self.mark_base | slot

    def table(self, slot: int) -> int:
        return self.table_base + slot

    def slot_of_mark(self, mark: int) -> int | None:
        """The slot a mark stands for, or None when the mark is not ours."""
        if mark & MARK_MASK != self.mark_base:
            return None
        slot = mark & MAX_SLOT
        return slot if slot != META_SLOT else None

    def slot_of_table(self, table: int) -> int | None:
        slot = table - self.table_base
        return slot if 1 <= slot <= MAX_SLOT else None

    @property
    def guard_priority(self) -> int:
        return self.rule_priority - 1

    @property
    def end_priority(self) -> int:
        return self.rule_priority + 1


def prefix_token(service: ServiceId) -> str:
    """``203.0.113.10/32`` -> ``203_0_113_10_32``; ``2001:db8::10/128`` -> ``2001_db8__10_128``."""
    text = f"{service.prefix.network_address.compressed}_{service.prefix.prefixlen}"
    return text.replace(".", "_").replace(":", "_")


_TOKEN = str.maketrans("./:", "___")


def chain_name(label: str) -> str:
    """The chain of the service whose prefix prints as ``label`` (``str(ServiceId)``)."""
    return "dc_s_" + label.translate(_TOKEN)


def service_chain(service: ServiceId) -> str:
    return chain_name(str(service))


def is_service_chain(name: str) -> bool:
    return name.startswith("dc_s_")


def tunnel_name(kind: str, local: IPAddress | None, remote: IPAddress, device: str | None) -> str:
    """A stable interface name (<= 15 characters) for one tunnel."""
    digest = hashlib.sha256(f"{kind}|{local}|{remote}|{device or ''}".encode()).hexdigest()
    return f"{TUNNEL_PREFIX}{digest[:TUNNEL_HASH_DIGITS]}"


def is_tunnel_name(name: str) -> bool:
    body = name[len(TUNNEL_PREFIX):]
    return (name.startswith(TUNNEL_PREFIX) and len(body) == TUNNEL_HASH_DIGITS
            and all(c in "0123456789abcdef" for c in body))
