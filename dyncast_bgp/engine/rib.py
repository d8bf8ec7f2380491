"""The router's RIB: every path of every service, with its metrics and their age.

Keyed like BGP holds it: (peer, D-SID, ADD-PATH path id). The decision engine
sees *instances*, one per (D-SID, D-BID): when the same instance is learned
from several peers (two route reflectors), the freshest path speaks for it.

Peer down: with a stale-routes time (graceful restart, RFC 4724) the peer's
paths are kept, marked stale, until that time passes or the peer's End-of-RIB
after it comes back (then paths it did not re-announce go); without one they
are removed at once. Pure apart from time, which is passed in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    IPAddress,
    PathMetrics,
    ServiceId,
    state_from_flags,
)
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES
from dyncast_bgp.wire.exabgp_json import EndOfRib, Event, PeerState, Route, RouteUpdate, SessionState
from dyncast_bgp.wire.fastdecode import decode_raw
from dyncast_bgp.wire.metrics import DecodedMetrics


class PathKey:
    """(peer, D-SID, path id), immutable, with its hash computed once.

    A path key is hashed several times per update (path table and two indexes),
    and hashing an ``ipaddress`` object formats a string each time.
    """

    __slots__ = ("_hash", "path_id", "peer", "service")

    def __init__(self, peer: IPAddress, service: ServiceId, path_id: int) -> None:
        self.peer = peer
        self.service = service
        self.path_id = path_id
        self._hash = hash((peer, service.prefix, path_id))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PathKey):
            return NotImplemented
        return (self._hash == other._hash and self.path_id == other.path_id and self.peer == other.peer
                and self.service == other.service)

    def __repr__(self) -> str:
        return f"PathKey({self.peer}, {self.service}, {self.path_id})"


class Path:
    """One received path. Its metric communities are decoded on first use, not on receipt:
    most updates of a busy feed are replaced by the next one before any decision reads them."""

    __slots__ = ("_decoded", "key", "next_hop", "raw", "received_at", "stale_since")

    def __init__(self, key: PathKey, next_hop: IPAddress, raw: tuple[bytes, ...], received_at: float,
                 stale_since: float | None = None) -> None:
        self.key = key
        self.next_hop = next_hop
        self.raw = raw
        self.received_at = received_at
        self.stale_since = stale_since
        self._decoded: DecodedMetrics | None = None

    def decoded(self, counters: RibCounters | None = None,
                metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> DecodedMetrics:
        if self._decoded is None:
            self._decoded = decode_raw(self.raw, metric_types=metric_types)
            if counters is not None:
                counters.metric_problems += len(self._decoded.problems)
        return self._decoded

    @property
    def metrics(self) -> ComputeMetrics:
        return self.decoded().metrics

    @property
    def problems(self) -> tuple[str, ...]:
        return self.decoded().problems

    @property
    def instance(self) -> InstanceKey:
        return InstanceKey(self.key.service, self.next_hop)


@dataclass(slots=True)
class RibCounters:
    announced: int = 0
    withdrawn: int = 0
    metric_problems: int = 0
    stale_marked: int = 0
    stale_removed: int = 0


class Rib:
    def __init__(self, *, stale_time: float = 0.0, metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> None:
        self.stale_time = stale_time
        self.metric_types = metric_types
        self.counters = RibCounters()
        self._paths: dict[PathKey, Path] = {}
        self._by_service: dict[ServiceId, set[PathKey]] = defaultdict(set)
        self._by_peer: dict[IPAddress, set[PathKey]] = defaultdict(set)
        self._stale_until: dict[IPAddress, float] = {}

    # ------------------------------------------------------------ updates

    def apply(self, event: Event, now: float) -> set[ServiceId]:
        """Apply one ExaBGP event; return the services whose paths changed."""
        if isinstance(event, RouteUpdate):
            return self._update(event, now)
        if isinstance(event, PeerState) and event.state is SessionState.DOWN:
            return self._peer_down(event.peer, now)
        if isinstance(event, EndOfRib):
            return self._end_of_rib(event.peer)
        return set()

    def _update(self, update: RouteUpdate, now: float) -> set[ServiceId]:
        changed: set[ServiceId] = set()
        for key in update.withdrawn:
            path_key = PathKey(update.peer, ServiceId(key.prefix), key.path_id)
            if self._remove(path_key):
                self.counters.withdrawn += 1
                changed.add(path_key.service)
        for route in update.announced:
            changed.add(self._announce(update.peer, route, now))
        return changed

    def _announce(self, peer: IPAddress, route: Route, now: float) -> ServiceId:
        key = PathKey(peer, ServiceId(route.prefix), route.path_id)
        path = Path(key, route.next_hop, route.ext_communities, now)
        previous = self._paths.get(key)
        if previous is not None and previous.raw == route.ext_communities:  # same bytes: keep what was decoded
            path._decoded = previous._decoded
        self._paths[key] = path
        self._by_service[key.service].add(key)
        self._by_peer[peer].add(key)
        self.counters.announced += 1
        return key.service

    def _remove(self, key: PathKey) -> bool:
        if self._paths.pop(key, None) is None:
            return False
        self._by_service[key.service].discard(key)
        if not self._by_service[key.service]:
            del self._by_service[key.service]
        self._by_peer[key.peer].discard(key)
        if not self._by_peer[key.peer]:
            del self._by_peer[key.peer]
        return True

    def _peer_down(self, peer: IPAddress, now: float) -> set[ServiceId]:
        keys = list(self._by_peer.get(peer, ()))
        if self.stale_time <= 0:
            for key in keys:
                self._remove(key)
            self.counters.withdrawn += len(keys)
            return {key.service for key in keys}
        for key in keys:
            path = self._paths[key]
            if path.stale_since is None:
                path.stale_since = now
                self.counters.stale_marked += 1
        self._stale_until[peer] = now + self.stale_time
        return {key.service for key in keys}

    def _end_of_rib(self, peer: IPAddress) -> set[ServiceId]:
        """After a restart the peer has re-sent everything: what is still stale is gone."""
        stale = [key for key in self._by_peer.get(peer, ()) if self._paths[key].stale_since is not None]
        for key in stale:
            self._remove(key)
        self.counters.stale_removed += len(stale)
        self._stale_until.pop(peer, None)
        return {key.service for key in stale}

    def expire(self, now: float) -> set[ServiceId]:
        """Remove stale paths whose peer did not come back in time."""
        changed: set[ServiceId] = set()
        for peer, until in list(self._stale_until.items()):
            if now < until:
                continue
            changed |= self._end_of_rib(peer)
        return changed

    def next_expiry(self) -> float | None:
        return min(self._stale_until.values(), default=None)

    # ------------------------------------------------------------ reads

    def services(self) -> list[ServiceId]:
        return sorted(self._by_service)

    def paths(self, service: ServiceId) -> list[Path]:
        return [self._paths[key] for key in self._by_service.get(service, ())]

    def __len__(self) -> int:
        return len(self._paths)

    def candidates(self, service: ServiceId, now: float, *, path_of: Callable[[IPAddress], PathMetrics],
                   max_age: float | None = None) -> list[Candidate]:
        """One candidate per D-BID: the freshest path's metrics (unknown when older than ``max_age``)."""
        chosen: dict[IPAddress, Path] = {}
        for path in self.paths(service):
            best = chosen.get(path.next_hop)
            if best is None or _fresher(path, best):
                chosen[path.next_hop] = path
        result = []
        for next_hop, path in sorted(chosen.items(), key=lambda item: (item[0].version, int(item[0]))):
            age = now - path.received_at
            metrics = path.decoded(self.counters, self.metric_types).metrics
            if max_age is not None and age > max_age:
                metrics = ComputeMetrics(flags=path.metrics.flags, version=path.metrics.version)
            state = state_from_flags(metrics.flags)
            result.append(Candidate(key=InstanceKey(service, next_hop), state=state, metrics=metrics,
                                    path=path_of(next_hop), metrics_age=age))
        return result

    def check_invariants(self) -> None:
        """Raise AssertionError if the indexes disagree with the paths (for tests and fuzzing)."""
        by_service = {key for keys in self._by_service.values() for key in keys}
        by_peer = {key for keys in self._by_peer.values() for key in keys}
        assert by_service == set(self._paths) == by_peer, "RIB indexes out of sync"
        assert all(keys for keys in self._by_service.values()), "empty service index kept"
        assert all(keys for keys in self._by_peer.values()), "empty peer index kept"
        for key, path in self._paths.items():
            assert path.key == key, f"path filed under the wrong key: {key}"


def _fresher(path: Path, other: Path) -> bool:
    """A live path beats a stale one; then the most recently received wins."""
    if (path.stale_since is None) != (other.stale_since is None):
        return path.stale_since is None
    return path.received_at > other.received_at
