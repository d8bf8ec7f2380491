"""The hot loop's shortcuts give exactly what the plain code gives.

Each oracle here is the plain version written out in this file (as the code read before the shortcuts),
so that a shortcut drifting from it fails: ``screen`` and ``implausible`` (trust), ``state_from_flags``,
the trusted constructors of ``MetricsView`` and ``ComputeMetrics``, the written-out ``__init__`` of
``Candidate``, ``ServiceTarget.reweighted``, the hash and order ``InstanceKey`` and
``ServiceId`` compute once, and ``KeyedValues.same_as`` (the router's "did the decision change").
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import ipaddress
import math
import os
import pickle
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.dataplane.desired import Affinity, Audience, Encap, Forwarding, InstanceTarget, ServiceTarget
from dyncast_bgp.dataplane.plan import compare_targets
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.trust import (
    METRICS_CLAMPED,
    METRICS_IMPLAUSIBLE,
    PLAUSIBLE_MAX,
    Rule,
    Screened,
    clamp,
    implausible,
    screen,
)
from dyncast_bgp.engine.views import KeyedValues
from dyncast_bgp.model import (
    ComputeMetrics,
    InstanceKey,
    InstanceState,
    MetricsView,
    ServiceId,
    StateFlag,
    state_flags,
    state_from_flags,
)
from dyncast_bgp.wire.fastdecode import decode_raw
from dyncast_bgp.wire.metrics import encode_metrics

# ------------------------------------------------------------------ oracles


def plain_implausible(values: Mapping[str, float]) -> str | None:
    for name, bound in PLAUSIBLE_MAX.items():
        value = values.get(name)
        if value is not None and value > bound:
            return f"{name} {value:g} above the plausible {bound:g}"
    if values.get("capacity") == 0.0 and (values.get("active_sessions", 0.0) > 0.0
                                         or values.get("queued_requests", 0.0) > 0.0):
        return "capacity 0 while reporting sessions"
    return None


def plain_screen(metrics: ComputeMetrics, rule: Rule) -> Screened:
    values = metrics.values
    if not values:
        return Screened(metrics)
    if rule.metrics == "ignored":
        return Screened(ComputeMetrics(flags=metrics.flags, version=metrics.version))
    why = plain_implausible(values)
    if why is not None:
        return Screened(ComputeMetrics(flags=metrics.flags, version=metrics.version),
                        ((METRICS_IMPLAUSIBLE, why + "; metrics discarded"),))
    if rule.metrics == "clamped":
        clamped, notes = clamp(values, rule)
        if notes:
            adjusted = ComputeMetrics(MetricsView(clamped), metrics.flags, metrics.version)
            return Screened(adjusted, ((METRICS_CLAMPED, "; ".join(notes)),))
    return Screened(metrics)


def plain_state(flags: StateFlag, *, healthy: bool = True) -> InstanceState:
    if not healthy:
        return InstanceState.DOWN
    if flags & StateFlag.DRAINED:
        return InstanceState.DRAINED
    if flags & StateFlag.DRAINING:
        return InstanceState.DRAINING
    if flags & StateFlag.CANARY:
        return InstanceState.CANARY
    return InstanceState.ACTIVE


# ------------------------------------------------------------------ strategies

NAMES = ["capacity", "active_sessions", "queued_requests", "service_delay", "cpu_utilization",
         "memory_utilization", "gpu_utilization", "compute_score", "overall_score", "error_rate"]
edge = st.sampled_from([0.0, -0.0, 1.0, 1e8, math.nextafter(1e8, math.inf), 3.6e9, 4e9, 1e300, -5.0])
value = st.one_of(edge, st.floats(-1e10, 1e10), st.integers(0, 2_000_000_000).map(float))
values_dict = st.dictionaries(st.sampled_from(NAMES), value, max_size=len(NAMES))
rules = st.builds(Rule, label=st.just("r"), metrics=st.sampled_from(["trusted", "clamped", "ignored"]),
                  min_utilization=st.sampled_from([0.0, 5.0, 50.0]),
                  max_capacity=st.sampled_from([None, 0.0, 150.0, 1e9]),
                  max_score=st.sampled_from([0.0, 5.0, 10.0]))
flags = st.sampled_from(list(StateFlag)) | st.integers(0, 0xFFFFFFFF).map(StateFlag)


# ------------------------------------------------------------------ trust


@settings(max_examples=1000)
@given(values_dict, flags, st.one_of(st.none(), st.integers(0, 9)), rules)
def test_screen_equals_the_plain_screen(values: dict[str, float], flag: StateFlag, version: int | None,
                                        rule: Rule) -> None:
    metrics = ComputeMetrics(MetricsView(values), flag, version)
    screened, plain = screen(metrics, rule), plain_screen(metrics, rule)
    assert screened == plain and repr(screened) == repr(plain)
    assert (screened.metrics is metrics) == (plain.metrics is metrics)  # kept as announced: the same object


@given(values_dict, rules)
def test_screen_of_a_hand_built_mapping(values: dict[str, float], rule: Rule) -> None:
    """Metrics built by hand around a plain dict (not a MetricsView) are screened as before too."""
    metrics = ComputeMetrics(values)  # type: ignore[arg-type]
    assert screen(metrics, rule) == plain_screen(metrics, rule)


@given(values_dict)
def test_implausible_equals_the_plain_check(values: dict[str, float]) -> None:
    expected = plain_implausible(values)
    assert implausible(values) == expected
    assert implausible(MetricsView(values)) == expected


# ------------------------------------------------------------------ state flags


@pytest.mark.parametrize("value", range(64))
def test_state_from_flags_for_every_combination(value: int) -> None:
    flag = StateFlag(value)
    assert state_from_flags(flag) is plain_state(flag)
    assert state_from_flags(flag, healthy=False) is InstanceState.DOWN


@given(flags, st.booleans())
def test_state_from_flags_for_any_value(flag: StateFlag, healthy: bool) -> None:
    assert state_from_flags(flag, healthy=healthy) is plain_state(flag, healthy=healthy)


# ------------------------------------------------------------------ trusted constructors


@given(st.dictionaries(st.sampled_from(NAMES), st.floats(allow_nan=False, allow_infinity=False)))
def test_trusted_view_equals_the_checked_one(values: dict[str, float]) -> None:
    checked = MetricsView(values)
    trusted = MetricsView.trusted(dict(sorted(values.items())))
    assert trusted == checked and list(trusted.items()) == list(checked.items())
    assert hash(trusted) == hash(checked) and repr(trusted) == repr(checked)


@given(values_dict.map(MetricsView), flags, st.one_of(st.none(), st.integers(0, 9)))
def test_trusted_metrics_equal_the_constructed_ones(values: MetricsView, flag: StateFlag,
                                                    version: int | None) -> None:
    trusted = ComputeMetrics.trusted(values, flag, version)
    built = ComputeMetrics(values, flag, version)
    assert trusted == built and hash(trusted) == hash(built) and repr(trusted) == repr(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        trusted.version = 1  # type: ignore[misc]


@pytest.mark.parametrize("cls", [Candidate])
def test_written_out_initialisers_set_every_field_in_order(cls: Any) -> None:
    """Candidate writes its __init__ out (slot setters): a field added must be added there too; this names
    the one missed."""
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(inspect.signature(cls.__init__).parameters)[1:] == names
    expected: list[Any] = [object() for _ in names]
    if "weight" in names:
        expected[names.index("weight")] = 0.5  # checked: a number
    made = cls(*expected)
    got = [getattr(made, name) for name in names]
    assert all(a is b for a, b in zip(got, expected, strict=True)), dict(zip(names, got, strict=True))
    assert dataclasses.replace(made, name="x").name == "x" and made == cls(*expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(made, "name", "y")  # noqa: B010 (the frozen dataclass's guard, whatever the type checker knows)


@given(st.one_of(st.floats(), st.integers(-3, 3)))
def test_an_instance_target_takes_finite_weights_of_zero_or_more_only(weight: float) -> None:
    key = InstanceKey(ServiceId(ipaddress.ip_network("203.0.113.1/32")), ipaddress.ip_address("198.51.100.1"))
    forwarding = Forwarding(Encap.DIRECT, next_hop=key.binding)
    if math.isfinite(weight) and weight >= 0.0:
        assert InstanceTarget(key, weight, forwarding).weight == weight
    else:
        with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
            InstanceTarget(key, weight, forwarding)


target_weights = st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0, 5e-324])


@given(st.lists(st.tuples(st.integers(1, 2**32 - 2), target_weights, st.none() | st.text(max_size=3)), max_size=20,
                unique_by=lambda t: t[0]),
       st.sampled_from(list(Affinity)), st.floats(0.001, 1e6), st.booleans())
def test_reweighted_targets_equal_the_constructed_ones(rows: list[tuple[int, float, str | None]], affinity: Affinity,
                                                      timeout: float, audience: bool) -> None:
    """What the router builds for a new decision over the instances of the target before (reweighted) is what
    the checking constructors build from the same values, field by field: keys, forwardings and names kept,
    the new weights in order, the new affinity, no audience."""
    service = ServiceId(ipaddress.ip_network("203.0.113.7/32"))
    keys = [InstanceKey(service, ipaddress.IPv4Address(n)) for n, _, _ in rows]
    forwardings = [Forwarding(Encap.DIRECT, next_hop=key.binding) for key in keys]
    names = [name for _, _, name in rows]
    weights = [w for _, w, _ in rows]
    before = ServiceTarget(service, tuple(InstanceTarget(k, 0.0, f, n) for k, f, n in zip(keys, forwardings, names,
                                                                                          strict=True)),
                           audience=Audience((ipaddress.ip_network("192.0.2.0/24"),), {}) if audience else None)
    reweighted = ServiceTarget.reweighted(before, weights, affinity, timeout)
    plain = ServiceTarget(service, tuple(InstanceTarget(k, w, f, n) for k, w, f, n in zip(keys, weights, forwardings,
                                                                                         names, strict=True)),
                          affinity, timeout)
    assert reweighted == plain and repr(reweighted) == repr(plain) and hash(reweighted) == hash(plain)
    again = ServiceTarget.reweighted(before, weights, affinity, timeout)  # held as columns only, both
    assert again == reweighted and again.columns.keys is reweighted.columns.keys
    assert [type(t) for t in reweighted.instances] == [InstanceTarget] * len(rows)
    assert [tuple(t) for t in reweighted.instances] == list(zip(keys, weights, forwardings, names, strict=True))
    assert reweighted.columns == plain.columns and reweighted.size == plain.size == len(rows)
    assert pickle.loads(pickle.dumps(again)) == plain and copy.deepcopy(again) == plain
    assert reweighted.weights == plain.weights
    # the dataplane's comparison: by shared columns (at once) as by the instances, one by one
    for new, old in ((again, before), (plain, before), (again, plain), (again, reweighted), (plain, plain)):
        assert compare_targets(new, old) == compare_targets(ServiceTarget(*_fields(new)), ServiceTarget(*_fields(old)))
    with pytest.raises(AttributeError, match="immutable"):
        again.affinity = Affinity.FLOW


def _fields(target: ServiceTarget) -> tuple[Any, ...]:
    return target.service, target.instances, target.affinity, target.affinity_timeout, target.audience


def test_a_reweighted_target_keeps_the_checks_it_skips_from_being_bypassed() -> None:
    service = ServiceId(ipaddress.ip_network("203.0.113.7/32"))
    keys = [InstanceKey(service, ipaddress.ip_address(f"198.51.100.{n}")) for n in (1, 2)]
    before = ServiceTarget(service, tuple(InstanceTarget(key, 0.5, Forwarding(Encap.DIRECT, next_hop=key.binding))
                                          for key in keys))
    with pytest.raises(ValueError, match="1 weights for 2 instances"):
        ServiceTarget.reweighted(before, [1.0], Affinity.FLOW, 1.0)
    with pytest.raises(ValueError, match="3 weights for 2 instances"):
        ServiceTarget.reweighted(before, [0.5, 0.5, 0.0], Affinity.FLOW, 1.0)
    with pytest.raises(ValueError, match="affinity_timeout"):
        ServiceTarget.reweighted(before, [0.5, 0.5], Affinity.FLOW, math.nan)


def test_an_instance_target_is_checked_when_replaced_copied_and_unpickled() -> None:
    key = InstanceKey(ServiceId(ipaddress.ip_network("203.0.113.1/32")), ipaddress.ip_address("198.51.100.1"))
    target = InstanceTarget(key, 0.25, Forwarding(Encap.DIRECT, next_hop=key.binding), "a")
    assert target._replace(weight=0.5) == InstanceTarget(key, 0.5, target.forwarding, "a")
    assert target._replace(name=None).name is None and target._replace().weight == 0.25
    with pytest.raises(ValueError, match="weight must be"):
        target._replace(weight=-1.0)
    with pytest.raises(TypeError):
        target._replace(colour="red")
    assert pickle.loads(pickle.dumps(target)) == target and copy.deepcopy(target) == target
    with pytest.raises(AttributeError):
        target.weight = 1.0  # type: ignore[misc]
    assert repr(target).startswith("InstanceTarget(key=")


# ------------------------------------------------------------------ keys and decisions' mappings

addresses = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                      st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
services = st.one_of(st.integers(0, 2**32 - 1).map(lambda n: ServiceId(ipaddress.IPv4Network((n, 32)))),
                     st.integers(0, 2**128 - 1).map(lambda n: ServiceId(ipaddress.IPv6Network((n, 128)))))
instance_keys = st.builds(InstanceKey, services, addresses, st.integers(0, 2**32 - 1))


def plain_order(key: InstanceKey) -> tuple[tuple[int, int, int], int, int, int]:
    prefix = key.service.prefix
    return ((prefix.version, int(prefix.network_address), prefix.prefixlen), key.binding.version,
            int(key.binding), key.path_id)


@given(instance_keys, instance_keys)
def test_instance_keys_hash_and_order_as_their_fields_do(a: InstanceKey, b: InstanceKey) -> None:
    twin = InstanceKey(ServiceId(a.service.prefix), type(a.binding)(int(a.binding)), a.path_id)  # equal, not same
    assert twin == a and hash(twin) == hash(a) and twin.sort_key == a.sort_key
    assert a.sort_key == plain_order(a) and a.service.sort_key == plain_order(a)[0]
    assert (a < b) == (plain_order(a) < plain_order(b)) and (a == b) == (plain_order(a) == plain_order(b))
    assert dataclasses.replace(a, path_id=b.path_id).sort_key == (*plain_order(a)[:3], b.path_id)


any_services = st.builds(lambda version, n, length: ServiceId(
    (ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network)(
        (n % (1 << (32 if version == 4 else 128)), length % (33 if version == 4 else 129)), strict=False)),
    st.sampled_from([4, 6]), st.integers(0, 2**128 - 1), st.integers(0, 128))


@given(any_services, any_services)
def test_a_service_orders_by_its_int_as_by_its_tuple(a: ServiceId, b: ServiceId) -> None:
    """``order`` (one int, what the engine sorts a round of slices by) sorts as ``sort_key`` does, any lengths."""
    assert (a.order < b.order) == (a.sort_key < b.sort_key) and (a.order == b.order) == (a.sort_key == b.sort_key)
    assert pickle.loads(pickle.dumps(a)).order == a.order and copy.copy(a).order == a.order


@given(st.lists(instance_keys, unique=True, max_size=6), st.data())
def test_keyed_values_same_as_equals_comparing_dicts(keys: list[InstanceKey], data: st.DataObject) -> None:
    weights = st.sampled_from([0.0, 0.25, 0.5, 1.0])
    first = dict(zip(keys, data.draw(st.lists(weights, min_size=len(keys), max_size=len(keys))), strict=True))
    other_keys = data.draw(st.one_of(st.just(keys), st.permutations(keys), st.lists(instance_keys, unique=True,
                                                                                   max_size=6)))
    second = dict(zip(other_keys, data.draw(st.lists(weights, min_size=len(other_keys), max_size=len(other_keys))),
                      strict=True))
    if data.draw(st.booleans()):
        second = dict(first)  # equal content, often in the same order
    as_views = KeyedValues(list(first), list(first.values()))
    for other in (KeyedValues(list(second), list(second.values())), second):
        assert as_views.same_as(other) == (first == second)


def test_keyed_values_same_as_compares_contents_whatever_the_sequence_type() -> None:
    keys = [1, 2]
    assert KeyedValues(keys, [0.5, 0.5]).same_as(KeyedValues(keys, (0.5, 0.5)))
    assert not KeyedValues(keys, [0.5, 0.5]).same_as(KeyedValues(keys, (0.5, 0.25)))


def test_a_pickled_instance_key_hashes_anew_in_another_process() -> None:
    key = InstanceKey(ServiceId.parse("203.0.113.10/32"), ipaddress.ip_address("198.51.100.7"), 3)
    assert pickle.loads(pickle.dumps(key)) == key and copy.deepcopy(key) == key
    check = ("import pickle, sys, ipaddress\n"
             "from dyncast_bgp.model import InstanceKey, ServiceId\n"
             "key = pickle.loads(sys.stdin.buffer.read())\n"
             "fresh = InstanceKey(ServiceId.parse('203.0.113.10/32'), ipaddress.ip_address('198.51.100.7'), 3)\n"
             "assert hash(key) == hash(fresh) and key in {fresh} and key.sort_key == fresh.sort_key\n")
    for seed in ("1", "2"):  # string hashes differ between these processes and this one
        subprocess.run([sys.executable, "-c", check], input=pickle.dumps(key), check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=50))
def test_received_state_flags_never_grow_the_enum_table(values: list[int]) -> None:
    before = set(StateFlag._value2member_map_)
    for value in values:
        flags = state_flags(value)
        assert int(flags) == value and isinstance(flags, StateFlag)
        assert state_from_flags(flags) is plain_state(flags)
    assert set(StateFlag._value2member_map_) <= before | set(range(32))  # known bits only: 32 values at most


def test_decoding_ever_new_unknown_state_bits_keeps_the_enum_table_bounded() -> None:
    size = len(StateFlag._value2member_map_)
    for value in range(1 << 8, (1 << 8) + 300):
        raw = tuple(c.pack() for c in encode_metrics({"cpu_utilization": 50.0}))
        state = bytes(raw[-1][:4]) + value.to_bytes(4, "big")  # the state community, another value each time
        for decoded in (decode_raw((raw[0], state)), decode_raw((raw[0], state)), decode_raw((raw[0], state))):
            assert int(decoded.metrics.flags) == value
    assert len(StateFlag._value2member_map_) <= max(size, 32)
