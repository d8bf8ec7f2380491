"""Function names to D-SIDs: configured, named, or allocated from the pool the same way at every site."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.agent.monitoring import check_monitoring, normalise, parameter, to_wire_values
from dyncast_bgp.agent.registry import NameConflict, NameMapping, NameRegistry, hash_index
from dyncast_bgp.model import ServiceId

POOL = ipaddress.ip_network("203.0.113.0/28")
WEB = ServiceId.parse("203.0.113.10/32")


def registry(**names: str) -> NameRegistry:
    return NameRegistry(services={"web": WEB}, names={n: ServiceId.parse(d) for n, d in names.items()}, pool=POOL)


def test_config_then_names_then_pool() -> None:
    names = registry(dns="203.0.113.53/32")
    assert names.lookup("web") == NameMapping("web", WEB, "config")
    assert names.lookup("dns") == NameMapping("dns", ServiceId.parse("203.0.113.53/32"), "names")
    pooled = names.lookup("video")
    assert isinstance(pooled, NameMapping) and pooled.origin == "pool"
    assert pooled.service_id.prefix.subnet_of(POOL) and pooled.service_id.prefix.prefixlen == 32  # type: ignore[arg-type]


def test_allocation_probes_past_configured_addresses() -> None:
    start = hash_index("video", POOL.num_addresses)
    taken = f"{POOL.network_address + start}/32"
    names = registry(other=taken)
    pooled = names.lookup("video")
    assert isinstance(pooled, NameMapping)
    assert str(pooled.service_id) == f"{POOL.network_address + (start + 1) % 16}/32"


def test_a_full_pool_and_no_pool_are_refused() -> None:
    full = NameRegistry(services={}, names={f"n{i}": ServiceId.parse(f"192.0.2.{i}/32") for i in range(4)},
                        pool=ipaddress.ip_network("192.0.2.0/30"))
    assert isinstance(full.lookup("x"), NameConflict) and "full" in full.lookup("x").message  # type: ignore[union-attr]
    none = NameRegistry(services={}, names={}, pool=None)
    assert isinstance(none.lookup("x"), NameConflict)


def test_conflicts_are_detected_never_reused() -> None:
    names = registry()
    video = names.lookup("video")
    assert isinstance(video, NameMapping)
    clash = names.check("video", None, {video.service_id: "music"})  # another name got that address here
    assert isinstance(clash, NameConflict) and "music" in clash.message
    asked = names.check("web", ServiceId.parse("203.0.113.11/32"), {})
    assert isinstance(asked, NameConflict) and "203.0.113.10/32" in asked.message
    assert names.check("web", WEB, {WEB: "web"}) == NameMapping("web", WEB, "config")


def test_names_configured_against_the_config_are_reported() -> None:
    names = NameRegistry(services={"web": WEB}, names={"web": ServiceId.parse("203.0.113.11/32"), "api": WEB},
                         pool=None)
    messages = " | ".join(c.message for c in names.conflicts)
    assert "the config wins" in messages and "'api'" in messages
    assert names.lookup("web") == NameMapping("web", WEB, "config")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=30), st.sampled_from(["203.0.113.0/28", "2001:db8:5::/64", "10.0.0.0/8"]))
def test_allocation_is_a_pure_function_of_the_name_and_config(name: str, pool: str) -> None:
    network = ipaddress.ip_network(pool)
    one = NameRegistry(services={}, names={}, pool=network).lookup(name)
    two = NameRegistry(services={}, names={}, pool=network).lookup(name)
    assert one == two and isinstance(one, NameMapping)
    assert one.service_id.prefix.subnet_of(network)  # type: ignore[arg-type]


def test_monitoring_names_follow_etsi_table_and_wire_registry() -> None:
    assert normalise("Mean packet loss rate") == "mean_packet_loss_rate"
    assert check_monitoring(["CPU utilization", "cpu_utilization", "peak-latency"]) == ("cpu_utilization",
                                                                                       "peak_latency")
    assert parameter("mean throughput").measured_by == "router probes"
    assert to_wire_values({"memory utilization": 50, "active_sessions": 3}) == {"memory_utilization": 50,
                                                                                 "active_sessions": 3}
    try:
        parameter("warp")
    except ValueError as exc:
        assert "known:" in str(exc) and "cpu_utilization" in str(exc)
    else:
        raise AssertionError("an unknown parameter must be refused")
