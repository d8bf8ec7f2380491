"""Many services' candidates as rows of columns, for a step over many services (:meth:`Rib.rows`).

The RIB decodes the metric communities of every instance of a block of services at once
(:func:`~dyncast_bgp.wire.columnar.decode_columns`) into a :class:`RowBatch`; each service gets a
:class:`CandidateRows`, a ``Sequence[Candidate]`` whose candidates are made only when read. The batch
decision (:mod:`~dyncast_bgp.engine.batch`) takes its columns as they are (:func:`block_of`) instead of
reading 16 objects per service back into arrays; the router's bookkeeping reads keys and flags from it;
what needs a :class:`Candidate` (the per-service decision, an exclusion to word, an explanation) gets
the very object :meth:`Rib.candidates` would have built at the time of the step. The rows keep what was
read then (the communities' octets, the age, the path metrics), so a candidate made later, for an
explanation, is still the one that was decided.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import overload

import numpy as np
import numpy.typing as npt

from dyncast_bgp.engine.assess import Standing
from dyncast_bgp.engine.candidate import Candidate, Ident
from dyncast_bgp.engine.columns import AGENT_SCORES, METRICS, Block
from dyncast_bgp.engine.eligibility import Exclusion
from dyncast_bgp.engine.trust import neutral
from dyncast_bgp.model import (
    InstanceKey,
    IPAddress,
    PathMetrics,
    ServiceId,
    StateFlag,
    state_from_flags,
)
from dyncast_bgp.wire.fastdecode import MetricTypes, decode_raw, flag_of

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

NAMES = METRICS + AGENT_SCORES
"""The metric columns a batch holds."""


@dataclass(slots=True, eq=False)
class RowBatch:
    """The candidates of a block of services, row ``r`` one instance (services' rows contiguous).

    ``eager``: the candidates built one by one when the batch was made (a path the columns could not read,
    or whose metrics screening changes); every other row's candidate is built from ``raws[r]`` when read.
    Metric columns are NaN where absent (or expired: ``metrics_max_age``); ``plain[r]``: state active, no
    state flag, no hold (as :class:`~dyncast_bgp.engine.columns.Block` defines it).
    """

    keys: list[InstanceKey]
    raws: list[bytes]
    ages: Floats
    expired: Bools
    measured: list[PathMetrics]
    """The path metrics of each distinct D-BID of the batch; row ``r``'s is ``measured[path_index[r]]``."""
    path_index: Ints
    eager: dict[int, Candidate]
    metric_types: MetricTypes
    metrics: dict[str, Floats]
    flags: Ints
    plain: Bools
    rtt: Floats
    loss: Floats
    reachable: Bools
    path_ok: Bools
    """Row ``r``'s path values can be columns: absent or finite (see ``columns._optional``)."""

    def candidate(self, row: int) -> Candidate:
        """Row ``row`` as :meth:`Rib.candidates` builds it (no flap hold)."""
        made = self.eager.get(row)
        if made is not None:
            return made
        metrics = decode_raw(self.raws[row], metric_types=self.metric_types).metrics
        if self.expired[row]:
            metrics = neutral(metrics)
        return Candidate(self.keys[row], state_from_flags(metrics.flags), metrics,
                         self.measured[self.path_index[row]], self.ages[row].item(), None, None)

    def standing(self, row: int, hold: Exclusion | None) -> Standing:
        """What :func:`~dyncast_bgp.engine.assess.exclusion_of` reads of row ``row``'s candidate held out by
        ``hold`` (None: its own hold), without decoding its metrics: the flags are the batch's column."""
        made = self.eager.get(row)
        if made is not None:
            standing = Standing.of(made)
            return standing if hold is None else standing._replace(hold=hold)
        flags = flag_of(int(self.flags[row]))
        return Standing(state_from_flags(flags), self.measured[self.path_index[row]], hold, flags)


class _Lazy(Sequence[Candidate]):
    """A sequence of candidates made when read: indexing and slicing as a list does them, over :meth:`_at`
    (given a position checked to be in range)."""

    __slots__ = ()

    def _at(self, index: int) -> Candidate:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Candidate: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Candidate]: ...
    def __getitem__(self, index: int | slice) -> Candidate | Sequence[Candidate]:
        if isinstance(index, slice):
            return [self._at(position) for position in range(len(self))[index]]
        return self._at(_checked(index, len(self)))


class CandidateRows(_Lazy):
    """One service's candidates, rows ``start`` to ``start + len`` of a :class:`RowBatch`, in canonical order.

    ``keys``, ``idents`` and ``bindings`` are the RIB's lists for the service (shared, never changed);
    :meth:`hold` holds an instance out (flap dampening) as ``replace(candidate, hold=...)`` would.
    """

    __slots__ = ("_flagged", "_made", "batch", "bindings", "holds", "idents", "in_order", "keys", "service", "start")

    def __init__(self, batch: RowBatch, start: int, service: ServiceId, keys: list[InstanceKey],  # noqa: PLR0917
                 idents: list[Ident], bindings: tuple[IPAddress, ...], in_order: bool,
                 flagged: list[tuple[int, int]]) -> None:
        """``flagged``: the instances announcing some state flag, in order, each with its flags' value (the RIB
        finds them for a whole batch in one pass)."""
        self.batch = batch
        self.start = start
        self.service = service
        self.keys = keys
        self.idents = idents
        self.bindings = bindings
        self.in_order = in_order
        self.holds: dict[int, Exclusion] | None = None
        self._flagged = flagged
        self._made: list[Candidate | None] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    def _at(self, index: int) -> Candidate:
        count = len(self.keys)
        made = self._made
        if made is None:
            made = self._made = [None] * count
        candidate = made[index]
        if candidate is None:
            candidate = self.batch.candidate(self.start + index)
            hold = self.holds.get(index) if self.holds else None
            if hold is not None:
                candidate = replace(candidate, hold=hold)
            made[index] = candidate
        return candidate

    def __iter__(self) -> Iterator[Candidate]:
        return map(self._at, range(len(self.keys)))

    def flags(self, index: int) -> StateFlag:
        """The state flags of instance ``index`` (without building its candidate; the batch's flags column holds
        those of the candidates built when it was made too)."""
        return flag_of(int(self.batch.flags[self.start + index]))

    def standing(self, index: int) -> Standing:
        """What ``exclusion_of`` reads of candidate ``index`` (see :meth:`RowBatch.standing`)."""
        return self.batch.standing(self.start + _checked(index, len(self)),
                                   self.holds.get(index) if self.holds else None)

    def flagged(self) -> list[tuple[int, int]]:
        """The instances announcing some state flag, in order, each with the value of its flags (an int: the
        enum's arithmetic runs in Python)."""
        return self._flagged

    def hold(self, index: int, exclusion: Exclusion) -> None:
        """Hold instance ``index`` out with ``exclusion`` (its candidate's ``hold``)."""
        if self.holds is None:
            self.holds = {}
        self.holds[index] = exclusion
        if self._made is not None:
            self._made[index] = None


def block_of(services: Sequence[ServiceId], lists: Sequence[Sequence[Candidate]], *,
             agent_scores: bool) -> Block | None:
    """The :class:`Block` :func:`~dyncast_bgp.engine.columns.read` makes of ``lists``, taken from their rows
    when every list is the :class:`CandidateRows` of its service in one batch (None otherwise)."""
    if not lists or any(type(rows) is not CandidateRows for rows in lists):
        return None
    rows_lists: list[CandidateRows] = list(lists)  # type: ignore[arg-type]  # checked just above
    batch = rows_lists[0].batch
    count = len(rows_lists[0])
    if any(rows.batch is not batch or len(rows) != count or rows.service is not service
           for rows, service in zip(rows_lists, services, strict=True)):
        return None
    shape = (len(rows_lists), count)
    starts = np.fromiter([rows.start for rows in rows_lists], np.int64, len(rows_lists))
    index = (starts[:, None] + np.arange(count, dtype=np.int64)).ravel()
    plain = batch.plain[index]
    for number, rows in enumerate(rows_lists):
        if rows.holds:
            for column in rows.holds:
                plain[number * count + column] = False
    names = NAMES if agent_scores else METRICS
    in_order = np.fromiter([rows.in_order for rows in rows_lists], np.bool_, len(rows_lists))
    return Block(
        services=list(services), count=count, candidates=Flat(rows_lists, count),
        keys=list(chain.from_iterable([rows.keys for rows in rows_lists])),
        idents=list(chain.from_iterable([rows.idents for rows in rows_lists])),
        usable=in_order & batch.path_ok[index].reshape(shape).all(axis=1),
        metrics={name: batch.metrics[name][index].reshape(shape) for name in names},
        rtt=batch.rtt[index].reshape(shape), loss=batch.loss[index].reshape(shape),
        reachable=batch.reachable[index].reshape(shape), plain=plain.reshape(shape))


class Flat(_Lazy):
    """The candidates of a block's services, row-major (what ``Block.candidates`` lists), made when read."""

    __slots__ = ("_count", "_lists")

    def __init__(self, lists: list[CandidateRows], count: int) -> None:
        self._lists, self._count = lists, count

    def __len__(self) -> int:
        return len(self._lists) * self._count

    def _at(self, index: int) -> Candidate:
        row, column = divmod(index, self._count)
        return self._lists[row][column]

    def standing(self, index: int) -> Standing:
        """What ``exclusion_of`` reads of candidate ``index``, its candidate not built."""
        row, column = divmod(_checked(index, len(self)), self._count)
        return self._lists[row].standing(column)


def _checked(index: int, count: int) -> int:
    """``index`` into a sequence of ``count`` items as a list takes it (negative from the end)."""
    position = index + count if index < 0 else index
    if not 0 <= position < count:
        raise IndexError("candidate index out of range")
    return position
