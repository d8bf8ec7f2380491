"""A fast path for the router's hot loop: raw community bytes straight to metric values.

``decode_raw(raws)`` gives exactly what ``decode_metrics(decode(r) for r in raws)``
gives (a hypothesis test holds them equal for any input), but reads the common
case, well-formed metric communities of known sub-types plus an optional
link-bandwidth community, without building an object per community. Anything
else (a problem to report, an unknown sub-type, an opaque community) falls back
to the general decoder, which words the problems.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from dyncast_bgp.model import ComputeMetrics, MetricsView, StateFlag
from dyncast_bgp.wire.community import (
    BY_SUBTYPE,
    EXPERIMENTAL_TYPES,
    LINK_BANDWIDTH_SUBTYPE,
    LINK_BANDWIDTH_TYPE,
    LinkBandwidth,
    Source,
    ValueFormat,
    decode,
)
from dyncast_bgp.wire.metrics import STATE, VERSION, DecodedMetrics, decode_metrics

_UNPACK = struct.Struct("!BBHI").unpack
_FLOAT = struct.Struct("!f")
_U32 = struct.Struct("!I")
_MAX_SOURCE = max(Source)
# sub-type -> (name, level, unit, minimum, maximum or None, is a quantity)
_SPECS = {subtype: (spec.name, int(spec.level), int(spec.unit), spec.minimum, spec.maximum,
                    spec.name not in (STATE, VERSION))
          for subtype, spec in BY_SUBTYPE.items()}


def decode_raw(raws: Sequence[bytes], *, metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> DecodedMetrics:
    fast = _fast(raws, metric_types)
    if fast is not None:
        return fast
    return decode_metrics(decode(raw, metric_types=metric_types) for raw in raws)


_CACHE_LIMIT = 65_536
_QUANTITY, _STATE, _VERSION, _BANDWIDTH = 0, 1, 2, 3
# raw 8 octets -> (subtype, kind, name, value or LinkBandwidth); None: not for the fast path
_cache: dict[tuple[bytes, bool], tuple[int, int, str, float | LinkBandwidth] | None] = {}


def _read(raw: bytes, metric_type: bool) -> tuple[int, int, str, float | LinkBandwidth] | None:
    """One community for the fast path (cached: most communities repeat byte for byte)."""
    key = (raw, metric_type)
    try:
        return _cache[key]
    except KeyError:
        pass
    result = _read_uncached(raw, metric_type)
    if len(_cache) >= _CACHE_LIMIT:
        _cache.clear()
    _cache[key] = result
    return result


def _read_uncached(raw: bytes, metric_type: bool) -> tuple[int, int, str, float | LinkBandwidth] | None:
    if len(raw) != 8:
        return None
    type_code, subtype, header, word = _UNPACK(raw)
    if not metric_type:
        if type_code != LINK_BANDWIDTH_TYPE or subtype != LINK_BANDWIDTH_SUBTYPE:
            return None
        bandwidth = LinkBandwidth(asn=header, raw_bandwidth=word)
        if not (math.isfinite(bandwidth.bytes_per_second) and bandwidth.bytes_per_second >= 0):
            return None
        return (-1, _BANDWIDTH, "", bandwidth)
    spec = _SPECS.get(subtype)
    if spec is None:
        return None
    name, level, unit, minimum, maximum, quantity = spec
    if header >> 14 != level or (header >> 9) & 0xF != unit or (header >> 6) & 0x7 > _MAX_SOURCE:
        return None
    value: float = _FLOAT.unpack(_U32.pack(word))[0] if (header >> 13) & 1 == ValueFormat.FLOAT32 else word
    if not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        return None
    if quantity:
        return (subtype, _QUANTITY, name, float(value))
    if value != int(value) or value > 0xFFFFFFFF:
        return None
    return (subtype, _STATE if name == STATE else _VERSION, name, float(value))


def _fast(raws: Sequence[bytes], metric_types: range | frozenset[int]) -> DecodedMetrics | None:
    values: dict[str, float] = {}
    flags = StateFlag.NONE
    version: int | None = None
    bandwidths: list[LinkBandwidth] = []
    seen: set[int] = set()
    for raw in raws:
        read = _read(raw, bool(raw) and raw[0] in metric_types)
        if read is None:
            return None
        subtype, kind, name, value = read
        if kind == _BANDWIDTH:
            assert isinstance(value, LinkBandwidth)
            bandwidths.append(value)
            continue
        if subtype in seen:
            return None  # a duplicate: the general decoder reports it
        seen.add(subtype)
        assert isinstance(value, float)
        if kind == _QUANTITY:
            values[name] = value
        elif kind == _STATE:
            flags = StateFlag(int(value))
        else:
            version = int(value)
    metrics = ComputeMetrics(values=MetricsView(values), flags=flags, version=version)
    lowest = min(bandwidths, key=lambda community: community.bytes_per_second, default=None)
    return DecodedMetrics(metrics=metrics, problems=(), unknown=tuple(bandwidths), link_bandwidth=lowest)
