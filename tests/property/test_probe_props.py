"""Properties of the probe statistics, packet codec, schedule and rate limiter."""

from __future__ import annotations

import ipaddress
import itertools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.probe.packet import Kind, ProbePacket, parse_echoed, reply_for
from dyncast_bgp.probe.ratelimit import RateLimits, SourceLimiter
from dyncast_bgp.probe.schedule import ProbeSchedule
from dyncast_bgp.probe.window import PathWindow, loss_peak_of

# an outcome: RTT in ns, or None for a loss
outcomes = st.lists(st.one_of(st.none(), st.integers(0, 5_000_000_000)), max_size=120)
sizes = st.integers(1, 40)
afters = st.integers(1, 10)


def run(size: int, after: int, sub: int | None, values: list[int | None]) -> PathWindow:
    window = PathWindow(size, after, sub)
    for seq, rtt in enumerate(values, start=1):
        window.record(seq, rtt)
    return window


@settings(max_examples=400)
@given(sizes, afters, outcomes, st.data())
def test_window_matches_its_definition(size: int, after: int, values: list[int | None], data: st.DataObject) -> None:
    sub = data.draw(st.one_of(st.none(), st.integers(1, size)))
    window = run(size, after, sub, values)
    metrics = window.metrics()
    kept = values[-size:] if values else []
    rtts = [v for v in kept if v is not None]
    assert window.samples() == kept
    if not kept:
        assert metrics.loss_mean is None and metrics.loss_peak is None
    else:
        assert metrics.loss_mean is not None and metrics.loss_peak is not None
        assert 0.0 <= metrics.loss_mean <= 1.0 and 0.0 <= metrics.loss_peak <= 1.0
        assert metrics.loss_peak >= metrics.loss_mean - 1e-12
        assert math.isclose(metrics.loss_mean, (len(kept) - len(rtts)) / len(kept))
        reference = loss_peak_of([v is None for v in kept], window.sub_window)
        assert reference is not None and math.isclose(metrics.loss_peak, reference)
    if rtts:
        assert metrics.rtt_mean_us is not None and metrics.rtt_peak_us is not None
        assert math.isclose(metrics.rtt_mean_us, sum(rtts) / len(rtts) / 1000.0)
        assert metrics.rtt_peak_us == max(rtts) / 1000.0
        assert metrics.rtt_peak_us >= metrics.rtt_mean_us - 1e-9
    else:
        assert metrics.rtt_mean_us is None and metrics.rtt_peak_us is None


@settings(max_examples=300)
@given(sizes, afters, outcomes)
def test_unreachable_exactly_after_n_consecutive_losses(size: int, after: int, values: list[int | None]) -> None:
    window = PathWindow(size, after)
    in_row = 0
    for seq, rtt in enumerate(values, start=1):
        window.record(seq, rtt)
        in_row = 0 if rtt is not None else in_row + 1
        assert window.consecutive_losses == in_row
        assert window.reachable is (in_row < after)
        assert window.metrics().reachable is window.reachable


@settings(max_examples=200)
@given(sizes, afters, outcomes, st.integers(0, 10_000_000))
def test_one_reply_restores_reachability(size: int, after: int, values: list[int | None], rtt: int) -> None:
    window = run(size, after, None, [*values, *([None] * after)])
    assert not window.reachable
    window.record(len(values) + after + 1, rtt)
    assert window.reachable and window.metrics().reachable


packets = st.builds(ProbePacket, kind=st.sampled_from(list(Kind)), token=st.integers(0, 2**32 - 1),
                    sequence=st.integers(0, 2**32 - 1), sent_ns=st.integers(0, 2**64 - 1),
                    flags=st.integers(0, 0xFFFF), padding=st.binary(max_size=200))


@given(packets)
def test_packet_round_trips(packet: ProbePacket) -> None:
    data = packet.pack()
    assert ProbePacket.unpack(data) == packet
    assert ProbePacket.unpack(data).pack() == data
    if packet.kind is Kind.REQUEST:
        reply = reply_for(data)
        assert len(reply) == len(data)
        assert parse_echoed(reply, Kind.REPLY) == (packet.token, packet.sequence, packet.sent_ns)


@settings(max_examples=200)
@given(st.floats(1.0, 500.0), st.floats(1.0, 50.0),
       st.lists(st.tuples(st.floats(0.0, 0.05), st.sampled_from(["a", "b", "c"])), max_size=400))
def test_limiter_never_exceeds_rate_plus_burst(rate: float, burst: float, arrivals: list[tuple[float, str]]) -> None:
    limits = RateLimits(per_source_rate=rate, per_source_burst=burst, total_rate=1e9, total_burst=1e9)
    limiter = SourceLimiter(limits, 0.0)
    now = 0.0
    allowed: dict[str, int] = {}
    for gap, source in arrivals:
        now += gap
        if limiter.allow(source, now):
            allowed[source] = allowed.get(source, 0) + 1
    for count in allowed.values():
        assert count <= math.floor(burst + rate * now) + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 300), st.floats(0.05, 2.0), st.floats(0.0, 1.0), st.floats(0.0, 100.0))
def test_schedule_probes_every_target_once_per_interval(count: int, interval: float, offset: float,
                                                        start: float) -> None:
    schedule = ProbeSchedule(interval=interval, timeout=interval, window=5, unreachable_after=3, start=start,
                             phase_offset=offset)
    addresses = [ipaddress.ip_address(0x0A000000 + i) for i in range(count)]
    schedule.set_targets(addresses, start)
    sends: dict[object, list[float]] = {}
    now, step = start, interval / 7
    while now < start + 4 * interval:
        for slot in schedule.due(now):
            sends.setdefault(slot.address, []).append(now)
        now += step
    assert set(sends) == set(addresses)
    for times in sends.values():
        assert 3 <= len(times) <= 5
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(interval - step - 1e-9 <= gap <= interval + step + 1e-9 for gap in gaps)
