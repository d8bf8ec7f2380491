"""Many paths' metric communities decoded at once, into NumPy columns (the router's full recompute).

:func:`decode_columns` reads the paths a plan of :mod:`~dyncast_bgp.wire.fastdecode` would read whole
(well-formed metric communities of known sub-types, nothing carried verbatim, every value in range) as
columns: one column per metric, plus the state flags and software version. For every such row the
values are exactly those of :func:`~dyncast_bgp.wire.fastdecode.decode_quick` for the same path (a
hypothesis test holds them equal). Every other row is marked not read and left to the caller, which
decodes it one path at a time, as before, wording its problems.

How: the paths of one community count are joined into one buffer and viewed as ``(rows, count, 2)``
big-endian 32-bit words, the first of each pair a community's *head* (type, sub-type, header), the second
its value. Rows with the same heads share a plan (:func:`~dyncast_bgp.wire.fastdecode.kinds_of`); a plan's
values are converted and range-checked as whole columns. A real network has a few distinct sets of heads
(one per agent build); at most :data:`DISTINCT_LIMIT` per community count are read here, the rest go one
by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES, UINT32_MAX
from dyncast_bgp.wire.fastdecode import QUANTITY, SOFTWARE_VERSION, STATE_FLAGS, MetricTypes, kinds_of

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Bools = npt.NDArray[np.bool_]

DISTINCT_LIMIT: Final = 8
"""Distinct sets of heads read as columns per community count; rows with others are left to the caller."""
MAX_COUNT: Final = 64
"""Paths with more communities than this are left to the caller (as the plans leave them to the general
decoder)."""
NO_VERSION: Final = -1
"""The version column's value for a row without a software-version metric."""


@dataclass(slots=True)
class MetricColumns:
    """The metrics of ``rows`` paths as columns (see the module docstring).

    ``read[r]``: row ``r`` was read whole; its values are in the columns. For other rows the columns hold
    NaN, 0 and :data:`NO_VERSION`, meaning nothing. ``values`` maps every quantity some read row carries to
    its column (NaN: not carried by that row).
    """

    read: Bools
    values: dict[str, Floats]
    flags: Ints
    """The state-flags value (0: none announced)."""
    version: Ints


def decode_columns(raws: Sequence[bytes], *,
                   metric_types: MetricTypes = EXPERIMENTAL_TYPES) -> MetricColumns:
    """The columns of ``raws[r]`` (each one path's extended communities, 8 octets each, one after the other: a
    route's ``ext_raw``), row by row. A path whose length is no multiple of 8 is not read (left to the caller,
    whose one-by-one decoder words it)."""
    size = len(raws)
    result = MetricColumns(np.zeros(size, np.bool_), {}, np.zeros(size, np.int64), np.full(size, NO_VERSION, np.int64))
    if not size:
        return result
    seen = set(map(len, raws))  # usually one length for all: then no column of lengths is made
    lengths = np.fromiter(map(len, raws), np.int64, size) if len(seen) > 1 else None
    for length in sorted(seen):
        count, rest = divmod(length, 8)
        if rest or count > MAX_COUNT:
            continue
        rows = np.arange(size) if lengths is None else np.flatnonzero(lengths == length)
        if count == 0:
            result.read[rows] = True  # no community: no metric, no problem (as a plan of no heads reads it)
        else:
            _read_group(raws, rows, count, metric_types, result, whole=lengths is None)
    return result


def _read_group(raws: Sequence[bytes], rows: Ints, count: int, metric_types: MetricTypes,
                result: MetricColumns, *, whole: bool) -> None:
    """Read the rows of ``count`` communities each into ``result`` (``whole``: they are every row)."""
    group = raws if whole else [raws[row] for row in rows.tolist()]  # usually: one length for all
    blob = b"".join(group)
    words = np.frombuffer(blob, ">u4").reshape(len(group), count, 2)
    heads, values = words[:, :, 0], words[:, :, 1]
    remaining = np.arange(len(group))
    for _ in range(DISTINCT_LIMIT):
        if not remaining.size:
            return
        first = heads[remaining[0]]
        everyone = remaining.size == len(group)  # the usual case, one set of heads: no row copied or picked
        alike = ((heads if everyone else heads[remaining]) == first).all(axis=1)
        if alike.all():
            members, remaining = remaining, remaining[:0]
        else:
            members, remaining = remaining[alike], remaining[~alike]
            everyone = False
        kinds = kinds_of(tuple(first.tolist()), metric_types)
        if kinds is None or any(kind[0] not in (QUANTITY, STATE_FLAGS, SOFTWARE_VERSION) for kind in kinds):
            continue  # a problem to word, or a community carried verbatim: one by one
        if everyone:
            _read_plan(kinds, values, _ALL if whole else rows, result)
        else:
            _read_plan(kinds, values[members], rows[members], result)


_ALL: Final = slice(None)
"""Every row of the batch (an index that selects without a copy)."""


def _read_plan(kinds: Sequence[tuple[int, str, float, float, str]], values: npt.NDArray[np.uint32],
               rows: Ints | slice, result: MetricColumns) -> None:
    """Rows of one plan: each value converted and range-checked as the plan's reader does it."""
    ok: Bools | None = None  # None: every row passed so far
    converted: list[tuple[int, str, Floats | Ints]] = []
    for position, (kind, name, low, high, code) in enumerate(kinds):
        word = values[:, position]  # big-endian words, strided: each conversion below copies once
        column: Floats | Ints
        if code == "f":
            column = word.view(">f4").astype(np.float64)
        elif kind == QUANTITY:
            column = word.astype(np.float64)
        else:
            column = word.astype(np.int64)
        if code == "f" or low > 0 or high < UINT32_MAX:  # as the reader: a check that can fail (False for NaN)
            passed = (column >= low) & (column <= high)
            ok = passed if ok is None else ok & passed
        converted.append((kind, name, column))
    if ok is not None and not ok.all():
        rows = (np.arange(len(result.read))[rows] if isinstance(rows, slice) else rows)[ok]
    else:
        ok = None
    for kind, name, column in converted:
        data = column if ok is None else column[ok]
        if kind == QUANTITY:
            target = result.values.get(name)
            if target is None:
                target = result.values[name] = np.full(len(result.read), np.nan)
            target[rows] = data
        elif kind == STATE_FLAGS:
            result.flags[rows] = data
        else:
            result.version[rows] = data
    result.read[rows] = True
