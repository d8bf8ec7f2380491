"""Renderer details the golden files do not spell out: drained services, comments, chunks, ordering."""

from __future__ import annotations

import ipaddress

from dyncast_bgp.dataplane.desired import Affinity
from dyncast_bgp.dataplane.layout import Layout, prefix_token, service_chain, tunnel_name
from dyncast_bgp.dataplane.nft import (
    COMMENT_MAX,
    add_elements,
    base_rules,
    registry_comment,
    render_transaction,
    service_rules,
)
from dyncast_bgp.dataplane.plan import diff
from dyncast_bgp.dataplane.state import AudienceEntry, InstanceEntry, KernelState, ServiceEntry
from dyncast_bgp.model import InstanceKey, ServiceId

LAYOUT = Layout()
V6 = ServiceId.parse("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff/128")


def entry(service: str, *buckets: int, affinity: Affinity = Affinity.FLOW) -> ServiceEntry:
    sid = ServiceId.parse(service)
    instances = tuple(InstanceEntry(InstanceKey(sid, ipaddress.ip_address(f"192.0.2.{i + 1}")), i + 1, b)
                      for i, b in enumerate(buckets))
    return ServiceEntry(sid, affinity, 30_000, instances, str(sid))


def test_drained_flow_service_has_no_draw_and_no_pick() -> None:
    rules = service_rules(entry("203.0.113.10/32", 0, 0), LAYOUT)
    assert len(rules) == 1 and rules[0].startswith("counter comment")


def test_drained_client_service_still_honours_pinned_clients() -> None:
    rules = service_rules(entry("203.0.113.10/32", 0, 0, affinity=Affinity.CLIENT), LAYOUT)
    assert len(rules) == 2 and "map @dc_aff4" in rules[1]


def test_picks_cover_the_draw_in_order_and_the_last_takes_the_rest() -> None:
    rules = service_rules(entry("203.0.113.10/32", 2500, 0, 7500), LAYOUT)
    picks = [rule for rule in rules if "dc pick" in rule]
    assert picks[0].startswith("meta mark < 2500 ") and picks[0].endswith('return comment "dc pick 0x44430001 0-2499"')
    assert picks[1].startswith("counter meta mark set 0x44430003") and " return" not in picks[1]


def test_client_picks_remember_the_choice_with_the_service_timeout() -> None:
    rules = service_rules(entry("2001:db8:d::10/128", 10000, affinity=Affinity.CLIENT), LAYOUT)
    assert "update @dc_aff6 { ip6 saddr . ip6 daddr timeout 30000ms : 0x44430001 }" in rules[-1]


def test_audience_draws_first_and_returns_for_its_clients_only() -> None:
    base = entry("203.0.113.10/32", 10000, 0, affinity=Affinity.CLIENT)
    rules = service_rules(base._replace(audience=AudienceEntry(("10.9.0.0/16", "198.51.100.128/25"), (7000, 3000))),
                          LAYOUT)
    match = "ip saddr { 10.9.0.0/16, 198.51.100.128/25 }"
    assert "map @dc_aff4" in rules[1]  # a pinned client keeps its instance before any draw
    audience = [rule for rule in rules if "dc audience" in rule]
    assert [rule.startswith(match) for rule in audience] == [True] * 3
    assert audience[0].endswith('comment "dc audience draw"')
    assert " meta mark < 7000 " in audience[1]
    assert audience[1].endswith('return comment "dc audience pick 0x44430001 0-6999"')
    assert " meta mark <" not in audience[2]
    assert audience[2].endswith('return comment "dc audience pick 0x44430002 7000-9999"')
    assert "update @dc_aff4" in audience[2]  # the audience's pick is remembered like any other
    assert rules.index(audience[-1]) < rules.index(next(r for r in rules if r.endswith('"dc draw"')))
    nothing = service_rules(base._replace(audience=AudienceEntry(("10.9.0.0/16",), (0, 0))), LAYOUT)
    assert not [rule for rule in nothing if "dc audience" in rule]  # an empty audience draw falls through


def test_base_chain_copies_only_our_marks() -> None:
    assert base_rules(LAYOUT)[0] == "ct mark and 0xffff0000 == 0x44430000 meta mark set ct mark return"


def test_registry_comment_always_fits_and_drops_a_name_that_does_not() -> None:
    longest = InstanceKey(V6, ipaddress.ip_address("2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"), 0xFFFFFFFF)
    assert len(registry_comment(InstanceEntry(longest, 1, 0, None, "x" * 64))) <= COMMENT_MAX
    assert registry_comment(InstanceEntry(longest, 1, 0, None, "x" * 64)) == str(longest)
    short = InstanceKey(ServiceId.parse("203.0.113.10/32"), ipaddress.ip_address("192.0.2.1"))
    assert registry_comment(InstanceEntry(short, 1, 0, None, "site-a")) == "203.0.113.10/32@192.0.2.1 site-a"


def test_elements_are_chunked() -> None:
    lines = add_elements("dc_host4", [f"10.0.0.{i} : goto c" for i in range(250)], 100)
    assert len(lines) == 3 and lines[-1].count(",") == 49


def test_removal_deletes_dispatch_before_chain() -> None:
    before = KernelState(services={e.service: e for e in [entry("203.0.113.10/32", 10000)]}, table=True)
    text = render_transaction(diff(before, KernelState(table=True)), LAYOUT)
    assert text.index("delete element inet dyncast dc_host4") < text.index("delete chain inet dyncast dc_s_")


def test_names_derive_from_prefixes_and_tunnel_parameters() -> None:
    assert prefix_token(V6) == "2001_db8_ffff_ffff_ffff_ffff_ffff_ffff_128"
    assert service_chain(ServiceId.parse("198.51.100.0/24")) == "dc_s_198_51_100_0_24"
    one = tunnel_name("gre", ipaddress.ip_address("192.0.2.1"), ipaddress.ip_address("192.0.2.2"), None)
    assert len(one) <= 15 and one != tunnel_name("ipip", ipaddress.ip_address("192.0.2.1"),
                                                  ipaddress.ip_address("192.0.2.2"), None)
