"""A fast path for the router's hot loop: raw community bytes straight to metric values.

``decode_raw(raws)`` gives exactly what ``decode_metrics(decode(r) for r in raws)``
gives (a hypothesis test holds them equal for any input), but reads the common
case, well-formed metric communities of known sub-types plus any communities
carried verbatim (link bandwidth, unknown sub-types, other types), without
building an object per metric. Anything else (a problem to report: a bad
header, a duplicate, a value out of range, a wrong length) falls back to the
general decoder, which words the problems.

How: the first four octets of a community (type, sub-type, header) say
everything about it but its value, and a given agent announces the same
metrics with the same headers every time, so a path's *heads* (those four
octets of each of its communities) repeat even when every value changes. For
each distinct set of heads a :class:`_Plan` is worked out once, from the heads
alone: which communities are which metrics, the format of every value, the
bounds each must keep. Its reader is a small function generated for those
heads (as :mod:`dataclasses` and :func:`collections.namedtuple` generate
theirs): one ``unpack`` of every value in its own format, the range checks and
the metrics' dict written out, with no loop and no per-metric call. The
generated source holds only positions, registry names and fixed identifiers,
never a received octet. Per path that leaves a join, a dict lookup and that
function.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from dyncast_bgp.model import ComputeMetrics, MetricsView, StateFlag, state_flags
from dyncast_bgp.slots import slot_setters
from dyncast_bgp.wire.community import (
    BY_SUBTYPE,
    EXPERIMENTAL_TYPES,
    LINK_BANDWIDTH_SUBTYPE,
    LINK_BANDWIDTH_TYPE,
    UINT32_MAX,
    LinkBandwidth,
    Source,
    ValueFormat,
    decode,
    split_communities,
)
from dyncast_bgp.wire.metrics import STATE, VERSION, DecodedMetrics, decode_metrics

MetricTypes = range | frozenset[int]
_Values = tuple[Any, ...]
_Unpack = Callable[[bytes], _Values]

_MAX_SOURCE: Final = max(Source)
_FLOAT_MAX: Final = sys.float_info.max
"""The largest finite float: ``value <= _FLOAT_MAX`` is False for NaN and infinity, so one comparison
checks both that a value is finite and below an open upper bound."""
_CACHE_LIMIT: Final = 4096
"""Entries kept in a memo (emptied when full) of heads seen once, or of state-flags values."""
_PLAN_LIMIT: Final = 1024
"""Plans kept per set of metric types (emptied when full): a real network has a handful, one per agent build."""
_EMPTY: Final[tuple[()]] = ()


class _Plan(NamedTuple):
    """How to read every path whose communities have one given set of heads (none of them a problem)."""

    read: Callable[[bytes], ComputeMetrics | None]
    """The metrics of such a path, from its octets; None when a value is out of range or not finite."""
    carried: tuple[int, ...]
    """Positions of the communities passed on verbatim (``DecodedMetrics.unknown``), in arrival order."""
    bandwidths: tuple[int, ...]
    """The link-bandwidth communities among ``carried``."""


_QUANTITY, _STATE, _VERSION, _CARRIED, _BANDWIDTH = range(5)
QUANTITY, STATE_FLAGS, SOFTWARE_VERSION, CARRIED, BANDWIDTH = _QUANTITY, _STATE, _VERSION, _CARRIED, _BANDWIDTH
"""The kinds of community (the first field of a :data:`_Kind`), named for the columnar decoder."""
_Kind = tuple[int, str, float, float, str]
"""What one community is: its kind, metric name, value bounds and the struct code of its value."""
_SKIPPED: Final[_Kind] = (_CARRIED, "", 0.0, 0.0, "I")


def _kind(head: int, metric_types: MetricTypes) -> _Kind | None:
    """What one community is, from its first four octets; None: a problem the general decoder words.

    Mirrors the general decoder's checks that do not depend on the value (``MetricCommunity.problems``).
    """
    type_code, subtype, header = head >> 24, (head >> 16) & 0xFF, head & 0xFFFF
    if type_code not in metric_types:
        if type_code == LINK_BANDWIDTH_TYPE and subtype == LINK_BANDWIDTH_SUBTYPE:
            return (_BANDWIDTH, "", 0.0, 0.0, "I")  # carried; its value is checked by _with_carried
        return _SKIPPED  # opaque: carried, never read
    spec = BY_SUBTYPE.get(subtype)
    if spec is None:
        return _SKIPPED  # a sub-type from a newer registry: carried, never an error
    if header >> 14 != spec.level or (header >> 9) & 0xF != spec.unit or (header >> 6) & 0x7 > _MAX_SOURCE:
        return None
    is_float = (header >> 13) & 1 == ValueFormat.FLOAT32
    high = _FLOAT_MAX if spec.maximum is None else spec.maximum
    if spec.name not in (STATE, VERSION):
        return (_QUANTITY, spec.name, spec.minimum, high, "f" if is_float else "I")
    if is_float:
        return None  # rare: the general decoder words a float that is not a whole number
    return (_STATE if spec.name == STATE else _VERSION, spec.name, spec.minimum, min(high, UINT32_MAX), "I")


def kinds_of(heads: _Values, metric_types: MetricTypes) -> list[_Kind] | None:
    """What each community with these heads is (see :data:`_Kind`; kinds by :data:`QUANTITY` ...
    :data:`BANDWIDTH`), or None when they hold a problem the general decoder words (a bad header, a
    duplicate). The plans' basis, and the columnar decoder's (:mod:`~dyncast_bgp.wire.columnar`)."""
    kinds = []
    for head in heads:
        kind = _kind(head, metric_types)
        if kind is None:
            return None
        kinds.append(kind)
    metrics = [name for kind, name, *_ in kinds if kind in (_QUANTITY, _STATE, _VERSION)]
    if len(set(metrics)) != len(metrics):
        return None  # a duplicate sub-type: the general decoder reports it
    return kinds


def _plan(heads: _Values, metric_types: MetricTypes) -> _Plan | None:
    """The plan for paths with these heads, or None when they hold a problem (a bad header, a duplicate)."""
    kinds = kinds_of(heads, metric_types)
    if kinds is None:
        return None
    return _Plan(read=_reader(kinds),
                 carried=tuple(position for position, (kind, *_) in enumerate(kinds)
                               if kind in (_CARRIED, _BANDWIDTH)),
                 bandwidths=tuple(position for position, (kind, *_) in enumerate(kinds) if kind == _BANDWIDTH))


def _reader(kinds: Sequence[_Kind]) -> Callable[[bytes], ComputeMetrics | None]:
    """The generated reader of a plan (see the module's docstring); ``kinds`` hold no duplicate metric.

    For cpu_utilization (float32), active_sessions, state and version (uint32) it reads::

        def read(blob):
            v0, v1, v2, v3 = unpack(blob)
            if not (low_0 <= v0 <= high_0):
                return None
            flags = flag_of(v2)
            if flags is None:
                flags = new_flag(v2)
            return metrics(view({'active_sessions': float(v1), 'cpu_utilization': v0}), flags, v3)

    Every range check of the general decoder that can fail is one chained comparison (False for NaN,
    and ``high`` is finite); a uint32 within its metric's bounds whatever its value is not checked.
    """
    namespace: dict[str, object] = {
        "unpack": struct.Struct("!" + "".join("4x" + code for *_, code in kinds)).unpack,
        "view": MetricsView.trusted, "metrics": ComputeMetrics.trusted, "flag_of": _flags.get, "new_flag": _flag,
        "NONE": StateFlag.NONE,
    }
    lines = ["def read(blob):"]
    if kinds:
        lines.append("    " + "".join(f"v{position}, " for position in range(len(kinds))) + "= unpack(blob)")
    checks = []
    for position, (kind, _, low, high, code) in enumerate(kinds):
        if kind in (_QUANTITY, _STATE, _VERSION) and (code == "f" or low > 0 or high < UINT32_MAX):
            namespace[f"low_{position}"], namespace[f"high_{position}"] = low, high
            checks.append(f"low_{position} <= v{position} <= high_{position}")
    if checks:
        lines += ["    if not (" + " and ".join(checks) + "):", "        return None"]
    at = {kind: position for position, (kind, *_) in enumerate(kinds)}  # the state and version: one each
    flags = "NONE"
    if _STATE in at:
        flags = "flags"
        lines += [f"    flags = flag_of(v{at[_STATE]})", "    if flags is None:",
                  f"        flags = new_flag(v{at[_STATE]})"]
    version = f"v{at[_VERSION]}" if _VERSION in at else "None"
    quantities = sorted((name, position, code) for position, (kind, name, _, _, code) in enumerate(kinds)
                        if kind == _QUANTITY)  # sorted by name: the order of a MetricsView
    values = ", ".join(f"{name!r}: " + (f"v{position}" if code == "f" else f"float(v{position})")
                       for name, position, code in quantities)  # a float32 value already is a float
    lines.append(f"    return metrics(view({{{values}}}), {flags}, {version})")
    exec("\n".join(lines), namespace)  # the source holds registry names and positions only
    read = namespace["read"]
    assert callable(read)
    return read


_masks: dict[int, int] = {}
"""Community count -> the mask keeping the heads of that many communities in their octets as one integer."""
_plans: dict[MetricTypes, dict[int, _Plan | None]] = {}
"""Metric types -> heads key (see :func:`decode_raw`) -> plan (None: take the general decoder)."""
_seen_once: set[int] = set()
"""Heads keys seen once and not planned yet (see :func:`_planned`)."""
_flags: dict[int, StateFlag] = {}
"""State-flags value -> its :class:`StateFlag` (calling the enum costs more than the rest of a metric)."""
_MAX_PLANNED: Final = 64
"""Paths with more communities than this always take the general decoder (agents send about ten)."""
_DECODED_SLOTS: Final = slot_setters(DecodedMetrics)
"""Setting a :class:`DecodedMetrics`'s slots directly costs half its ``__init__``."""


def decode_raw(raws: bytes | Sequence[bytes], *, metric_types: MetricTypes = EXPERIMENTAL_TYPES) -> DecodedMetrics:
    """The metrics carried by ``raws``, as the general decoder reads them: the octets of the extended communities
    one after the other (a route's ``ext_raw``), or one 8-octet community each."""
    decoded = decode_quick(raws, metric_types=metric_types)
    if type(decoded) is DecodedMetrics:
        return decoded
    result = object.__new__(DecodedMetrics)
    set_metrics, set_problems, set_unknown, set_lowest = _DECODED_SLOTS  # DecodedMetrics(metrics), built cheaply
    set_metrics(result, decoded)
    set_problems(result, _EMPTY)
    set_unknown(result, _EMPTY)
    set_lowest(result, None)
    return result


def decode_quick(raws: bytes | Sequence[bytes], *,
                 metric_types: MetricTypes = EXPERIMENTAL_TYPES) -> ComputeMetrics | DecodedMetrics:
    """:func:`decode_raw`, but where a plan reads the path whole (no problem, nothing carried verbatim: the
    common case) only its metrics: ``decode_raw(raws)`` is then ``DecodedMetrics(decode_quick(raws))``. The
    router's RIB screens those without the wrapper.

    The heads of the communities are looked up as one integer: the octets of all of them, big-endian, with
    every value masked to zero and the count in the last value's place (so that a longer list whose first
    heads are zero is another key).
    """
    if isinstance(raws, bytes):  # a route's ext_raw: the octets as they are read
        blob = raws
        count = len(blob) >> 3
        if len(blob) & 7:
            return _general(split_communities(blob), metric_types)  # a community cut short: the general decoder says so
    else:
        count = len(raws)
        try:
            blob = b"".join(raws)
        except TypeError:
            return _general(raws, metric_types)  # not bytes: the general decoder says so
        if len(blob) != 8 * count or (count and max(map(len, raws)) != 8):
            return _general(raws, metric_types)  # one too long (and another too short): the general decoder says so
    mask = _masks.get(count)
    if mask is None:
        if count > _MAX_PLANNED:
            return _general(split_communities(blob), metric_types)
        mask = _masks[count] = int.from_bytes(b"\xff\xff\xff\xff\0\0\0\0" * count, "big")
    key = (int.from_bytes(blob, "big") & mask) | count
    plans = _plans.get(metric_types)
    if plans is None:
        plans = _plans.setdefault(metric_types, {})
    plan = plans.get(key)
    if plan is None and key not in plans:
        plan = _planned(plans, key, blob, metric_types)
    if plan is None:
        return _general(split_communities(blob), metric_types)
    read, carried, _ = plan
    metrics = read(blob)
    if metrics is None:
        # out of range or not finite: the general decoder words it
        return _general(split_communities(blob), metric_types)
    if carried:
        return _with_carried(metrics, split_communities(blob), plan, metric_types)
    return metrics


def _general(raws: Sequence[bytes], metric_types: MetricTypes) -> DecodedMetrics:
    """The general decoder: one object per community, every problem worded."""
    return decode_metrics(decode(raw, metric_types=metric_types) for raw in raws)


def _planned(plans: dict[int, _Plan | None], key: int, blob: bytes, metric_types: MetricTypes) -> _Plan | None:
    """The plan for the heads of ``blob``, kept in ``plans`` under ``key``; None: take the general decoder.

    Heads seen for the first time are only remembered (the general decoder reads that path): generating a
    reader costs about as much as decoding a few paths the general way, and a real agent's heads come back
    with its next announcement, where a peer varying its headers would otherwise cost a reader per path.
    (``_seen_once`` is shared by all metric types: at worst a plan is made one sighting early.)
    """
    if key not in _seen_once:
        if len(_seen_once) >= _CACHE_LIMIT:
            _seen_once.clear()
        _seen_once.add(key)
        return None
    _seen_once.discard(key)
    plan = _plan(struct.unpack("!" + "I4x" * (len(blob) // 8), blob), metric_types)
    if len(plans) >= _PLAN_LIMIT:
        plans.clear()
    plans[key] = plan
    return plan


def flag_of(value: int) -> StateFlag:
    """The :class:`StateFlag` of a state-flags value, as a reader makes it (one object per value)."""
    flags = _flags.get(value)
    return flags if flags is not None else _flag(value)


def _flag(value: int) -> StateFlag:
    """The :class:`StateFlag` of a state-flags value, made now and kept."""
    flags = state_flags(value)
    if len(_flags) >= _CACHE_LIMIT:
        _flags.clear()
    _flags[value] = flags
    return flags


def _with_carried(metrics: ComputeMetrics, raws: Sequence[bytes], plan: _Plan,
                  metric_types: MetricTypes) -> DecodedMetrics:
    """The result for a path that also carries communities verbatim (link bandwidth, unknown, opaque).

    Rare, so written plainly: the carried communities are decoded as objects, and a link bandwidth is
    usable when finite and >= 0 (as in the general decoder; the lowest usable one is the route's).
    """
    unknown = tuple(decode(raws[position], metric_types=metric_types) for position in plan.carried)
    bandwidths = [community for position, community in zip(plan.carried, unknown, strict=True)
                  if position in plan.bandwidths and isinstance(community, LinkBandwidth)]
    if not all(math.isfinite(bandwidth.bytes_per_second) and bandwidth.bytes_per_second >= 0
               for bandwidth in bandwidths):
        return _general(raws, metric_types)  # an unusable link bandwidth: the general decoder words it
    lowest = min(bandwidths, key=lambda community: community.bytes_per_second, default=None)
    return DecodedMetrics(metrics, (), unknown, lowest)
