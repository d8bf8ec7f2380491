"""The interop lab: one LAN with a BGP receiver of every kind and slots for speakers.

Any speaker (the scripted announcer, the agent) takes a slot and peers with
every receiver; the receivers are configured for all slots and are passive,
so speakers can come and go. Addressing (LAN ``10.0.0.0/24`` and ``fd00::/64``):

========== ============================ ======= ==============================
address    node                         AS      role
========== ============================ ======= ==============================
.2  / ::2  ``exabgp``: ExaBGP JSON sink  65002   eBGP receiver, ADD-PATH rx
.3  / ::3  ``frr``: FRR bgpd + zebra     65000   iBGP route reflector
.4  / ::4  ``rr-client``: ExaBGP sink    65000   RR client, ADD-PATH rx; FRR
                                                 sends it all paths (tx-all)
.5  / ::5  ``bird``: BIRD 2              65005   eBGP receiver, ADD-PATH rx
.6  / ::6  ``gobgp``: gobgpd             65006   eBGP receiver, ADD-PATH rx
.11+i      speaker slot i               65000   iBGP to the RR (non-client),
                                                 eBGP to the others; active
.101+i     instance i (D-BID)           -       on-link next hops
========== ============================ ======= ==============================

Every session runs over IPv4 and carries ``ipv4 unicast`` and ``ipv6
unicast``. Instance addresses are on the LAN subnet, so every receiver
resolves them as connected (FRR marks unresolvable next hops invalid and
will not reflect them; BIRD's eBGP treats them as withdrawn); no node needs
to own them. FRR does not show the values of unknown extended communities,
so values are checked at its client, an ExaBGP JSON receiver.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer, wait_established
from dyncast_bgp.lab.daemons.bird import Bird
from dyncast_bgp.lab.daemons.exabgp import ApiProcess, ExaBgp
from dyncast_bgp.lab.daemons.frr import Frr
from dyncast_bgp.lab.daemons.gobgp import GoBgp
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.netns import Lab, LanPort, Namespace
from dyncast_bgp.lab.rib import Family

LAN4 = ipaddress.IPv4Network("10.0.0.0/24")
LAN6 = ipaddress.IPv6Network("fd00::/64")
SPEAKER_AS = 65000
RECEIVERS = ("exabgp", "frr", "bird", "gobgp")
_HOSTS = {"exabgp": 2, "frr": 3, "rr-client": 4, "bird": 5, "gobgp": 6}
_ASNS = {"exabgp": 65002, "frr": SPEAKER_AS, "rr-client": SPEAKER_AS, "bird": 65005, "gobgp": 65006}
_KINDS: dict[str, type[Daemon]] = {"exabgp": ExaBgp, "frr": Frr, "bird": Bird, "gobgp": GoBgp}
_FIRST_SPEAKER = 11
_FIRST_INSTANCE = 101


def host(index: int, family: Family) -> str:
    """The LAN address ``.index`` / ``::index`` (``::`` + the decimal digits, e.g. ``fd00::101``)."""
    if family == "ipv4":
        return str(LAN4.network_address + index)
    return str(ipaddress.IPv6Address(f"{LAN6.network_address}{index}"))


def instance_address(index: int, family: Family) -> str:
    """D-BID of instance ``index`` (0-based): ``10.0.0.101`` / ``fd00::101`` and up."""
    return host(_FIRST_INSTANCE + index, family)


def _local(role: str, index: int) -> Local:
    return Local(asn=_ASNS.get(role, SPEAKER_AS), router_id=host(index, "ipv4"),
                 addresses=(host(index, "ipv4"), host(index, "ipv6")))


def missing_binaries(receivers: Collection[str] = RECEIVERS) -> dict[str, list[str]]:
    """Receiver -> binaries it needs that are not installed (empty when all are there)."""
    needs = {name: _KINDS[name].missing_binaries() + (ExaBgp.missing_binaries() if name == "frr" else [])
             for name in receivers}
    return {name: missing for name, missing in needs.items() if missing}


@dataclass(frozen=True, slots=True)
class SpeakerSlot:
    """Where a speaker lives and the peers its configuration must have (one per receiver)."""

    index: int
    namespace: Namespace
    local: Local
    peers: tuple[Peer, ...]


class InteropLab:
    """Builds the namespaces, LAN and receiver daemons; speakers are started by the caller."""

    def __init__(self, lab: Lab, *, speakers: int = 1, receivers: Collection[str] = RECEIVERS) -> None:
        unknown = set(receivers) - set(RECEIVERS)
        if unknown or speakers < 1:
            raise LabError(f"receivers must be among {RECEIVERS} (got {sorted(unknown)}), speakers >= 1")
        self.lab = lab
        self.receiver_names = tuple(name for name in RECEIVERS if name in receivers)
        roles = [*self.receiver_names, *(["rr-client"] if "frr" in receivers else [])]
        speaker_roles = [f"speaker{i}" for i in range(speakers)]
        namespaces = dict(zip([*roles, *speaker_roles], lab.namespaces(*roles, *speaker_roles), strict=True))
        indices = {**{role: _HOSTS[role] for role in roles},
                   **{role: _FIRST_SPEAKER + i for i, role in enumerate(speaker_roles)}}
        self.lan = lab.lan("lan", [LanPort(namespaces[role], (f"{host(indices[role], 'ipv4')}/24",
                                                              f"{host(indices[role], 'ipv6')}/64"))
                                   for role in namespaces])
        speaker_hosts = [host(indices[role], "ipv4") for role in speaker_roles]
        self.daemons: dict[str, Daemon] = {role: self._receiver(role, namespaces[role], speaker_hosts)
                                           for role in roles}
        self._speaker_daemons: dict[int, ExaBgp] = {}
        self.speakers = tuple(SpeakerSlot(i, namespaces[role], _local(role, indices[role]),
                                          tuple(self._speaker_peer(name) for name in self.receiver_names))
                              for i, role in enumerate(speaker_roles))

    def _receiver(self, role: str, namespace: Namespace, speakers: Sequence[str]) -> Daemon:
        local = _local(role, _HOSTS[role])
        from_speakers = [Peer(address, SPEAKER_AS, passive=True, export_routes=False, description=f"speaker{i}")
                         for i, address in enumerate(speakers)]
        if role == "frr":
            client = Peer(host(_HOSTS["rr-client"], "ipv4"), SPEAKER_AS, passive=True, rr_client=True,
                          add_path_send=True, description="rr-client")
            return Frr(self.lab, namespace, name=role, local=local, peers=[*from_speakers, client])
        if role == "rr-client":
            return ExaBgp(self.lab, namespace, name=role, local=local,
                          peers=[Peer(host(_HOSTS["frr"], "ipv4"), SPEAKER_AS, description="frr")])
        return _KINDS[role](self.lab, namespace, name=role, local=local, peers=from_speakers)

    @staticmethod
    def _speaker_peer(receiver: str) -> Peer:
        return Peer(host(_HOSTS[receiver], "ipv4"), _ASNS[receiver], add_path_send=True, add_path_receive=False,
                    description=receiver)

    @property
    def rr_client(self) -> ExaBgp:
        client = self.daemons.get("rr-client")
        if not isinstance(client, ExaBgp):
            raise LabError("this interop lab has no FRR route reflector (and so no RR client)")
        return client

    def value_view(self, receiver: str) -> Daemon:
        """The daemon whose RIB shows ``receiver``'s extended-community values: the RR client for FRR."""
        if receiver not in self.receiver_names:
            raise LabError(f"receiver {receiver!r} is not in this lab (have {self.receiver_names})")
        return self.rr_client if receiver == "frr" else self.daemons[receiver]

    def start_receivers(self) -> None:
        """Spawn every receiver (in parallel: nothing here waits for a session)."""
        for daemon in self.daemons.values():
            daemon.start()

    def exabgp_speaker(self, slot: int = 0, *, processes: Sequence[ApiProcess] = (), name: str = "",
                       extra_env: dict[str, str] | None = None) -> ExaBgp:
        """An ExaBGP speaker for ``slot`` (not started) running ``processes`` (the announcer, the agent)."""
        spec = self.speakers[slot]
        speaker = ExaBgp(self.lab, spec.namespace, name=name or f"speaker{slot}", local=spec.local,
                         peers=spec.peers, processes=processes, receive_updates=False, extra_env=extra_env)
        self._speaker_daemons[slot] = speaker
        return speaker

    def sessions(self, slot: int = 0) -> list[tuple[Daemon, str]]:
        """The (daemon, peer) sessions that must be up for ``slot``: each receiver's, the RR client's,
        and the slot's speaker's own if it was made by :meth:`exabgp_speaker`."""
        address = self.speakers[slot].local.addresses[0]
        pairs: list[tuple[Daemon, str]] = [(self.daemons[name], address) for name in self.receiver_names]
        speaker = self._speaker_daemons.get(slot)
        if speaker is not None:  # its own view too, so a failure shows the speaker's log
            pairs += [(speaker, peer.address) for peer in self.speakers[slot].peers]
        if "rr-client" in self.daemons:
            pairs.append((self.daemons["rr-client"], host(_HOSTS["frr"], "ipv4")))
        return pairs

    def wait_established(self, slots: Sequence[int] = (0,), *, timeout: float = 30.0) -> None:
        pairs = [pair for slot in slots for pair in self.sessions(slot)]
        wait_established(list(dict.fromkeys(pairs)), timeout=timeout)
