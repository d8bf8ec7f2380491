"""The Linux backend against a fake kernel that checks invariants (tests/unit/test_dataplane_fake.py)."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from dyncast_bgp.dataplane.desired import (
    DataplaneError,
    DataplaneInputError,
    DesiredState,
    Encap,
    Forwarding,
    InstanceTarget,
    ServiceTarget,
)
from dyncast_bgp.dataplane.linux import LinuxDataplane
from dyncast_bgp.model import InstanceKey, ServiceId
from tests.unit.test_dataplane_fake import FakeKernel

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dataplane"
S1, S2 = ServiceId.parse("203.0.113.10/32"), ServiceId.parse("2001:db8:d::10/128")


def instance(service: ServiceId, binding: str, weight: float, forwarding: Forwarding | None = None) -> InstanceTarget:
    address = ipaddress.ip_address(binding)
    return InstanceTarget(InstanceKey(service, address), weight,
                          forwarding or Forwarding(Encap.DIRECT, next_hop=address), binding)


def desired(w: float = 0.7, *, third: bool = False, v6: Forwarding | None = None) -> DesiredState:
    first = [instance(S1, "192.0.2.11", w), instance(S1, "192.0.2.12", 1 - w)]
    if third:
        first.append(instance(S1, "192.0.2.13", 0.5))
    return DesiredState.of([ServiceTarget(S1, tuple(first)),
                            ServiceTarget(S2, (instance(S2, "2001:db8::11", 1, v6),))])


def backend(kernel: FakeKernel) -> LinuxDataplane:
    return LinuxDataplane(runner=kernel)


def programs(calls: Sequence[tuple[tuple[str, ...], str | None]]) -> list[str]:
    return [" ".join(argv[:2]) if argv[0] != "ip" else " ".join(a for a in argv if a in ("ip", "-6", "-batch"))
            for argv, _ in calls]


def test_first_apply_routes_before_nftables_and_saves_the_sysctl() -> None:
    kernel = FakeKernel(listings={"net.ipv4.conf.all.src_valid_mark": "0"})
    result = backend(kernel).apply(desired())
    assert result.changed and result.details["instances_added"] == 3
    assert programs(kernel.writes()) == ["sysctl -q", "ip -batch", "ip -6 -batch", "nft -f"]
    assert kernel.nft_scripts()[0].startswith("table inet dyncast {")
    assert "src_valid_mark=0" in kernel.nft_scripts()[0]


def test_weight_change_is_exactly_one_nft_transaction() -> None:
    kernel = FakeKernel()
    dp = backend(kernel)
    dp.apply(desired(0.7))
    kernel.reset()
    dp.apply(desired(0.2))
    assert [argv for argv, _ in kernel.calls] == [("nft", "-f", "-")]
    script = kernel.nft_scripts()[0]
    assert script.startswith("flush chain inet dyncast dc_s_203_0_113_10_32\n")
    assert "meta mark < 2000 " in script and "dc_instances" not in script


def test_unchanged_state_runs_nothing() -> None:
    kernel = FakeKernel()
    dp = backend(kernel)
    dp.apply(desired())
    kernel.reset()
    assert not dp.apply(desired()).changed
    assert kernel.calls == []


def test_removal_order_nft_then_routes_then_conntrack() -> None:
    kernel = FakeKernel(listings={"deleted": "4"})
    dp = backend(kernel)
    dp.apply(desired(third=True))
    kernel.reset()
    dp.apply(desired())
    assert programs(kernel.writes()) == ["nft -f", "ip -batch", "conntrack -D", "conntrack -D"]
    mark = next(argv[-1] for argv, _ in kernel.writes() if argv[0] == "conntrack")
    assert mark == "0x44430003"
    assert "rule del priority 10001 fwmark 0x44430003" in kernel.batch_lines()[0]


def test_bad_input_touches_nothing() -> None:
    kernel = FakeKernel()
    dp = backend(kernel)
    bad = DesiredState.of([ServiceTarget(ServiceId.parse("0.0.0.0/0"), (instance(ServiceId.parse("0.0.0.0/0"),
                                                                                   "192.0.2.1", 1),))])
    with pytest.raises(DataplaneInputError, match="default prefix"):
        dp.apply(bad)
    assert kernel.calls == []


def test_unknown_device_is_refused_after_reading_only() -> None:
    kernel = FakeKernel(listings={"links": json.dumps([{"ifname": "lo"}, {"ifname": "eth0"}])})
    dp = backend(kernel)
    dp.apply(desired())
    kernel.reset()
    moved = Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("2001:db8::11"), device="eth9")
    with pytest.raises(DataplaneInputError, match=r"unknown device.*eth9"):
        dp.apply(desired(v6=moved))
    assert kernel.writes() == []
    kernel.reset()
    assert not dp.apply(desired()).changed  # the refused state left the previous one installed


def test_a_refused_transaction_undoes_the_setup_and_rereads_next_time() -> None:
    kernel = FakeKernel(allow_force=True)
    dp = backend(kernel)
    dp.apply(desired())
    kernel.reset()
    kernel.fail = lambda argv, text: "Error: Could not process rule" if argv[:2] == ("nft", "-f") else None
    with pytest.raises(DataplaneError, match="nftables transaction refused"):
        dp.apply(desired(third=True))
    undo = [text or "" for argv, text in kernel.calls if "-force" in argv]
    assert undo and "rule del priority 10001 fwmark 0x44430004" in undo[0]
    assert dp.installed is None
    kernel.fail = lambda argv, text: None
    kernel.reset()
    dp.apply(desired(third=True))
    assert kernel.calls[0][0][:3] == ("nft", "-j", "list")  # starts with a fresh read of the kernel


def test_srv6_needs_lwtunnel_hooks_and_resolves_the_device_once() -> None:
    sid = Forwarding(Encap.SRV6, remote=ipaddress.ip_address("fc00:a::100"))
    kernel = FakeKernel(listings={"route get": json.dumps([{"dst": "fc00:a::100", "dev": "eth1"}]),
                                  "links": json.dumps([{"ifname": "eth1"}])})
    with pytest.raises(DataplaneInputError, match="nf_hooks_lwtunnel"):
        backend(kernel).apply(desired(v6=sid))
    kernel.listings["net.netfilter.nf_hooks_lwtunnel"] = "1"
    dp = backend(kernel)
    dp.apply(desired(v6=sid))
    assert "encap seg6 mode encap segs fc00:a::100 dev eth1" in "\n".join(kernel.batch_lines())
    kernel.reset()
    dp.apply(desired(0.5, v6=sid))
    assert [argv for argv, _ in kernel.calls] == [("nft", "-f", "-")]


def test_reconcile_adopts_the_captured_kernel_state() -> None:
    kernel = FakeKernel(listings={"nft table": (GOLDEN / "readback_table.json").read_text(),
                                  "rules4": (GOLDEN / "readback_rules4.json").read_text(),
                                  "rules6": (GOLDEN / "readback_rules6.json").read_text()})
    dp = backend(kernel)
    state = dp.reconcile()
    assert len(state.services) == 4 and kernel.writes() == [(("sysctl", "-q", "-w",
                                                               "net.ipv4.conf.all.src_valid_mark=1"), None)]


def test_reconcile_removes_only_stale_objects() -> None:
    table = json.loads((GOLDEN / "readback_table.json").read_text())
    for item in table["nftables"]:
        if item.get("map", {}).get("name") == "dc_net4":
            item["map"].pop("elem")  # 198.51.100.0/24 loses its dispatch element: chain and instance are stale
    kernel = FakeKernel(listings={"nft table": json.dumps(table), "net.ipv4.conf.all.src_valid_mark": "1",
                                  "rules4": (GOLDEN / "readback_rules4.json").read_text(),
                                  "rules6": (GOLDEN / "readback_rules6.json").read_text()})
    LinuxDataplane(runner=kernel).reconcile()
    script = kernel.nft_scripts()[0]
    assert script == ("delete chain inet dyncast dc_s_198_51_100_0_24\n"
                      "delete element inet dyncast dc_instances { 0x44430001 }\n")
    assert kernel.batch_lines() == ["rule del priority 10001 fwmark 0x44430001 lookup 1145241601",
                                    "route flush table 1145241601",  # IPv4 batch: the stale slot's prefix is unknown
                                    "route flush table 1145241601"]  # IPv6 batch: and so is its family
    assert [argv[-1] for argv, _ in kernel.writes() if argv[0] == "conntrack"] == ["0x44430001", "0x44430001"]


def test_flow_counts_and_evict() -> None:
    line = ("tcp 6 431999 ESTABLISHED src=10.0.0.2 dst=203.0.113.10 sport=1 dport=9 src=203.0.113.10 dst=10.0.0.2 "
            "sport=9 dport=1 [ASSURED] mark={} use=1\n")
    kernel = FakeKernel(listings={"conntrack ipv4": line.format(0x44430001) * 3 + line.format(0x44430002),
                                  "deleted": "3"})
    dp = backend(kernel)
    dp.apply(desired())
    counts = dp.flow_counts()
    assert counts[InstanceKey(S1, ipaddress.ip_address("192.0.2.11"))] == 3
    assert counts[InstanceKey(S2, ipaddress.ip_address("2001:db8::11"))] == 0
    kernel.reset()
    assert dp.evict([InstanceKey(S1, ipaddress.ip_address("192.0.2.11"))]) == 3
    assert [argv for argv, _ in kernel.writes()] == [("conntrack", "-D", "-f", "ipv4", "--mark", "0x44430001")]
    with pytest.raises(DataplaneInputError, match="unknown instance"):
        dp.evict([InstanceKey(S1, ipaddress.ip_address("192.0.2.99"))])


def test_evict_deletes_the_instances_affinity_entries() -> None:
    affinity = (GOLDEN / "readback_affinity4.json").read_text()
    kernel = FakeKernel(listings={"nft map dc_aff4": affinity})
    dp = backend(kernel)
    dp.apply(desired())
    kernel.reset()
    dp.evict([InstanceKey(S1, ipaddress.ip_address("192.0.2.11"))])  # slot 1: no entries point at it
    assert kernel.nft_scripts() == []
    marks = {element[1] for item in json.loads(affinity)["nftables"] for element in item.get("map", {}).get("elem", [])}
    assert marks == {0x44430004}
    dp.apply(DesiredState.of([*desired().services, ServiceTarget(ServiceId.parse("203.0.113.20/32"), (
        instance(ServiceId.parse("203.0.113.20/32"), "10.2.0.11", 1),))]))
    kernel.reset()
    assert dp.evict([InstanceKey(ServiceId.parse("203.0.113.20/32"), ipaddress.ip_address("10.2.0.11"))]) >= 1
    assert kernel.nft_scripts() == ["delete element inet dyncast dc_aff4 { 10.0.0.2 . 203.0.113.20 }\n"]


def test_cleanup_removes_ours_only_and_restores_the_sysctl() -> None:
    kernel = FakeKernel(allow_force=True, listings={
        "nft table": (GOLDEN / "readback_table.json").read_text(),
        "rules4": (GOLDEN / "readback_rules4.json").read_text(),
        "rules6": (GOLDEN / "readback_rules6.json").read_text(),
        "net.ipv4.conf.all.src_valid_mark": "1"})
    table = json.loads(kernel.listings["nft table"])
    kernel.listings["nft table"] = json.dumps(table).replace("src_valid_mark=1", "src_valid_mark=0")
    kernel.listings["routes"] = json.dumps([{"dst": "203.0.113.10", "gateway": "10.2.0.11", "dev": "i1",
                                             "table": "1145241602"}, {"dst": "10.0.0.0/24", "dev": "i0"},
                                            {"dst": "198.51.100.0/24", "dev": "i0", "table": "100"}])
    report = LinuxDataplane(runner=kernel).cleanup()
    assert report.table and report.routes == 1 and report.restored_sysctl and not report.problems
    assert "route del 203.0.113.10 table 1145241602" in kernel.batch_lines()
    assert not any("table 100" in line for line in kernel.batch_lines())
    assert kernel.nft_scripts() == ["delete table inet dyncast\n"]
    assert ("sysctl", "-q", "-w", "net.ipv4.conf.all.src_valid_mark=0") in [argv for argv, _ in kernel.calls]


def test_cleanup_of_a_clean_kernel_changes_nothing() -> None:
    kernel = FakeKernel(allow_force=True)
    report = LinuxDataplane(runner=kernel).cleanup()
    assert not report.table and kernel.writes() == []


def test_cleanup_without_a_table_still_removes_our_rules() -> None:
    rules = json.dumps([{"priority": 10001, "src": "all", "fwmark": "0x44430007", "table": "1145241607"},
                        {"priority": 10001, "src": "all", "fwmark": "0x12", "table": "100"}])
    kernel = FakeKernel(allow_force=True, listings={"rules4": rules})
    report = LinuxDataplane(runner=kernel).cleanup()
    assert not report.table and report.rules == 1
    assert "rule del priority 10001 fwmark 0x44430007 lookup 1145241607" in kernel.batch_lines()
    assert not any("0x12" in line for line in kernel.batch_lines())
