"""`dyncast wire encode|decode`: metric extended communities by hand (docs/wire-format.md).

Both commands check every token before doing anything and name each bad one on
stderr (exit 2); they print nothing on stdout then.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import (
    BY_NAME,
    DEFAULT_METRIC_TYPE,
    EXPERIMENTAL_TYPES,
    Community,
    LinkBandwidth,
    MetricCommunity,
    Source,
    WireError,
    decode,
    from_u64,
    parse_hex,
)
from dyncast_bgp.wire.metrics import STATE, VERSION, decode_metrics, encode_metrics, exabgp_list

BAD_INPUT = 2
_T = TypeVar("_T")


class TokenError(ValueError):
    """One command-line token is wrong; the message says why (without the token)."""


class _IntermixedParser(argparse.ArgumentParser):
    """A leaf parser whose positional tokens and options may come in any order.

    Plain argparse stops collecting ``NAME=VALUE`` tokens at the first option, so
    ``encode cpu_utilization=1 --source measured capacity=10`` would fail.
    """

    _intermixing = False

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        if self._intermixing:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


def register(subparsers: Any) -> None:
    wire = subparsers.add_parser("wire", help="encode and decode metric extended communities")
    actions = wire.add_subparsers(dest="wire_command", metavar="ACTION", required=True,
                                  parser_class=_IntermixedParser)
    _add_encode(actions)
    _add_decode(actions)


def _add_encode(actions: Any) -> None:
    names = ", ".join(name for name in BY_NAME if name not in (STATE, VERSION))
    encode = actions.add_parser(
        "encode", help="print the ExaBGP extended-community list for some metrics",
        description=f"NAME=VALUE tokens; NAME is one of: {names}. Also state=FLAG[,FLAG...] "
                    f"(flags: {', '.join(_FLAGS)}) and version=N.")
    encode.add_argument("tokens", nargs="*", metavar="NAME=VALUE")
    encode.add_argument("--type", dest="type_code", default=f"{DEFAULT_METRIC_TYPE:#04x}",
                        help="type octet of the metric communities (default %(default)s)")
    encode.add_argument("--link-bandwidth", metavar="AS:BYTES_PER_S",
                        help="also attach the link-bandwidth community (0x40/0x04)")
    encode.add_argument("--source", action="append", default=[], metavar="[NAME=]SOURCE",
                        help="source of every metric value, or of metric NAME; repeatable "
                             f"({', '.join(source.name.lower() for source in Source)})")
    encode.set_defaults(handler=_encode)


def _add_decode(actions: Any) -> None:
    decode_cmd = actions.add_parser(
        "decode", help="describe extended communities, one JSON object per line",
        description="COMMUNITY is 0x followed by 16 hex digits, or the unsigned 64-bit decimal "
                    "integer that ExaBGP's JSON encoder prints.")
    decode_cmd.add_argument("tokens", nargs="+", metavar="COMMUNITY")
    decode_cmd.add_argument("--type", dest="type_codes", action="append", default=[],
                            help="type octet read as a metric community; repeatable "
                                 f"(default: the experimental range {EXPERIMENTAL_TYPES.start:#04x}-"
                                 f"{EXPERIMENTAL_TYPES.stop - 1:#04x})")
    decode_cmd.add_argument("--summary", action="store_true",
                            help="also print what a router reads from these communities (last line)")
    decode_cmd.set_defaults(handler=_decode)


# ------------------------------------------------------------------ encode


@dataclass(slots=True)
class _EncodeRequest:
    values: dict[str, float] = field(default_factory=dict)
    flags: StateFlag = StateFlag.NONE
    version: int | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    default_source: Source | None = None
    type_code: int = DEFAULT_METRIC_TYPE
    link_bandwidth: LinkBandwidth | None = None
    given: set[str] = field(default_factory=set)


def _encode(args: argparse.Namespace) -> int:
    request = _EncodeRequest()
    errors = _collect(args.tokens, lambda token: _read_metric_token(token, request))
    errors += _collect([args.type_code], lambda token: _set_type(token, request))
    errors += _collect(args.source, lambda token: _read_source(token, request))
    if args.link_bandwidth is not None:
        errors += _collect([args.link_bandwidth], lambda token: _set_link_bandwidth(token, request))
    if errors:
        return _fail("encode", errors)
    try:
        communities: list[Community] = list(encode_metrics(
            request.values, flags=request.flags, version=request.version, type_code=request.type_code,
            sources=_sources(request)))
    except WireError as exc:
        return _fail("encode", [str(exc)])
    if request.link_bandwidth is not None:
        communities.append(request.link_bandwidth)
    print(f"extended-community {exabgp_list(communities)}")
    return 0


def _read_metric_token(token: str, request: _EncodeRequest) -> None:
    name, text = _split(token, "NAME=VALUE")
    if name in request.given:
        raise TokenError(f"{name} is given twice")
    request.given.add(name)
    if name == STATE:
        request.flags = _parse_flags(text)
    elif name == VERSION:
        request.version = _parse_uint32(text)
        MetricCommunity.of(VERSION, request.version)
    elif name in BY_NAME:
        request.values[name] = _parse_number(text)
        MetricCommunity.of(name, request.values[name])  # range check, reported against this token
    else:
        raise TokenError(f"unknown metric {name!r} (known: {', '.join(BY_NAME)})")


def _set_type(token: str, request: _EncodeRequest) -> None:
    request.type_code = _parse_octet(token)


def _read_source(token: str, request: _EncodeRequest) -> None:
    if "=" not in token:
        if request.default_source is not None:
            raise TokenError("a source for every metric is given twice")
        request.default_source = _parse_source(token)
        return
    name, text = _split(token, "NAME=SOURCE")
    if name not in BY_NAME:
        raise TokenError(f"unknown metric {name!r}")
    if name in request.sources:
        raise TokenError(f"the source of {name} is given twice")
    request.sources[name] = _parse_source(text)


def _set_link_bandwidth(token: str, request: _EncodeRequest) -> None:
    asn_text, separator, rate_text = token.partition(":")
    if not separator:
        raise TokenError("expected AS:BYTES_PER_S")
    request.link_bandwidth = LinkBandwidth.of(_parse_int(asn_text), _parse_number(rate_text))


def _sources(request: _EncodeRequest) -> dict[str, Source]:
    """Per-metric sources; a bare --source applies to every metric value (not state or version)."""
    chosen = dict.fromkeys(request.values, request.default_source) if request.default_source else {}
    chosen.update(request.sources)
    return {name: source for name, source in chosen.items() if source is not None}


# ------------------------------------------------------------------ decode


def _decode(args: argparse.Namespace) -> int:
    metric_types: list[int] = []
    errors = _collect(args.type_codes, lambda token: metric_types.append(_parse_octet(token)))
    raws: list[bytes] = []
    errors += _collect(args.tokens, lambda token: raws.append(_parse_community(token)))
    if errors:
        return _fail("decode", errors)
    chosen = frozenset(metric_types) if metric_types else EXPERIMENTAL_TYPES
    communities = [decode(raw, metric_types=chosen) for raw in raws]
    for community in communities:
        print(json.dumps(community.describe()))
    if args.summary:
        print(json.dumps(_summary(communities)))
    return 0


def _parse_community(token: str) -> bytes:
    text = token.strip()
    if text.isdecimal() and text.isascii():
        return from_u64(int(text))
    if text.lower().startswith("0x"):
        return parse_hex(text)
    raise TokenError("expected 0x and 16 hex digits, or an unsigned 64-bit decimal integer")


def _summary(communities: Sequence[Community]) -> dict[str, object]:
    decoded = decode_metrics(communities)
    metrics = decoded.metrics
    bandwidth = decoded.link_bandwidth
    return {"kind": "summary", "metrics": dict(metrics.values),
            "flags": [_flag_name(flag) for flag in StateFlag if flag & metrics.flags],
            "flag_bits": int(metrics.flags), "version": metrics.version, "problems": list(decoded.problems),
            "unknown": ["0x" + community.pack().hex() for community in decoded.unknown],
            "link_bandwidth": None if bandwidth is None else bandwidth.bytes_per_second}


# ------------------------------------------------------------------ tokens


def _collect(tokens: Sequence[str], read: Callable[[str], object]) -> list[str]:
    """Apply ``read`` to each token; one message per bad token, naming it."""
    errors = []
    for token in tokens:
        try:
            read(token)
        except (TokenError, WireError) as exc:
            errors.append(f"{token}: {_without_prefix(str(exc), token)}")
    return errors


def _without_prefix(message: str, token: str) -> str:
    """Drop a leading ``name: `` or ``'token': `` that repeats what the caller prints first."""
    name = token.partition("=")[0]
    return message.removeprefix(f"{token!r}: ").removeprefix(f"{name}: ")


def _fail(command: str, errors: Sequence[str]) -> int:
    for error in errors:
        print(f"dyncast wire {command}: {error}", file=sys.stderr)
    return BAD_INPUT


def _split(token: str, shape: str) -> tuple[str, str]:
    name, separator, text = token.partition("=")
    if not separator or not name or not text:
        raise TokenError(f"expected {shape}")
    return name.strip(), text.strip()


def _parse_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise TokenError("not a number") from None
    if not math.isfinite(value):
        raise TokenError("not a finite number")
    return value


def _parse_int(text: str, *, base: int = 10) -> int:
    try:
        return int(text.strip(), base)
    except ValueError:
        raise TokenError("not an integer") from None


def _parse_uint32(text: str) -> int:
    value = _parse_int(text)
    if not 0 <= value <= 0xFFFFFFFF:
        raise TokenError("must be 0-4294967295 (32 bits)")
    return value


def _parse_octet(text: str) -> int:
    value = _parse_int(text, base=0)
    if not 0 <= value <= 0xFF:
        raise TokenError("the type must be one octet (0x00-0xff)")
    return value


def _parse_flags(text: str) -> StateFlag:
    flags = StateFlag.NONE
    for part in text.split(","):
        flags |= _lookup(part.strip().lower(), _FLAGS, "state flag")
    return flags


def _parse_source(text: str) -> Source:
    return _lookup(text.strip().lower(), {source.name.lower(): source for source in Source}, "source")


def _lookup(name: str, table: dict[str, _T], kind: str) -> _T:
    if name not in table:
        raise TokenError(f"unknown {kind} {name!r} (known: {', '.join(table)})")
    return table[name]


def _flag_name(flag: StateFlag) -> str:
    return (flag.name or f"{int(flag):#x}").lower().replace("_", "-")


_FLAGS: dict[str, StateFlag] = {_flag_name(flag): flag for flag in StateFlag} | {"none": StateFlag.NONE}
