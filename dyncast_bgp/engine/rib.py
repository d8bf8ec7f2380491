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

from collections.abc import Callable
from dataclasses import dataclass

from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    IPAddress,
    IPNetwork,
    PathMetrics,
    ServiceId,
    state_from_flags,
)
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES
from dyncast_bgp.wire.exabgp_json import EndOfRib, Event, PeerState, RouteUpdate, SessionState
from dyncast_bgp.wire.fastdecode import decode_raw
from dyncast_bgp.wire.metrics import DecodedMetrics

PathKey = tuple[str, str, int]
"""(peer, D-SID prefix, ADD-PATH path id), the addresses as canonical text (``str()`` of the
``ipaddress`` object): a tuple of strings hashes in C with the strings' cached hashes, where an
``ipaddress`` object hashes in Python (formatting a string each time)."""


_TEXT_CACHE_SIZE = 1 << 16
_texts: dict[int, tuple[IPAddress | IPNetwork, str]] = {}


def text_of(value: IPAddress | IPNetwork) -> str:
    """``str(value)``, memoised by identity: the parser hands out one object per distinct prefix or
    address text (its own memo), so the RIB meets the same few objects over and over. The entry holds
    the object, so its id cannot be reused while cached; an equal object that is not the cached one is
    merely formatted again, with the same result."""
    hit = _texts.get(id(value))
    if hit is not None and hit[0] is value:
        return hit[1]
    text = str(value)
    if len(_texts) >= _TEXT_CACHE_SIZE:
        _texts.clear()
    _texts[id(value)] = (value, text)
    return text


class Path:
    """One received path. Its metric communities are decoded on first use, not on receipt:
    most updates of a busy feed are replaced by the next one before any decision reads them.

    A re-announcement of the same (peer, prefix, path id) updates the path in place (next hop,
    communities, time; no longer stale): what :meth:`Rib.paths` returns is the RIB's live state.
    """

    __slots__ = ("_decoded", "key", "next_hop", "raw", "received_at", "service", "stale_since")

    def __init__(self, key: PathKey, service: ServiceId, next_hop: IPAddress, raw: tuple[bytes, ...],
                 received_at: float, *, stale_since: float | None = None) -> None:
        self.key = key
        self.service = service
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
        return InstanceKey(self.service, self.next_hop)


@dataclass(slots=True)
class RibCounters:
    announced: int = 0
    withdrawn: int = 0
    metric_problems: int = 0
    stale_marked: int = 0
    stale_removed: int = 0


class Rib:
    """Paths indexed by service and by peer, all keyed by text (see :data:`PathKey`); the ``ipaddress``
    objects and :class:`ServiceId` come back out at the edges (``candidates``, ``services``, ``apply``'s
    result), one ``ServiceId`` per prefix kept while the prefix has paths."""

    def __init__(self, *, stale_time: float = 0.0, metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> None:
        self.stale_time = stale_time
        self.metric_types = metric_types
        self.counters = RibCounters()
        self._paths: dict[PathKey, Path] = {}
        self._by_service: dict[str, set[PathKey]] = {}
        self._by_peer: dict[str, set[PathKey]] = {}
        self._services: dict[str, ServiceId] = {}  # prefix text -> its ServiceId, while it has paths
        self._stale_until: dict[str, float] = {}

    # ------------------------------------------------------------ updates

    def apply(self, event: Event, now: float) -> set[ServiceId]:
        """Apply one ExaBGP event; return the services whose paths changed."""
        if isinstance(event, RouteUpdate):
            return self._update(event, now)
        if isinstance(event, PeerState) and event.state is SessionState.DOWN:
            return self._peer_down(text_of(event.peer), now)
        if isinstance(event, EndOfRib):
            return self._end_of_rib(text_of(event.peer))
        return set()

    def _update(self, update: RouteUpdate, now: float) -> set[ServiceId]:
        changed: set[ServiceId] = set()
        peer = text_of(update.peer)
        for prefix, path_id in update.withdrawn:
            key = (peer, text_of(prefix), path_id)
            service = self._remove(key)
            if service is not None:
                self.counters.withdrawn += 1
                changed.add(service)
        paths, by_service, services = self._paths, self._by_service, self._services
        peer_keys = self._by_peer.get(peer)
        if peer_keys is None and update.announced:
            peer_keys = self._by_peer[peer] = set()
        for route in update.announced:
            prefix = route[0]  # Route fields by position (a NamedTuple): prefix, next hop, path id, ...
            hit = _texts.get(id(prefix))  # text_of(prefix), inline: one call fewer per route
            prefix_text = hit[1] if hit is not None and hit[0] is prefix else text_of(prefix)
            key = (peer, prefix_text, route[2])
            raw = route[8]
            path = paths.get(key)
            if path is not None:  # the usual case, a path replaced: updated in place, already indexed
                if path.raw != raw:  # same bytes: keep what was decoded
                    path.raw = raw
                    path._decoded = None
                path.next_hop = route[1]
                path.received_at = now
                path.stale_since = None
                changed.add(path.service)
                continue
            service = services.get(prefix_text)
            if service is None:
                service = services[prefix_text] = ServiceId(prefix)
                by_service[prefix_text] = set()
            paths[key] = Path(key, service, route[1], raw, now)
            by_service[prefix_text].add(key)
            peer_keys.add(key)  # type: ignore[union-attr]  # set above when anything is announced
            changed.add(service)
        self.counters.announced += len(update.announced)
        return changed

    def _remove(self, key: PathKey) -> ServiceId | None:
        """Remove one path; return its service (None if there was no such path)."""
        path = self._paths.pop(key, None)
        if path is None:
            return None
        peer, prefix, _ = key
        keys = self._by_service[prefix]
        keys.discard(key)
        if not keys:
            del self._by_service[prefix]
            del self._services[prefix]
        keys = self._by_peer[peer]
        keys.discard(key)
        if not keys:
            del self._by_peer[peer]
        return path.service

    def _peer_down(self, peer: str, now: float) -> set[ServiceId]:
        keys = list(self._by_peer.get(peer, ()))
        if self.stale_time <= 0:
            services = {self._paths[key].service for key in keys}
            for key in keys:
                self._remove(key)
            self.counters.withdrawn += len(keys)
            return services
        for key in keys:
            path = self._paths[key]
            if path.stale_since is None:
                path.stale_since = now
                self.counters.stale_marked += 1
        self._stale_until[peer] = now + self.stale_time
        return {self._paths[key].service for key in keys}

    def _end_of_rib(self, peer: str) -> set[ServiceId]:
        """After a restart the peer has re-sent everything: what is still stale is gone."""
        stale = [key for key in self._by_peer.get(peer, ()) if self._paths[key].stale_since is not None]
        services = {self._paths[key].service for key in stale}
        for key in stale:
            self._remove(key)
        self.counters.stale_removed += len(stale)
        self._stale_until.pop(peer, None)
        return services

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
        return sorted(self._services.values())

    def paths(self, service: ServiceId) -> list[Path]:
        return [self._paths[key] for key in self._by_service.get(text_of(service.prefix), ())]

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
        assert self._services.keys() == self._by_service.keys(), "service objects out of sync"
        for prefix, keys in self._by_service.items():
            assert all(key[1] == prefix for key in keys), f"path of another service filed under {prefix}"
            assert text_of(self._services[prefix].prefix) == prefix, f"service object of {prefix} differs"
        for peer, keys in self._by_peer.items():
            assert all(key[0] == peer for key in keys), f"path of another peer filed under {peer}"
        for key, path in self._paths.items():
            assert path.key == key, f"path filed under the wrong key: {key}"
            assert path.service is self._services[key[1]], f"path {key} holds a stale service object"


def _fresher(path: Path, other: Path) -> bool:
    """A live path beats a stale one; then the most recently received wins."""
    if (path.stale_since is None) != (other.stale_since is None):
        return path.stale_since is None
    return path.received_at > other.received_at
