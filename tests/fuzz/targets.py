"""The fuzz targets and their oracles, shared by the hypothesis tests, the corpus replay and fuzz/ (atheris).

Each target takes bytes (what a fuzzer mutates; the corpus files hold them as
they are), runs the code under test and returns a JSON-ready *outcome*: what
the input was turned into, or the error it was rejected with. The documented
contract is asserted inside (an ``AssertionError`` is a finding); any other
exception that escapes is a crash, a finding too.

- ``exabgp_json``: ``wire.exabgp_json.parse_line`` per line, the events into ``engine.owner.RouterEngine``.
  An event or ``ExabgpJsonError`` (message and excerpt); RIB and decision invariants after every line.
- ``community``: ``wire.community.decode``, ``wire.metrics.decode_metrics``, ``wire.fastdecode.decode_raw``,
  ``parse_hex``. Any 8 octets decode and pack back; other lengths raise ``WireError`` (discard); the
  fast path equals the general decoder.
- ``config``: ``config.loader.parse``. A ``Config`` or ``ConfigError`` whose every problem renders as
  ``file:line: path: message``.
- ``ctl``: ``ctl.protocol.LineFramer`` and ``handle_line``. A ``Request`` of a known verb or a
  ``RequestError`` naming ``request...``; the answer encodes as one JSON line.
- ``replay``: ``router.replay.replay``. A report; rejected lines counted; decisions are JSON.
"""

from __future__ import annotations

import io
import ipaddress
import json
import math
import re
from collections.abc import Callable
from typing import Any

from dyncast_bgp.agent import control
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import RouterConfig
from dyncast_bgp.ctl.protocol import LineFramer, Request, RequestError, encode, handle_line
from dyncast_bgp.engine.owner import RouterEngine
from dyncast_bgp.model import ServiceId
from dyncast_bgp.router.replay import replay
from dyncast_bgp.wire.community import LinkBandwidth, MetricCommunity, OpaqueCommunity, WireError, decode, parse_hex
from dyncast_bgp.wire.exabgp_json import (
    EndOfRib,
    Event,
    ExabgpJsonError,
    Ignored,
    Notification,
    PeerState,
    RouteUpdate,
    SessionState,
    Shutdown,
    parse_line,
)
from dyncast_bgp.wire.fastdecode import decode_raw
from dyncast_bgp.wire.metrics import decode_metrics

Outcome = Any
CONFIG_ORIGIN = "fuzz.yml"
ADDRESS_TYPES = (ipaddress.IPv4Address, ipaddress.IPv6Address)
NETWORK_TYPES = (ipaddress.IPv4Network, ipaddress.IPv6Network)


def text_of(data: bytes) -> str:
    """Bytes as the router reads them (UTF-8, undecodable bytes replaced)."""
    return data.decode("utf-8", errors="replace")


# ------------------------------------------------------------------ ExaBGP JSON -> RIB -> decisions


class RouterHarness:
    """A RouterEngine fed line by line, with the invariants checked after every line.

    Besides ``Rib.check_invariants`` (indexes agree with the paths), it holds a
    model of each peer's session: a peer whose last word was a ``down`` (and
    that announced nothing since) has no live path: with a stale time its paths
    are all stale, without one it has none. After ``step`` every decision's
    weights are finite, in [0, 1] and sum to 1 (or are empty), weights and
    exclusions are disjoint and of the decision's service, every instance in the
    RIB is weighted or excluded, and the probe targets are exactly the RIB's next hops.
    """

    def __init__(self, *, stale_time: float = 0.0) -> None:
        self.engine = RouterEngine(RouterConfig(), stale_time=stale_time)
        self.stale_time = stale_time
        self.down: set[str] = set()  # peers whose last event was a down
        self.now = 0.0

    def feed(self, line: str, *, advance: float = 1.0) -> Outcome:
        self.now += advance
        try:
            event = parse_line(line)
        except ExabgpJsonError as error:
            check_exabgp_error(error)
            return f"error: {error.message}"
        check_event(event)
        self.engine.on_event(event, self.now)
        self._track(event)
        self.check()
        self.engine.step(self.now)
        self.check()
        self.check_decisions()
        return summary(event)

    def _track(self, event: Event) -> None:
        if isinstance(event, PeerState):
            peer = str(event.peer)
            if event.state is SessionState.DOWN:
                self.down.add(peer)
        elif isinstance(event, RouteUpdate) and event.announced:
            self.down.discard(str(event.peer))

    def check(self) -> None:
        rib = self.engine.rib
        rib.check_invariants()
        for service in rib.services():
            for path in rib.paths(service):
                assert str(path.service.prefix) == path.key[1], f"path {path.key} under {path.service}"
                assert path.instance.service == service
                peer = path.key[0]
                if peer in self.down:
                    assert self.stale_time > 0, f"path {path.key} of down peer {peer} kept without a stale time"
                    assert path.stale_since is not None, f"live path {path.key} of down peer {peer}"
        assert len(rib) == sum(len(rib.paths(service)) for service in rib.services())

    def check_decisions(self) -> None:
        engine, rib = self.engine, self.engine.rib
        hops = {path.next_hop for service in rib.services() for path in rib.paths(service)}
        assert engine.bindings() == hops, "probe targets differ from the RIB's next hops"
        for outcome in engine.outcomes():
            decision = outcome.decision
            weights = dict(decision.weights)
            assert all(math.isfinite(w) and 0.0 <= w <= 1.0 + 1e-9 for w in weights.values()), weights
            assert not weights or math.isclose(sum(weights.values()), 1.0, abs_tol=1e-6), weights
            assert not weights.keys() & decision.excluded.keys(), "an instance both weighted and excluded"
            assert all(key.service == decision.service for key in (*weights, *decision.excluded))
        for service in rib.services():
            current = engine.outcome(service)
            assert current is not None, f"{service} has paths but no decision"
            seen = current.decision.weights.keys() | current.decision.excluded.keys()
            for path in rib.paths(service):
                assert path.instance in seen, f"{path.instance} neither weighted nor excluded"
        desired = engine.desired()
        for target in desired.services:
            assert all(math.isfinite(i.weight) for i in target.instances)

    def finish(self) -> None:
        """Let time run out (stale paths expire, lingering instances go) and check once more."""
        self.now += 10 * (self.stale_time + 400.0)
        self.engine.step(self.now)
        self.check()
        self.check_decisions()
        rib = self.engine.rib
        for service in rib.services():
            for path in rib.paths(service):
                assert path.stale_since is None, f"stale path {path.key} outlived its stale time"


def check_exabgp_error(error: ExabgpJsonError) -> None:
    assert isinstance(error.message, str) and error.message, "an ExabgpJsonError without a message"
    assert len(error.excerpt) <= 203, "excerpt longer than 200 characters"
    assert repr(error.excerpt) in str(error)


def check_event(event: Event) -> None:
    """The event is well typed (what the engine relies on)."""
    if isinstance(event, RouteUpdate):
        assert isinstance(event.peer, ADDRESS_TYPES)
        for route in event.announced:
            assert isinstance(route.prefix, NETWORK_TYPES) and isinstance(route.next_hop, ADDRESS_TYPES)
            assert 0 <= route.path_id < 1 << 32
            assert all(asn.__class__ is int and 0 <= asn < 1 << 32 for asn in route.as_path + route.as_set)
            assert route.med is None or (route.med.__class__ is int and 0 <= route.med < 1 << 32)
            assert route.local_pref is None or (route.local_pref.__class__ is int and 0 <= route.local_pref < 1 << 32)
            assert route.origin is None or route.origin.__class__ is str
            assert route.ext_raw.__class__ is bytes and len(route.ext_raw) % 8 == 0
            route.communities()  # any 8 octets decode
        for key in event.withdrawn:
            assert isinstance(key.prefix, NETWORK_TYPES) and 0 <= key.path_id < 1 << 32
    elif isinstance(event, EndOfRib):
        assert isinstance(event.peer, ADDRESS_TYPES) and event.family in ("ipv4 unicast", "ipv6 unicast")
    elif isinstance(event, PeerState):
        assert isinstance(event.peer, ADDRESS_TYPES) and isinstance(event.state, SessionState)
        assert event.reason is None or event.reason.__class__ is str
    elif isinstance(event, Notification):
        assert 0 <= event.code < 256 and 0 <= event.subcode < 256 and event.data.__class__ is bytes
    elif isinstance(event, Ignored):
        assert event.kind.__class__ is str and event.reason.__class__ is str
    else:
        assert isinstance(event, Shutdown), f"unexpected event {event!r}"


def summary(event: Event) -> Outcome:
    if isinstance(event, RouteUpdate):
        announced = sorted(f"{r.key} via {r.next_hop}" for r in event.announced)
        withdrawn = sorted(str(key) for key in event.withdrawn)
        return {"update": {"peer": str(event.peer), "announced": _few(announced), "withdrawn": _few(withdrawn)}}
    if isinstance(event, PeerState):
        return {"state": str(event.state), "peer": str(event.peer)}
    if isinstance(event, EndOfRib):
        return {"eor": event.family, "peer": str(event.peer)}
    if isinstance(event, Notification):
        return {"notification": [event.code, event.subcode], "peer": str(event.peer)}
    if isinstance(event, Ignored):
        return {"ignored": event.kind}
    return {"shutdown": True}


def _few(items: list[str], limit: int = 5) -> list[str]:
    return items if len(items) <= limit else [*items[:limit], f"... {len(items)} in all"]


def exabgp_json(data: bytes) -> Outcome:
    """Every line of ``data`` into one router (stale time 30 s), then time runs out."""
    harness = RouterHarness(stale_time=30.0)
    outcomes = [harness.feed(line) for line in text_of(data).split("\n") if line.strip()]
    harness.finish()
    return outcomes


# ------------------------------------------------------------------ communities


def community(data: bytes) -> Outcome:
    """``data`` as 8-octet communities of one route (a short tail is decoded alone, and must be refused).

    A file that starts with ``0x`` is text instead: whitespace-separated tokens for ``parse_hex``.
    """
    if data.startswith(b"0x"):
        return _hex_tokens(text_of(data))
    whole = len(data) - len(data) % 8
    raws = [data[i:i + 8] for i in range(0, whole, 8)]
    outcome: dict[str, Any] = {}
    if whole != len(data):
        try:
            decode(data[whole:])
        except WireError as error:
            assert error.action == "discard" and "8 octets" in str(error)
            outcome["tail"] = str(error)
        else:
            raise AssertionError(f"{len(data) - whole} octets decoded as a community")
    decoded = []
    for raw in raws:
        item = decode(raw)
        assert isinstance(item, MetricCommunity | LinkBandwidth | OpaqueCommunity)
        assert item.pack() == raw, "decode/pack does not round-trip"
        assert decode(item.pack()) == item
        item.describe()
        decoded.append(item)
    general = decode_metrics(decoded)
    fast = decode_raw(raws)
    assert fast == general, "fast path differs from the general decoder"
    assert all(math.isfinite(v) and v >= 0 for v in general.metrics.values.values())
    outcome["metrics"] = {name: round(value, 6) for name, value in sorted(general.metrics.values.items())}
    outcome["flags"] = int(general.metrics.flags)
    outcome["version"] = general.metrics.version
    outcome["problems"] = list(general.problems)
    return outcome


def _hex_tokens(text: str) -> Outcome:
    results = []
    for token in text.split():
        try:
            raw = parse_hex(token)
        except WireError as error:
            assert repr(token) in str(error) or token in str(error), "the error does not name the token"
            results.append(f"error: {error}")
            continue
        assert len(raw) == 8
        results.append(raw.hex())
    return results


# ------------------------------------------------------------------ config


def config(data: bytes) -> Outcome:
    """The YAML text into ``parse``: a Config, or ConfigError with ``fuzz.yml:LINE: path: message`` problems."""
    try:
        parsed = parse(text_of(data), CONFIG_ORIGIN)
    except ConfigError as error:
        check_config_error(error, text_of(data))
        return [problem.render(CONFIG_ORIGIN) for problem in error.problems]
    return {"ok": {"services": len(parsed.services), "neighbors": len(parsed.bgp.neighbors)}}


_YAML_BREAKS = re.compile("\r\n|[\r\n\x85\u2028\u2029]")


def check_config_error(error: ConfigError, text: str) -> None:
    assert error.problems, "a ConfigError without problems"
    lines = len(_YAML_BREAKS.split(text))  # YAML counts lines by its own breaks (so does every mark)
    for problem in error.problems:
        assert problem.line is not None, f"no line number: {problem}"
        assert 1 <= problem.line <= lines, f"line {problem.line} beyond the text's {lines} lines"
        rendered = problem.render(CONFIG_ORIGIN)
        assert rendered.startswith(f"{CONFIG_ORIGIN}:{problem.line}: "), rendered
        assert problem.message, rendered
    assert str(error) == "\n".join(problem.render(CONFIG_ORIGIN) for problem in error.problems)


# ------------------------------------------------------------------ ctl requests

CTL_VERBS = control.VERBS


def ctl(data: bytes) -> Outcome:
    """``data`` as a byte stream on a control connection: framed, every line checked and answered."""
    framer = LineFramer()
    items = framer.feed(data)
    items += framer.finish()
    outcomes: list[Outcome] = []
    for item in items:
        result = handle_line(item, CTL_VERBS)
        if isinstance(result, RequestError):
            assert result.message.startswith("request"), f"error does not say where: {result.message}"
            answer = encode(result.response())
            outcomes.append(f"error: {result.message}")
        else:
            assert isinstance(result, Request) and result.verb in CTL_VERBS
            spec = CTL_VERBS[result.verb]
            assert set(result.args) <= set(spec.fields)
            answer = result.to_json().encode()
            outcomes.append({"verb": result.verb, **result.args})
        assert answer.endswith(b"\n") and answer.count(b"\n") == 1
        json.loads(answer)
    return outcomes


# ------------------------------------------------------------------ replay


def replay_lines(data: bytes) -> Outcome:
    """``dyncast router --replay`` on ``data``: a report, decisions as JSON lines."""
    out = io.StringIO()
    report = replay(text_of(data).splitlines(), RouterConfig(), out, stale_time=30.0)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert report.decisions == len(lines)
    assert report.rejected == len(report.problems) <= report.lines
    for line in lines:
        ServiceId.parse(line["service"])
        assert not line["weights"] or math.isclose(sum(line["weights"].values()), 1.0, abs_tol=1e-5)
    return {"lines": report.lines, "rejected": report.rejected, "decisions": report.decisions}


TARGETS: dict[str, Callable[[bytes], Outcome]] = {
    "exabgp_json": exabgp_json,
    "community": community,
    "config": config,
    "ctl": ctl,
    "replay": replay_lines,
}
