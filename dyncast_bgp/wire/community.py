"""The metric extended community (DESIGN.md section 3) and the link-bandwidth community.

Every decoded community keeps the exact fields it was read from, so
``decode(c.pack()) == c`` and ``decode(raw).pack() == raw`` for any 8 octets.
This module does no I/O.

Layout of a metric community (8 octets)::

    0      type (0x83 by default, IANA experimental 0x83-0x8F, transitive)
    1      sub-type = metric type (registry in REGISTRY)
    2-3    header: level 2b | format 1b | unit 4b | source 3b | statistic 2b | reserved 4b
    4-7    value: uint32 or IEEE-754 float32, network byte order
"""

from __future__ import annotations

import enum
import math
import struct
from dataclasses import dataclass

DEFAULT_METRIC_TYPE = 0x83
EXPERIMENTAL_TYPES = range(0x83, 0x90)
LINK_BANDWIDTH_TYPE = 0x40
LINK_BANDWIDTH_SUBTYPE = 0x04
UINT32_MAX = 0xFFFFFFFF
_FLOAT32_MAX = 3.4028234663852886e38
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class WireError(ValueError):
    """A community could not be encoded or decoded.

    ``action`` says what a receiver does with the input, in the spirit of
    RFC 7606: ``discard`` the community (the metric becomes unknown), or
    ``reject`` a value asked to be encoded.
    """

    def __init__(self, message: str, *, action: str = "discard") -> None:
        super().__init__(message)
        self.action = action


class Level(enum.IntEnum):
    RAW = 0  # L0, a raw metric
    CATEGORY = 1  # L1, a category score
    OVERALL = 2  # L2, the overall score


class ValueFormat(enum.IntEnum):
    UINT32 = 0
    FLOAT32 = 1


class Unit(enum.IntEnum):
    NONE = 0
    PERCENT = 1
    COUNT = 2
    PER_SECOND = 3
    MICROSECONDS = 4
    BYTES = 5
    BITS_PER_SECOND = 6


class Source(enum.IntEnum):
    NOMINAL = 0
    ESTIMATED = 1
    MEASURED = 2
    NORMALIZED = 3
    AGGREGATED = 4


class Statistic(enum.IntEnum):
    CURRENT = 0
    MEAN = 1
    MAX = 2
    MIN = 3


_MAX_UNIT = max(Unit)
_MAX_SOURCE = max(Source)


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One entry of the metric registry: what a sub-type means."""

    name: str
    subtype: int
    level: Level
    unit: Unit
    fmt: ValueFormat
    minimum: float = 0.0
    maximum: float | None = None
    default_source: Source = Source.MEASURED


REGISTRY: tuple[MetricSpec, ...] = (
    MetricSpec("cpu_utilization", 0x01, Level.RAW, Unit.PERCENT, ValueFormat.FLOAT32, 0.0, 100.0),
    MetricSpec("memory_utilization", 0x02, Level.RAW, Unit.PERCENT, ValueFormat.FLOAT32, 0.0, 100.0),
    MetricSpec("gpu_utilization", 0x03, Level.RAW, Unit.PERCENT, ValueFormat.FLOAT32, 0.0, 100.0),
    MetricSpec("active_sessions", 0x04, Level.RAW, Unit.COUNT, ValueFormat.UINT32),
    MetricSpec("queued_requests", 0x05, Level.RAW, Unit.COUNT, ValueFormat.UINT32),
    MetricSpec("capacity", 0x06, Level.RAW, Unit.PER_SECOND, ValueFormat.UINT32,
               default_source=Source.NOMINAL),
    MetricSpec("service_delay", 0x07, Level.RAW, Unit.MICROSECONDS, ValueFormat.UINT32),
    MetricSpec("error_rate", 0x08, Level.RAW, Unit.PERCENT, ValueFormat.FLOAT32, 0.0, 100.0),
    MetricSpec("compute_score", 0x10, Level.CATEGORY, Unit.NONE, ValueFormat.FLOAT32, 0.0, 10.0,
               Source.NORMALIZED),
    MetricSpec("network_score", 0x11, Level.CATEGORY, Unit.NONE, ValueFormat.FLOAT32, 0.0, 10.0,
               Source.NORMALIZED),
    MetricSpec("overall_score", 0x20, Level.OVERALL, Unit.NONE, ValueFormat.FLOAT32, 0.0, 10.0,
               Source.NORMALIZED),
    MetricSpec("state", 0x30, Level.RAW, Unit.NONE, ValueFormat.UINT32, default_source=Source.NOMINAL),
    MetricSpec("version", 0x31, Level.RAW, Unit.NONE, ValueFormat.UINT32, default_source=Source.NOMINAL),
)
BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in REGISTRY}
BY_SUBTYPE: dict[int, MetricSpec] = {spec.subtype: spec for spec in REGISTRY}


def _check_octet(name: str, value: int) -> None:
    if not 0 <= value <= 0xFF:
        raise WireError(f"{name} must be an octet (0-255), got {value}", action="reject")


def _pack_header(level: int, fmt: int, unit: int, source: int, statistic: int, reserved: int) -> int:  # noqa: PLR0917
    fields = (("level", level, 2), ("format", fmt, 1), ("unit", unit, 4), ("source", source, 3),
              ("statistic", statistic, 2), ("reserved", reserved, 4))
    header = 0
    for name, value, bits in fields:
        if not 0 <= value < (1 << bits):
            raise WireError(f"header field {name} must fit in {bits} bits, got {value}", action="reject")
        header = (header << bits) | value
    return header


def float32_bits(value: float) -> int:
    """The IEEE-754 single-precision bit pattern of ``value`` (must be finite and in range)."""
    if not math.isfinite(value):
        raise WireError(f"value {value!r} is not a finite number", action="reject")
    if abs(value) > _FLOAT32_MAX:
        raise WireError(f"value {value!r} does not fit a float32", action="reject")
    bits: int = struct.unpack("!I", struct.pack("!f", value))[0]
    return bits


def bits_float32(bits: int) -> float:
    value: float = struct.unpack("!f", struct.pack("!I", bits))[0]
    return value


@dataclass(frozen=True, slots=True)
class MetricCommunity:
    """A metric extended community, fields exactly as on the wire."""

    type_code: int
    subtype: int
    level: int
    fmt: int
    unit: int
    source: int
    statistic: int
    raw_value: int
    reserved: int = 0

    @classmethod
    def of(cls, name: str, value: float, *, source: Source | None = None,
           statistic: Statistic = Statistic.CURRENT, fmt: ValueFormat | None = None,
           type_code: int = DEFAULT_METRIC_TYPE) -> MetricCommunity:
        """Build the community for registry metric ``name`` holding ``value``.

        uint32 metrics round half-to-even; values outside the metric's range or
        not representable raise :class:`WireError` with action ``reject``.
        """
        spec = BY_NAME.get(name)
        if spec is None:
            raise WireError(f"unknown metric name {name!r} (known: {', '.join(BY_NAME)})", action="reject")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WireError(f"{name}: value must be a number, got {value!r}", action="reject")
        try:
            number = float(value)
        except OverflowError:  # an int beyond the float range
            raise WireError(f"{name}: value {value!r} is too large", action="reject") from None
        if not math.isfinite(number):
            raise WireError(f"{name}: value {value!r} is not a finite number", action="reject")
        if number < spec.minimum or (spec.maximum is not None and number > spec.maximum):
            allowed = (f"between {spec.minimum:g} and {spec.maximum:g}" if spec.maximum is not None
                       else f"at least {spec.minimum:g}")
            raise WireError(f"{name}: value {value!r} is out of range (must be {allowed})", action="reject")
        chosen = spec.fmt if fmt is None else fmt
        if chosen is ValueFormat.UINT32:
            integral = round(number)
            if integral > UINT32_MAX:
                raise WireError(f"{name}: value {value!r} does not fit a uint32", action="reject")
            raw = integral
        else:
            try:
                raw = float32_bits(number)
            except WireError as exc:  # name the metric, as every other rejection here does
                raise WireError(f"{name}: {exc}", action="reject") from None
        _check_octet("type", type_code)
        return cls(type_code=type_code, subtype=spec.subtype, level=int(spec.level), fmt=int(chosen),
                   unit=int(spec.unit), source=int(spec.default_source if source is None else source),
                   statistic=int(statistic), raw_value=raw)

    @property
    def spec(self) -> MetricSpec | None:
        return BY_SUBTYPE.get(self.subtype)

    @property
    def name(self) -> str:
        spec = self.spec
        return spec.name if spec else f"unknown_0x{self.subtype:02x}"

    @property
    def value(self) -> float:
        """The value as a number: an int for uint32, a float for float32 (may be NaN/inf)."""
        if self.fmt == ValueFormat.FLOAT32:
            return bits_float32(self.raw_value)
        return self.raw_value

    @property
    def header(self) -> int:
        return _pack_header(self.level, self.fmt, self.unit, self.source, self.statistic, self.reserved)

    def pack(self) -> bytes:
        _check_octet("type", self.type_code)
        _check_octet("sub-type", self.subtype)
        if not 0 <= self.raw_value <= UINT32_MAX:
            raise WireError(f"raw value must fit 32 bits, got {self.raw_value}", action="reject")
        return struct.pack("!BBHI", self.type_code, self.subtype, self.header, self.raw_value)

    def problems(self) -> list[str]:
        """Why a receiver must not use this metric (empty when it is usable).

        Unknown sub-types are not a problem here: they are carried, not used.
        """
        issues: list[str] = []
        if self.level > Level.OVERALL:
            issues.append(f"level {self.level} is undefined")
        if self.unit > _MAX_UNIT:
            issues.append(f"unit {self.unit} is undefined")
        if self.source > _MAX_SOURCE:
            issues.append(f"source {self.source} is undefined")
        spec = self.spec
        if spec is None:
            return issues
        if self.level != spec.level:
            issues.append(f"level {self.level} does not match {spec.name} (expects {int(spec.level)})")
        if self.unit != spec.unit:
            issues.append(f"unit {self.unit} does not match {spec.name} (expects {int(spec.unit)})")
        value = self.value
        if not math.isfinite(value):
            issues.append(f"{spec.name} value is not finite")
        elif value < spec.minimum or (spec.maximum is not None and value > spec.maximum):
            issues.append(f"{spec.name} value {value:g} is out of range")
        return issues

    def describe(self) -> dict[str, object]:
        """A JSON-ready description (the `dyncast wire decode` output)."""
        value: float | int | str = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = repr(value)
        return {
            "kind": "metric",
            "hex": "0x" + self.pack().hex(),
            "type": f"0x{self.type_code:02x}",
            "subtype": f"0x{self.subtype:02x}",
            "metric": self.name,
            "level": _enum_name(Level, self.level),
            "format": _enum_name(ValueFormat, self.fmt),
            "unit": _enum_name(Unit, self.unit),
            "source": _enum_name(Source, self.source),
            "statistic": _enum_name(Statistic, self.statistic),
            "value": value,
            "problems": self.problems(),
        }


@dataclass(frozen=True, slots=True)
class LinkBandwidth:
    """The link-bandwidth extended community (0x40/0x04): 2-octet AS and float32 bytes/s."""

    asn: int
    raw_bandwidth: int
    type_code: int = LINK_BANDWIDTH_TYPE

    @classmethod
    def of(cls, asn: int, bytes_per_second: float) -> LinkBandwidth:
        if isinstance(asn, bool) or not isinstance(asn, int) or not 0 <= asn <= 0xFFFF:
            raise WireError(f"link-bandwidth AS must be 0-65535 (2 octets), got {asn!r}", action="reject")
        if isinstance(bytes_per_second, bool) or not isinstance(bytes_per_second, int | float):
            raise WireError(f"link bandwidth must be a number, got {bytes_per_second!r}", action="reject")
        if bytes_per_second < 0 or (isinstance(bytes_per_second, float) and not math.isfinite(bytes_per_second)):
            raise WireError(f"link bandwidth must be a finite number >= 0, got {bytes_per_second!r}",
                            action="reject")
        if bytes_per_second > _FLOAT32_MAX:  # also keeps float() of a huge int from overflowing
            raise WireError(f"link bandwidth {bytes_per_second!r} does not fit a float32", action="reject")
        return cls(asn=asn, raw_bandwidth=float32_bits(float(bytes_per_second)))

    @property
    def bytes_per_second(self) -> float:
        return bits_float32(self.raw_bandwidth)

    def pack(self) -> bytes:
        _check_octet("type", self.type_code)
        if not 0 <= self.asn <= 0xFFFF or not 0 <= self.raw_bandwidth <= UINT32_MAX:
            raise WireError(f"link bandwidth fields out of range: AS {self.asn}, raw {self.raw_bandwidth}",
                            action="reject")
        return struct.pack("!BBHI", self.type_code, LINK_BANDWIDTH_SUBTYPE, self.asn, self.raw_bandwidth)

    def describe(self) -> dict[str, object]:
        number = self.bytes_per_second
        bandwidth: float | str = number if math.isfinite(number) else repr(number)
        return {"kind": "link-bandwidth", "hex": "0x" + self.pack().hex(),
                "type": f"0x{self.type_code:02x}", "subtype": f"0x{LINK_BANDWIDTH_SUBTYPE:02x}",
                "asn": self.asn, "bytes_per_second": bandwidth}


@dataclass(frozen=True, slots=True)
class OpaqueCommunity:
    """Any other extended community: carried verbatim, never interpreted."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != 8:
            raise WireError(f"an extended community has 8 octets, got {len(self.raw)}")

    def pack(self) -> bytes:
        return self.raw

    def describe(self) -> dict[str, object]:
        return {"kind": "opaque", "hex": "0x" + self.raw.hex(), "type": f"0x{self.raw[0]:02x}",
                "subtype": f"0x{self.raw[1]:02x}"}


Community = MetricCommunity | LinkBandwidth | OpaqueCommunity


def decode(raw: bytes, *, metric_types: frozenset[int] | range = EXPERIMENTAL_TYPES) -> Community:
    """Decode one 8-octet extended community.

    ``metric_types`` are the type octets read as metric communities. A wrong
    length raises :class:`WireError` (action ``discard``); any 8 octets decode.
    """
    if len(raw) != 8:
        raise WireError(f"an extended community has 8 octets, got {len(raw)}")
    type_code, subtype, header, value = struct.unpack("!BBHI", raw)
    if type_code in metric_types:
        return MetricCommunity(type_code=type_code, subtype=subtype, level=header >> 14,
                               fmt=(header >> 13) & 0x1, unit=(header >> 9) & 0xF,
                               source=(header >> 6) & 0x7, statistic=(header >> 4) & 0x3,
                               raw_value=value, reserved=header & 0xF)
    if type_code == LINK_BANDWIDTH_TYPE and subtype == LINK_BANDWIDTH_SUBTYPE:
        return LinkBandwidth(asn=header, raw_bandwidth=value)
    return OpaqueCommunity(bytes(raw))


def split_communities(blob: bytes) -> list[bytes]:
    """``blob`` (communities packed back to back, as ``Route.ext_raw``) as one 8-octet extended community each;
    the last one is shorter when the length is no multiple of 8, for :func:`decode` to refuse."""
    return [blob[start:start + 8] for start in range(0, len(blob), 8)]


def from_u64(value: int) -> bytes:
    """ExaBGP's JSON gives extended communities as an unsigned 64-bit integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 64:
        raise WireError(f"extended community value must be an unsigned 64-bit integer, got {value!r}")
    return value.to_bytes(8, "big")


def parse_hex(token: str) -> bytes:
    """Parse ``0x`` followed by 16 hex digits (the ExaBGP text form)."""
    text = token.strip()
    if not text.lower().startswith("0x"):
        raise WireError(f"{token!r}: expected 0x followed by 16 hex digits")
    digits = text[2:]
    if len(digits) != 16:
        raise WireError(f"{token!r}: expected 16 hex digits, got {len(digits)}")
    if not all(char in _HEX_DIGITS for char in digits):  # bytes.fromhex would skip spaces
        raise WireError(f"{token!r}: not hexadecimal")
    return bytes.fromhex(digits)


def to_hex(community: Community) -> str:
    return "0x" + community.pack().hex()


def _enum_name(kind: type[enum.IntEnum], value: int) -> str:
    try:
        return kind(value).name.lower()
    except ValueError:
        return f"undefined({value})"
