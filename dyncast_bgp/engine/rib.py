"""The router's RIB: every path of every service, with its metrics and their age.

Keyed like BGP holds it: (peer, D-SID, ADD-PATH path id). The decision engine
sees *instances*, one per (D-SID, D-BID): when the same instance is learned
from several peers (two route reflectors), the freshest path speaks for it.

Intake is checked against the neighbours' trust rules and the metrics are
screened (:mod:`~dyncast_bgp.engine.trust`): a refused announcement never
enters; every refusal and discarded metric set is counted by reason and kept
(bounded) for the router to log (:meth:`Rib.take_rejections`).

Peer down: with a stale-routes time (graceful restart, RFC 4724) the peer's
paths are kept, marked stale, until that time passes or the peer's End-of-RIB
after it comes back (then paths it did not re-announce go); without one they
are removed at once. An instance that vanishes in a peer's restart (its stale
path flushed at the peer's End-of-RIB or expiry, or its stale path id re-announced
for another D-BID, as a route reflector numbering its ADD-PATH ids afresh does)
is tagged as the session's doing in :attr:`Rib.transitions`: flap dampening does
not count it against the instance. Pure apart from time, which is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dyncast_bgp.engine.candidate import Candidate, Ident
from dyncast_bgp.engine.columns import LOSS, REACHABLE, RTT, idents_of, is_plain, optional_column
from dyncast_bgp.engine.eligibility import TIER_HELD, Exclusion
from dyncast_bgp.engine.rows import NAMES, CandidateRows, RowBatch
from dyncast_bgp.engine.trust import (
    MAX_INSTANCES,
    MAX_PREFIXES,
    METRIC_INVALID,
    METRICS_IMPLAUSIBLE,
    Rejection,
    TrustPolicy,
    describe_refusal,
    may_change,
    neutral,
    pass_as_announced,
    passes_as_announced,
    refusal,
    screen,
)
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    InstanceState,
    IPAddress,
    IPNetwork,
    PathMetrics,
    ServiceId,
    by_order,
    by_sort_key,
    state_from_flags,
)
from dyncast_bgp.wire.columnar import decode_columns
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES
from dyncast_bgp.wire.exabgp_json import EndOfRib, Event, PeerState, Route, RouteUpdate, SessionState, version_of
from dyncast_bgp.wire.fastdecode import decode_quick, decode_raw
from dyncast_bgp.wire.metrics import DecodedMetrics

IMPLAUSIBLE = Exclusion("metrics rejected: implausible values", tier=TIER_HELD)

PENDING_REJECTIONS = 1000
"""Rejections kept for the log until taken; beyond that they are only counted."""

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
    Only the screened metrics are kept (``_used``), not the decoder's whole result: one object
    fewer per path for the garbage collector to walk (160,000 at the benchmark's scale).

    A re-announcement of the same (peer, prefix, path id) updates the path in place (next hop,
    communities, time; no longer stale): what :meth:`Rib.paths` returns is the RIB's live state.
    """

    __slots__ = ("_held", "_instance", "_state", "_used", "key", "next_hop", "raw", "received_at",
                 "service", "stale_since")

    def __init__(self, key: PathKey, service: ServiceId, next_hop: IPAddress, raw: bytes,
                 received_at: float, *, stale_since: float | None = None) -> None:
        self.key = key
        self.service = service
        self.next_hop = next_hop
        self.raw = raw
        self.received_at = received_at
        self.stale_since = stale_since
        self._used: ComputeMetrics | None = None  # the screened metrics (engine.trust), set by the RIB
        self._held: Exclusion | None = None  # set with _used: the route's metrics were rejected as implausible
        self._state = InstanceState.ACTIVE  # set with _used: the state its flags announce
        self._instance: InstanceKey | None = None  # made on first read, again when the next hop changed

    def decoded(self, metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> DecodedMetrics:
        """The path's communities decoded (again: pure, and only the screened metrics are kept)."""
        return decode_raw(self.raw, metric_types=metric_types)

    @property
    def metrics(self) -> ComputeMetrics:
        return self.decoded().metrics

    @property
    def problems(self) -> tuple[str, ...]:
        return self.decoded().problems

    @property
    def instance(self) -> InstanceKey:
        """The instance this path reaches: one key object while the next hop stays (its hash and order are
        computed once, see :class:`~dyncast_bgp.model.InstanceKey`)."""
        instance = self._instance
        if instance is None or instance.binding is not self.next_hop:
            instance = self._instance = InstanceKey(self.service, self.next_hop)
        return instance


@dataclass(slots=True, eq=False)
class _Table:
    """One service's instances as the RIB picks them: the keys in canonical order, the path chosen for each,
    their :data:`~dyncast_bgp.engine.candidate.Ident` and D-BIDs. Kept (:attr:`Rib._tables`) while the
    service has one path per instance and none comes, goes or changes next hop: then a re-announcement
    changes what the paths carry, never the table."""

    keys: list[InstanceKey]
    paths: list[Path]
    idents: list[Ident]
    in_order: bool
    """The idents increase (no two keys alike), as the batch decision requires (always, for the RIB's keys)."""
    bindings: tuple[IPAddress, ...]
    binding_ids: npt.NDArray[np.int64]
    """``id`` of each of :attr:`bindings`: the table holds the objects, so each id names its binding while the
    table lives. A batch finds its distinct D-BIDs from these (ints, in C) without hashing an address."""


_RAW = attrgetter("raw")
_RECEIVED = attrgetter("received_at")


@dataclass(slots=True)
class RibCounters:
    announced: int = 0
    withdrawn: int = 0
    metric_problems: int = 0
    stale_marked: int = 0
    stale_removed: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    """Rejections by reason (:data:`~dyncast_bgp.engine.trust.REASONS`)."""


class Transition(NamedTuple):
    """An instance that appeared (``present``) or vanished. ``session`` (vanishings only): a peer's restart made
    it vanish, not the instance's own announcements: its stale path flushed at the peer's End-of-RIB or at the
    stale time's expiry, or its stale path's id re-announced for another D-BID (a restarted route reflector
    numbering its ADD-PATH ids afresh; the instance's own path usually follows in a later UPDATE of the same
    refresh). As in BGP's graceful restart itself, a restart whose routes were retained is not route churn."""

    service: ServiceId
    binding: IPAddress
    present: bool
    session: bool


class Rib:
    """Paths indexed by service and by peer, all keyed by text (see :data:`PathKey`); the ``ipaddress``
    objects and :class:`ServiceId` come back out at the edges (``candidates``, ``services``, ``apply``'s
    result), one ``ServiceId`` per prefix kept while the prefix has paths."""

    def __init__(self, *, stale_time: float = 0.0, metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES,
                 trust: TrustPolicy | None = None, track_instances: bool = False) -> None:
        """``trust``: the neighbours' rules (None: trust everyone, as before). ``track_instances``: record
        every instance that appears or vanishes in :attr:`transitions` (for flap dampening; the caller
        takes them with :meth:`take_transitions`)."""
        self.stale_time = stale_time
        self.metric_types = metric_types
        self.counters = RibCounters()
        self.trust = trust if trust is not None else TrustPolicy()
        self._admission = self.trust if self.trust.limits_announcements else None
        self._pending: list[Rejection] = []
        self._peer_prefixes: dict[str, dict[str, int]] = {}  # peers with max_prefixes: D-SID -> paths
        self._track = track_instances
        self._instances: dict[tuple[str, IPAddress], int] = {}  # (D-SID, D-BID) -> paths, when tracking
        self.transitions: list[Transition] = []
        self._paths: dict[PathKey, Path] = {}
        self._by_service: dict[str, set[PathKey]] = {}
        self._by_peer: dict[str, set[PathKey]] = {}
        self._services: dict[str, ServiceId] = {}  # prefix text -> its ServiceId, while it has paths
        self._stale_until: dict[str, float] = {}
        self._tables: dict[str, _Table] = {}  # prefix text -> its table, while it holds (see _Table)

    # ------------------------------------------------------------ updates

    def apply(self, event: Event, now: float) -> set[ServiceId]:
        """Apply one ExaBGP event; return the services whose paths changed."""
        if isinstance(event, RouteUpdate):
            return self._update(event, now)
        if isinstance(event, PeerState) and event.state is SessionState.DOWN:
            return self._peer_down(text_of(event.peer), now)
        if isinstance(event, EndOfRib):
            return self._end_of_rib(text_of(event.peer), version_of(event.family))
        return set()

    def _update(self, update: RouteUpdate, now: float) -> set[ServiceId]:
        peer_address, announced, withdrawn = update
        hit = _texts.get(id(peer_address))  # text_of, inline (as for each prefix below): a call fewer
        peer = hit[1] if hit is not None and hit[0] is peer_address else text_of(peer_address)
        changed: set[ServiceId] = set()
        for prefix, path_id in withdrawn:
            service = self._remove((peer, text_of(prefix), path_id))
            if service is not None:
                self.counters.withdrawn += 1
                changed.add(service)
        if not announced:
            return changed
        routes: Sequence[Route] = announced if self._admission is None else self._admit(peer, announced, changed)
        paths = self._paths
        for route in routes:
            prefix = route[0]  # Route fields by position (a NamedTuple): prefix, next hop, path id, ...
            hit = _texts.get(id(prefix))
            prefix_text = hit[1] if hit is not None and hit[0] is prefix else text_of(prefix)
            key = (peer, prefix_text, route[2])
            path = paths.get(key)
            if path is None:
                changed.add(self._insert(key, route, now))
                continue
            # the usual case, a path replaced: updated in place, already indexed
            raw = route[8]
            if path.raw != raw:  # same bytes: keep what was decoded
                path.raw = raw
                path._used = None
                path._held = None
            next_hop = route[1]
            if path.next_hop is not next_hop:
                self._tables.pop(prefix_text, None)
                if self._track and path.next_hop != next_hop:
                    self._count(prefix_text, path.service, path.next_hop, -1,
                                session=path.stale_since is not None)  # a restarted peer renumbering its ids
                    self._count(prefix_text, path.service, next_hop, +1)
                path.next_hop = next_hop
            path.received_at = now
            path.stale_since = None
            changed.add(path.service)
        self.counters.announced += len(routes)
        return changed

    def _insert(self, key: PathKey, route: Route, now: float) -> ServiceId:
        """A new path: filed under its service (created with its first path) and its peer."""
        peer, prefix_text, _ = key
        self._tables.pop(prefix_text, None)
        service = self._services.get(prefix_text)
        if service is None:
            service = self._services[prefix_text] = ServiceId(route[0])
            self._by_service[prefix_text] = {key}
        else:
            self._by_service[prefix_text].add(key)
        peer_keys = self._by_peer.get(peer)
        if peer_keys is None:
            self._by_peer[peer] = {key}
        else:
            peer_keys.add(key)
        self._paths[key] = Path(key, service, route[1], route[8], now)
        if self._track:
            self._count(prefix_text, service, route[1], +1)
        return service

    def _admit(self, peer: str, routes: Sequence[Route], changed: set[ServiceId]) -> Sequence[Route]:
        """The routes the peer's trust rule lets in; a refused one replacing a held path removes it."""
        rule = self.trust.rule_for(peer)
        if not rule.limits_announcements:
            return routes
        held = len(self._by_peer.get(peer, ()))
        prefixes = self._peer_prefixes.setdefault(peer, {}) if rule.max_prefixes is not None else None
        admitted: list[Route] = []
        new_keys: set[PathKey] = set()
        for route in routes:
            prefix, next_hop = route[0], route[1]
            prefix_text = text_of(prefix)
            key = (peer, prefix_text, route[2])
            new = key not in self._paths and key not in new_keys
            reason = refusal(rule, prefix, next_hop)
            if reason is None and new:
                if rule.max_instances is not None and held >= rule.max_instances:
                    reason = MAX_INSTANCES
                elif (prefixes is not None and prefix_text not in prefixes
                      and len(prefixes) >= rule.max_prefixes):  # type: ignore[operator]  # set with prefixes
                    reason = MAX_PREFIXES
            if reason is not None:
                self.reject(Rejection(reason, peer, prefix_text, text_of(next_hop), describe_refusal(reason, rule),
                                      rule.label))
                if not new and key in self._paths:  # treat-as-withdraw: the old path must not stand for it
                    service = self._remove(key)
                    if service is not None:
                        changed.add(service)
                        self.counters.withdrawn += 1
                continue
            if new:
                new_keys.add(key)
                held += 1
                if prefixes is not None:
                    prefixes[prefix_text] = prefixes.get(prefix_text, 0) + 1
            admitted.append(route)
        return admitted

    def _count(self, prefix: str, service: ServiceId, next_hop: IPAddress, delta: int, *,
               session: bool = False) -> None:
        """Paths per instance; an instance going from none to some (or back) is a transition (``session``: see
        :class:`Transition`)."""
        key = (prefix, next_hop)
        count = self._instances.get(key, 0) + delta
        if count > 0:
            self._instances[key] = count
        else:
            self._instances.pop(key, None)
        if count == (1 if delta > 0 else 0):
            self.transitions.append(Transition(service, next_hop, delta > 0, session))

    def take_transitions(self) -> list[Transition]:
        """The instances that appeared (True) or vanished (False) since the last call, in order."""
        taken, self.transitions = self.transitions, []
        return taken

    def reject(self, rejection: Rejection) -> None:
        """Count a rejection and keep it for the log (up to :data:`PENDING_REJECTIONS`)."""
        counts = self.counters.rejected
        counts[rejection.reason] = counts.get(rejection.reason, 0) + 1
        if len(self._pending) < PENDING_REJECTIONS:
            self._pending.append(rejection)

    def take_rejections(self) -> list[Rejection]:
        """The rejections since the last call (at most :data:`PENDING_REJECTIONS`), in order."""
        taken, self._pending = self._pending, []
        return taken

    def _remove(self, key: PathKey, *, session: bool = False) -> ServiceId | None:
        """Remove one path; return its service (None if there was no such path). ``session``: its peer's restart
        removes it (see :class:`Transition`)."""
        path = self._paths.pop(key, None)
        if path is None:
            return None
        peer, prefix, _ = key
        self._tables.pop(prefix, None)
        keys = self._by_service[prefix]
        keys.discard(key)
        if not keys:
            del self._by_service[prefix]
            del self._services[prefix]
        keys = self._by_peer[peer]
        keys.discard(key)
        if not keys:
            del self._by_peer[peer]
        if self._peer_prefixes:
            held = self._peer_prefixes.get(peer)
            if held is not None and prefix in held:
                held[prefix] -= 1
                if not held[prefix]:
                    del held[prefix]
        if self._track:
            self._count(prefix, path.service, path.next_hop, -1, session=session)
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

    def _end_of_rib(self, peer: str, version: int | None = None) -> set[ServiceId]:
        """After a restart the peer has re-sent everything of one family (IP ``version``; None: every family, at
        the stale time's expiry): what of it is still stale is gone. Another family's stale paths wait for its
        own End-of-RIB (a dual-stack peer's IPv4 marker before its IPv6 routes must not flush them)."""
        paths = self._paths
        stale = [key for key in self._by_peer.get(peer, ()) if paths[key].stale_since is not None]
        flushed = stale if version is None else [key for key in stale if paths[key].service.prefix.version == version]
        services = {paths[key].service for key in flushed}
        for key in flushed:
            self._remove(key, session=True)  # flushed by the peer's session, not withdrawn by the instance
        self.counters.stale_removed += len(flushed)
        if len(flushed) == len(stale):  # else the other family's stale paths still expire in time
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
        return sorted(self._services.values(), key=by_order)  # the int key compares in C

    def paths(self, service: ServiceId) -> list[Path]:
        return [self._paths[key] for key in self._by_service.get(text_of(service.prefix), ())]

    def path_count(self, service: ServiceId) -> int:
        """``len(self.paths(service))`` without the list."""
        return len(self._by_service.get(text_of(service.prefix), ()))

    def __len__(self) -> int:
        return len(self._paths)

    def candidates(self, service: ServiceId, now: float, *, path_of: Callable[[IPAddress], PathMetrics],
                   max_age: float | None = None) -> list[Candidate]:
        """One candidate per D-BID, in canonical order: the freshest path's metrics (unknown when older than
        ``max_age``)."""
        table = self._table(service)
        candidate = self._candidate
        return [candidate(instance, path, now, path_of, max_age) for instance, path in
                zip(table.keys, table.paths, strict=True)]

    def _candidate(self, instance: InstanceKey, path: Path, now: float, path_of: Callable[[IPAddress], PathMetrics],
                   max_age: float | None) -> Candidate:
        age = now - path.received_at
        metrics = path._used if path._used is not None else self._screen(path)
        if max_age is not None and age > max_age:
            metrics = neutral(metrics)
        return Candidate(instance, path._state, metrics, path_of(instance.binding), age, None, path._held)

    def _table(self, service: ServiceId) -> _Table:
        """The service's instances, each with its freshest path (kept while that cannot change: see _Table)."""
        prefix = text_of(service.prefix)
        table = self._tables.get(prefix)
        if table is not None:
            return table
        paths = self._paths
        chosen: dict[InstanceKey, Path] = {}
        several = False
        for key in self._by_service.get(prefix, ()):
            path = paths[key]
            instance = path.instance
            best = chosen.get(instance)
            if best is None:
                chosen[instance] = path
            else:
                several = True  # which path is freshest may change with the next update: not kept
                if _fresher(path, best):
                    chosen[instance] = path
        keys = sorted(chosen, key=by_sort_key)
        idents, increasing = idents_of(keys)
        bindings = tuple([key.binding for key in keys])
        table = _Table(keys, [chosen[key] for key in keys], idents, bool(increasing.all()), bindings,
                       np.fromiter(map(id, bindings), np.int64, len(bindings)))
        if not several and prefix in self._services:
            self._tables[prefix] = table
        return table

    def rows(self, services: Sequence[ServiceId], now: float, *, path_of: Callable[[IPAddress], PathMetrics],
             max_age: float | None = None) -> list[CandidateRows]:
        """:meth:`candidates` of every service of ``services`` (in order), as rows of one
        :class:`~dyncast_bgp.engine.rows.RowBatch`: their metric communities decoded as columns, a candidate
        made only when read. A path the columns cannot read, or whose metrics its peer's rule would change,
        is screened one by one as :meth:`candidates` screens it (its problems and findings reported alike)."""
        tables = [self._table(service) for service in services]
        keys: list[InstanceKey] = list(chain.from_iterable([table.keys for table in tables]))
        paths: list[Path] = list(chain.from_iterable([table.paths for table in tables]))
        size = len(paths)
        raws: list[bytes] = list(map(_RAW, paths))
        ages = now - np.fromiter(map(_RECEIVED, paths), np.float64, size)
        expired = ages > max_age if max_age is not None else np.zeros(size, np.bool_)
        decoded = decode_columns(raws, metric_types=self.metric_types)
        passed = decoded.read & pass_as_announced(decoded.values, size, self._changing(paths))
        found = decoded.values  # columns made for this batch: completed in place below
        metrics = {name: found[name] if name in found else np.full(size, np.nan) for name in NAMES}
        flags = decoded.flags
        plain = flags == 0
        eager: dict[int, Candidate] = {}
        for row in np.flatnonzero(~passed).tolist():  # one by one, as candidates() does it
            candidate = eager[row] = self._candidate(keys[row], paths[row], now, path_of, max_age)
            values = candidate.metrics.values
            for name, column in metrics.items():
                column[row] = values.get(name, np.nan)
            flags[row] = int(candidate.metrics.flags)
            plain[row] = is_plain(candidate)
        if expired.any():
            for column in metrics.values():
                column[expired] = np.nan
        # the distinct D-BIDs (a few sites' addresses, shared by many services) by object identity, from the
        # ids the tables keep (of their keys' bindings): one sort of ints in C, no address hashed
        ids = np.concatenate([table.binding_ids for table in tables]) if tables else np.zeros(0, np.int64)
        _, first, path_index = np.unique(ids, return_index=True, return_inverse=True)
        measured = [path_of(keys[row].binding) for row in first.tolist()]
        rtt, rtt_ok = optional_column(measured, RTT)
        loss, loss_ok = optional_column(measured, LOSS)
        reachable = np.fromiter(map(REACHABLE, measured), np.bool_, len(measured))
        batch = RowBatch(keys=keys, raws=raws, ages=ages, expired=expired, measured=measured,
                         path_index=path_index, eager=eager, metric_types=self.metric_types,
                         metrics=metrics, flags=flags, plain=plain, rtt=rtt[path_index], loss=loss[path_index],
                         reachable=reachable[path_index], path_ok=(rtt_ok & loss_ok)[path_index])
        starts = np.cumsum([0] + [len(table.keys) for table in tables[:-1]]).tolist()
        flagged: list[list[tuple[int, int]]] = [[] for _ in tables]  # each service's flagged instances, in one pass
        rows = np.flatnonzero(flags)
        for row, owner, value in zip(rows.tolist(), (np.searchsorted(starts, rows, side="right") - 1).tolist(),
                                     flags[rows].tolist(), strict=True):
            flagged[owner].append((row - starts[owner], value))
        return [CandidateRows(batch, start, service, table.keys, table.idents, table.bindings, table.in_order,
                              service_flagged)
                for start, service, table, service_flagged in zip(starts, services, tables, flagged, strict=True)]

    def _changing(self, paths: list[Path]) -> npt.NDArray[np.bool_]:
        """Whether each path's peer's rule may change plausible metrics (``trust.may_change``)."""
        if not self.trust.peers:
            return np.full(len(paths), may_change(self.trust.default), np.bool_)
        by_peer: dict[str, bool] = {}
        changing = []
        for path in paths:
            peer = path.key[0]
            known = by_peer.get(peer)
            if known is None:
                known = by_peer[peer] = may_change(self.trust.rule_for(peer))
            changing.append(known)
        return np.array(changing, np.bool_)

    def _screen(self, path: Path) -> ComputeMetrics:
        """Decode the path's metrics (reporting malformed ones), then screen them under its peer's rule."""
        quick = decode_quick(path.raw, metric_types=self.metric_types)
        peer, prefix, _ = path.key
        rule = self.trust.rule_for(peer) if self.trust.peers else self.trust.default
        if isinstance(quick, ComputeMetrics):  # read whole by a plan: no problem, nothing carried verbatim
            if passes_as_announced(quick, rule):  # and nothing to screen out: the common case, nothing built
                path._used = quick
                path._held = None
                path._state = state_from_flags(quick.flags)
                return quick
            decoded = DecodedMetrics(quick)
        else:
            decoded = quick
        self.counters.metric_problems += len(decoded.problems)
        for problem in decoded.problems:
            self.reject(Rejection(METRIC_INVALID, peer, prefix, text_of(path.next_hop), problem))
        screened = screen(decoded.metrics, rule)
        held = None
        for reason, detail in screened.findings:
            self.reject(Rejection(reason, peer, prefix, text_of(path.next_hop), detail, rule.label))
            if reason == METRICS_IMPLAUSIBLE:
                held = IMPLAUSIBLE  # a route that claims what no instance can be takes no new flows
        path._used = screened.metrics
        path._held = held
        path._state = state_from_flags(screened.metrics.flags)
        return path._used

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
            assert type(path.raw) is bytes and len(path.raw) % 8 == 0, \
                f"path {key}: extended communities of {len(path.raw)} octets, not 8 each (Route.ext_raw)"
        if self._track:
            instances: dict[tuple[str, IPAddress], int] = {}
            for key, path in self._paths.items():
                instances[(key[1], path.next_hop)] = instances.get((key[1], path.next_hop), 0) + 1
            assert instances == self._instances, "instance path counts out of sync"
        for peer, held in self._peer_prefixes.items():
            actual: dict[str, int] = {}
            for key in self._by_peer.get(peer, ()):
                actual[key[1]] = actual.get(key[1], 0) + 1
            assert held == actual, f"D-SID counts of {peer} out of sync"


def _fresher(path: Path, other: Path) -> bool:
    """A live path beats a stale one; then the most recently received wins; received at the same instant (two
    reflectors' copies in one replayed second, say), the lower (peer, prefix, path id) key, so that the pick
    never depends on the order of a set (which differs between processes)."""
    if (path.stale_since is None) != (other.stale_since is None):
        return path.stale_since is None
    if path.received_at != other.received_at:
        return path.received_at > other.received_at
    return path.key < other.key
