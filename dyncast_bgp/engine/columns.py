"""Many services' candidates read into NumPy columns, for the batch decision (:mod:`~dyncast_bgp.engine.batch`).

A :class:`Block` holds ``B`` services of ``n`` instances each: every field an
array of shape ``(B, n)``, row ``s`` the candidates of service ``s`` in the
order given (canonical order when :attr:`Block.usable` says so). Absent
metrics and path values are NaN, so that the arithmetic of
:mod:`~dyncast_bgp.engine.vector` runs on whole columns.

Reading is one pass over all candidates per field, each a C-level ``map``
(``attrgetter``, ``dict.get``) rather than a Python loop per instance: at
160,000 instances the reading costs more than the arithmetic. What cannot be
read that way is checked per service, and a service whose input is unusual
(an instance of another service, candidates out of canonical order or listed
twice, a path value that is NaN or infinite) is marked not usable: the caller
decides it with :func:`~dyncast_bgp.engine.decide.decide`, which sorts, or
raises the same error as always.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from itertools import chain, repeat
from operator import attrgetter, eq, is_, lt

import numpy as np
import numpy.typing as npt

from dyncast_bgp.engine.candidate import PATH_ID_BITS, Candidate, Ident, ident_of
from dyncast_bgp.model import InstanceKey, InstanceState, PathMetrics, ServiceId, StateFlag

Floats = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]

NAN = float("nan")
METRICS = ("cpu_utilization", "memory_utilization", "gpu_utilization", "service_delay", "capacity",
           "active_sessions", "queued_requests")
AGENT_SCORES = ("compute_score", "network_score", "overall_score")
_COMMON = ("cpu_utilization", "capacity", "active_sessions", "memory_utilization", "queued_requests",
           "service_delay", "gpu_utilization", "overall_score", "compute_score", "network_score")
"""The metrics in the order they are read: the most often reported first (see :func:`_metrics`)."""

_KEY = attrgetter("key")
_SERVICE = attrgetter("service")
_PATH_ID = attrgetter("path_id")
_VALUES = attrgetter("metrics.values._data")  # MetricsView's private dict: its get is one C call (as in assess)
_PLAIN = attrgetter("state", "metrics.flags", "hold")
_USUAL = (InstanceState.ACTIVE, StateFlag.NONE, None)  # compared item by item, identity first (C)
_PATH = attrgetter("path")
RTT = attrgetter("rtt_mean_us")
LOSS = attrgetter("loss_mean")
REACHABLE = attrgetter("reachable")
_IP = attrgetter("binding._ip")
_FAMILY = attrgetter("binding.__class__")


@dataclass(slots=True)
class Block:
    """``B`` services of ``n`` candidates each, as columns of shape ``(B, n)`` (see the module docstring).

    ``candidates``, ``keys`` and ``idents`` are flat lists (row-major: service ``s``'s instance ``i`` at
    ``s * n + i``). ``metrics`` maps each name of :data:`METRICS` (and of :data:`AGENT_SCORES` when read)
    to its column. ``usable[s]``: service ``s`` can be decided from these columns.
    """

    services: list[ServiceId]
    count: int
    candidates: Sequence[Candidate]
    keys: list[InstanceKey]
    idents: list[Ident]
    usable: Bools
    metrics: dict[str, Floats]
    rtt: Floats
    loss: Floats
    reachable: Bools
    plain: Bools
    """State active, no state flag, not held out by the router: the usual instance. A screen: False for some
    instances that take new flows all the same (a canary, say), never True for one that may not."""


def read(services: Sequence[ServiceId], candidates: Sequence[Sequence[Candidate]], *,
         agent_scores: bool) -> Block:
    """The columns of ``candidates[s]`` (every list of the same length) of ``services[s]``."""
    rows, count = len(services), len(candidates[0]) if candidates else 0
    shape = (rows, count)
    flat: list[Candidate] = list(chain.from_iterable(candidates))
    size = len(flat)
    if size != rows * count:
        raise ValueError("every service of a block needs the same number of candidates")
    keys: list[InstanceKey] = list(map(_KEY, flat))
    usable = np.ones(rows, np.bool_)
    owners = list(map(_SERVICE, keys))
    expected = np.repeat(np.array(services, dtype=object), count).tolist()
    if owners != expected:  # an instance of another service (compared as decide does: equal, identity first)
        usable = np.asarray(np.fromiter(map(eq, owners, expected), np.bool_, size).reshape(shape).all(axis=1),
                            np.bool_)
    idents, increasing = idents_of(keys)
    usable &= increasing.reshape(shape)[:, 1:].all(axis=1)  # canonical order, no twins (the RIB lists them so)
    values: list[dict[str, float]] = list(map(_VALUES, flat))
    metrics = _metrics(values, METRICS + AGENT_SCORES if agent_scores else METRICS)
    metrics = {name: column.reshape(shape) for name, column in metrics.items()}
    paths = list(map(_PATH, flat))
    rtt, rtt_ok = optional_column(paths, RTT)
    loss, loss_ok = optional_column(paths, LOSS)
    usable &= (rtt_ok & loss_ok).reshape(shape).all(axis=1)
    return Block(
        services=list(services), count=count, candidates=flat, keys=keys, idents=idents, usable=usable,
        metrics=metrics, rtt=rtt.reshape(shape), loss=loss.reshape(shape),
        reachable=np.fromiter(map(REACHABLE, paths), np.bool_, size).reshape(shape),
        plain=np.fromiter(map(eq, map(_PLAIN, flat), repeat(_USUAL)), np.bool_, size).reshape(shape),
    )


def _metrics(values: list[dict[str, float]], names: Sequence[str]) -> dict[str, Floats]:
    """Each metric of ``names`` of every instance (NaN: not reported).

    A metric no instance reports costs one scan of the dicts (or none: once the columns read so far
    account for every entry of every dict, the others are absent everywhere).
    """
    size = len(values)
    entries, found = sum(map(len, values)), 0
    columns = {}
    for name in sorted(names, key=_COMMON.index):
        if found == entries or not any(map(dict.__contains__, values, repeat(name))):
            columns[name] = np.full(size, NAN)
            continue
        columns[name] = column = np.fromiter(map(dict.get, values, repeat(name), repeat(NAN)), np.float64, size)
        found += size - int(np.count_nonzero(np.isnan(column)))
    return columns


def idents_of(keys: list[InstanceKey]) -> tuple[list[Ident], Bools]:
    """:func:`~dyncast_bgp.engine.candidate.ident_of` of every key, and whether each is greater than the one
    before it (the first: True).

    With IPv4 D-BIDs only (the usual case) computed as unsigned 64-bit columns: ``D-BID << 32 | path id``
    fits in 64 bits. The D-BID is read from ``IPv4Address._ip`` (what its ``int()`` returns, without a
    Python-level ``__int__`` call per instance).
    """
    size = len(keys)
    increasing = np.ones(size, np.bool_)
    if all(map(is_, map(_FAMILY, keys), repeat(IPv4Address))):
        try:
            path_ids = np.fromiter(map(_PATH_ID, keys), np.int64, size)
        except OverflowError:  # not a 32-bit ADD-PATH id: as ident_of computes it
            path_ids = np.full(size, -1, np.int64)
        if size == 0 or (path_ids.min() >= 0 and path_ids.max() < 1 << PATH_ID_BITS):
            column = np.fromiter(map(_IP, keys), np.uint64, size) << np.uint64(PATH_ID_BITS)
            column |= path_ids.astype(np.uint64)
            increasing[1:] = column[1:] > column[:-1]
            return column.tolist(), increasing
    idents = [ident_of(key) for key in keys]
    increasing[1:] = np.fromiter(map(lt, idents, idents[1:]), np.bool_, max(size - 1, 0))
    return idents, increasing


def is_plain(candidate: Candidate) -> bool:
    """:attr:`Block.plain` of one candidate (what :func:`read` finds for every candidate at once)."""
    return _PLAIN(candidate) == _USUAL


def optional_column(paths: list[PathMetrics], field: attrgetter[float | None]) -> tuple[Floats, Bools]:
    """An optional path value as a column (None -> NaN), and where it can be used: absent or finite.

    A NaN or infinite value cannot be told from an absent one in the column; its service is left to
    the per-service decision.
    """
    size = len(paths)
    column = np.fromiter(map(field, paths), np.float64, size)  # NumPy reads None as NaN
    finite = np.isfinite(column)
    if finite.all():  # the usual case: every path measured
        return column, finite
    return column, finite | np.fromiter(map(is_, map(field, paths), repeat(None)), np.bool_, size)
