"""Desired state -> kernel state -> plan: validation, stable slots, and what each change touches."""

from __future__ import annotations

import ipaddress

import pytest

from dyncast_bgp.dataplane.desired import Affinity, DesiredState, Encap, Forwarding, InstanceTarget, ServiceTarget
from dyncast_bgp.dataplane.layout import MAX_SLOT, Layout
from dyncast_bgp.dataplane.plan import Builder, allocate, clean, diff, empty_state, validate
from dyncast_bgp.dataplane.state import KernelState, Meta, Stale
from dyncast_bgp.model import InstanceKey, ServiceId

LAYOUT = Layout()


def key(service: str, binding: str, path_id: int = 0) -> InstanceKey:
    return InstanceKey(ServiceId.parse(service), ipaddress.ip_address(binding), path_id)


def target(service: str, *instances: tuple[str, float], affinity: Affinity = Affinity.FLOW, timeout: float = 300,
           forwarding: dict[str, Forwarding] | None = None, names: dict[str, str] | None = None) -> ServiceTarget:
    def forward(binding: str) -> Forwarding:
        direct = Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address(binding))
        return (forwarding or {}).get(binding, direct)

    return ServiceTarget(ServiceId.parse(service), tuple(
        InstanceTarget(key(service, binding), weight, forward(binding), (names or {}).get(binding))
        for binding, weight in instances), affinity, timeout)


def state(*targets: ServiceTarget) -> DesiredState:
    return DesiredState.of(targets)


BASE = state(target("203.0.113.10/32", ("192.0.2.11", 0.7), ("192.0.2.12", 0.3)),
             target("203.0.113.20/32", ("192.0.2.11", 1), ("192.0.2.12", 1), affinity=Affinity.CLIENT, timeout=30))


def installed(desired: DesiredState = BASE) -> tuple[Builder, KernelState]:
    builder = Builder(LAYOUT)
    built = builder.build(desired, empty_state(), Meta(saved_src_valid_mark=0))
    builder.commit()
    return builder, built


# -- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("desired", "fragment"), [
    (state(target("0.0.0.0/0", ("192.0.2.1", 1))), "default prefix"),
    (state(target("::/0", ("2001:db8::1", 1))), "default prefix"),
    (state(target("224.0.0.1/32", ("192.0.2.1", 1))), "not a unicast"),
    (state(target("127.0.0.1/32", ("192.0.2.1", 1))), "not a unicast"),
    (state(target("fe80::1/128", ("fe80::2", 1))), "not a unicast"),
    (state(target("10.0.0.0/16", ("192.0.2.1", 1)), target("10.0.1.0/24", ("192.0.2.1", 1))), "overlap"),
    (state(target("203.0.113.10/32", ("192.0.2.1", 1),
                  forwarding={"192.0.2.1": Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("fd00::1"))})),
     "not IPv4"),
    (state(target("203.0.113.10/32", ("192.0.2.1", 1),
                  forwarding={"192.0.2.1": Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("127.0.0.1"))})),
     "not a unicast address"),
    (state(target("203.0.113.10/32", ("192.0.2.1", 1),
                  forwarding={"192.0.2.1": Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("192.0.2.1"),
                                                      device="eth 0")})), "not an interface name"),
    (state(target("203.0.113.10/32", ("192.0.2.1", 1), names={"192.0.2.1": 'a"b'})), "name"),
])
def test_validate_refuses(desired: DesiredState, fragment: str) -> None:
    problems = validate(desired, LAYOUT)
    assert problems and any(fragment in problem for problem in problems), problems


def test_validate_accepts_host_prefixes_inside_a_service_prefix_and_both_families() -> None:
    desired = state(target("10.0.0.0/16", ("192.0.2.1", 1)), target("10.0.0.5/32", ("192.0.2.2", 1)),
                    target("2001:db8:d::/48", ("2001:db8::1", 1)), target("2001:db8:d::10/128", ("2001:db8::2", 1)))
    assert validate(desired, LAYOUT) == []


def test_validate_reports_an_instance_listed_under_another_service() -> None:
    foreign = target("203.0.113.99/32", ("192.0.2.1", 1)).instances[0]
    service = target("203.0.113.10/32", ("192.0.2.1", 1))
    object.__setattr__(service, "_instances", (foreign,))  # what a buggy caller could hand over (its slot, unchecked)
    assert any("unknown instance" in problem for problem in validate(state(service), LAYOUT))


def test_validate_reports_every_problem_not_just_the_first() -> None:
    desired = state(target("0.0.0.0/0", ("192.0.2.1", 1)), target("224.0.0.1/32", ("192.0.2.1", 1)))
    assert len(validate(desired, LAYOUT)) >= 2


# -- slots ---------------------------------------------------------------------------------------------


def test_allocate_keeps_slots_and_hands_out_the_lowest_free() -> None:
    a, b, c = key("203.0.113.10/32", "192.0.2.1"), key("203.0.113.10/32", "192.0.2.2"), key("203.0.113.10/32",
                                                                                            "192.0.2.3")
    assert allocate([a, b, c], {b: 1}) == {a: 2, b: 1, c: 3}
    assert allocate([a], {b: 1}, reserved=[2, 3]) == {a: 4}


def test_allocate_runs_out_of_slots() -> None:
    installed_slots = {key("10.0.0.0/8", f"192.0.{i // 256}.{i % 256}"): i + 1 for i in range(MAX_SLOT)}
    with pytest.raises(ValueError, match="no free slot"):
        allocate([key("203.0.113.10/32", "192.0.2.1")], installed_slots)


def test_slots_survive_weight_changes_removals_and_additions() -> None:
    builder, first = installed()
    slots = first.slots()
    changed = state(target("203.0.113.10/32", ("192.0.2.11", 0.1), ("192.0.2.13", 0.9)), BASE.services[1])
    second = builder.build(changed, first)
    assert second.slots()[key("203.0.113.10/32", "192.0.2.11")] == slots[key("203.0.113.10/32", "192.0.2.11")]
    new = second.slots()[key("203.0.113.10/32", "192.0.2.13")]
    assert new not in slots.values()  # the slot of the removed instance is not reused in the same apply


def test_builder_reuses_entries_of_unchanged_targets_only_after_commit() -> None:
    builder, first = installed()
    again = builder.build(state(*BASE.services), first)
    assert again.services[BASE.services[0].service] is first.services[BASE.services[0].service]
    fresh = Builder(LAYOUT)
    fresh.build(BASE, empty_state())  # not committed
    assert fresh.build(BASE, empty_state()).services == first.services


def test_reweighted_targets_take_the_short_path_and_build_what_the_full_path_builds() -> None:
    """Only weights (or affinity settings) moved: entries are rebuilt from the old ones; same state, same plan."""
    many = state(*(target(f"203.0.113.{i}/32", ("192.0.2.11", 0.7), ("192.0.2.12", 0.3)) for i in range(1, 9)))
    builder, first = installed(many)
    svc = many.services
    sid = [str(t.service) for t in svc]
    changed = state(
        target(sid[0], ("192.0.2.11", 0.3), ("192.0.2.12", 0.7)),  # reweighted
        target(sid[1], ("192.0.2.11", 0.7), ("192.0.2.12", 0.3), affinity=Affinity.CLIENT, timeout=5),  # affinity
        target(sid[2], ("192.0.2.11", 0.70000001), ("192.0.2.12", 0.3)),  # reweighted, same buckets
        target(sid[3], ("192.0.2.11", 0.5), ("192.0.2.12", 0.5), names={"192.0.2.11": "x"}),  # renamed
        target(sid[4], ("192.0.2.11", 0.5), ("192.0.2.13", 0.5)),  # another instance
        target(sid[5], ("192.0.2.11", 0.5), ("192.0.2.12", 0.5), forwarding={
            "192.0.2.12": Forwarding(Encap.DIRECT, next_hop=ipaddress.ip_address("192.0.2.99"))}),  # re-routed
        target(sid[6], ("192.0.2.12", 0.5), ("192.0.2.11", 0.5)),  # listed in another order
        svc[7])
    built = builder.build(changed, first)
    quick = {old.service for old, _ in builder.reweighted}
    assert quick == {svc[i].service for i in (0, 1, 2)}
    reference = Builder(LAYOUT).build(changed, first)  # nothing committed: every target the full way
    assert built.services == reference.services
    assert built.rules == reference.rules and built.tunnels == reference.tunnels
    fast, full = diff(first, built, builder.touched, builder.reweighted), diff(first, built)
    assert fast.details() == full.details()
    assert fast.change_services == full.change_services and fast.routes == full.routes
    assert fast.register == full.register and fast.unregister == full.unregister
    assert svc[2].service not in {entry.service for entry in fast.change_services}  # same buckets: no rewrite


# -- diffs ---------------------------------------------------------------------------------------------


def test_first_install_creates_everything() -> None:
    _, built = installed()
    plan = diff(empty_state(), built)
    assert plan.create_table and plan.write_meta
    assert len(plan.add_services) == 2 and len(plan.routes) == 4 and len(plan.add_rules) == 4
    assert plan.add_guards == (4, 6) and plan.evict_slots == ()


def test_same_state_is_an_empty_plan() -> None:
    builder, built = installed()
    assert diff(built, builder.build(BASE, built)).empty


def test_weight_change_rewrites_one_chain_and_touches_nothing_else() -> None:
    builder, built = installed()
    changed = state(target("203.0.113.10/32", ("192.0.2.11", 0.4), ("192.0.2.12", 0.6)), BASE.services[1])
    plan = diff(built, builder.build(changed, built))
    assert [entry.service for entry in plan.change_services] == [ServiceId.parse("203.0.113.10/32")]
    assert not plan.route_changes and not plan.register and not plan.unregister and not plan.evict_slots
    assert [i.buckets for i in plan.change_services[0].instances] == [4000, 6000]


def test_soft_drain_keeps_slot_route_and_rule() -> None:
    builder, built = installed()
    drained = state(target("203.0.113.10/32", ("192.0.2.11", 1), ("192.0.2.12", 0)), BASE.services[1])
    plan = diff(built, builder.build(drained, built))
    assert not plan.route_changes and not plan.evict_slots
    assert [i.buckets for i in plan.change_services[0].instances] == [10000, 0]


def test_removing_an_instance_is_a_hard_removal() -> None:
    builder, built = installed()
    slot = built.slots()[key("203.0.113.10/32", "192.0.2.12")]
    plan = diff(built, builder.build(state(target("203.0.113.10/32", ("192.0.2.11", 1)), BASE.services[1]), built))
    assert plan.unregister == (slot,) and plan.evict_slots == (slot,)
    assert plan.remove_rules == ((4, slot),) and [(e.family, e.slot) for e in plan.delete_routes] == [(4, slot)]
    assert plan.flush_tables == ()  # the prefix is known: route del, not a flush (which dumps every route)
    assert len(plan.change_services) == 1 and not plan.routes


def test_removing_a_service_removes_its_chain_and_instances() -> None:
    builder, built = installed()
    plan = diff(built, builder.build(state(BASE.services[0]), built))
    assert [e.service for e in plan.remove_services] == [BASE.services[1].service]
    assert len(plan.evict_slots) == 2 and len(plan.remove_rules) == 2


def test_forwarding_change_only_replaces_the_route() -> None:
    builder, built = installed()
    tunnel = Forwarding(Encap.GRE, remote=ipaddress.ip_address("198.51.100.2"),
                        local=ipaddress.ip_address("198.51.100.1"))
    moved = state(target("203.0.113.10/32", ("192.0.2.11", 0.7), ("192.0.2.12", 0.3),
                         forwarding={"192.0.2.12": tunnel}), BASE.services[1])
    plan = diff(built, builder.build(moved, built))
    assert [entry.key for entry in plan.routes] == [key("203.0.113.10/32", "192.0.2.12")]
    assert [t.kind for t in plan.add_tunnels] == ["gre"]
    assert not plan.nft_changes


def test_renaming_an_instance_rewrites_its_registry_element() -> None:
    builder, built = installed()
    renamed = state(target("203.0.113.10/32", ("192.0.2.11", 0.7), ("192.0.2.12", 0.3), names={"192.0.2.11": "x"}),
                    BASE.services[1])
    plan = diff(built, builder.build(renamed, built))
    slot = built.slots()[key("203.0.113.10/32", "192.0.2.11")]
    assert plan.unregister == (slot,) and [e.name for e in plan.register] == ["x"]
    assert not plan.change_services and not plan.evict_slots


def test_affinity_or_timeout_change_rewrites_the_chain() -> None:
    builder, built = installed()
    changed = state(BASE.services[0], target("203.0.113.20/32", ("192.0.2.11", 1), ("192.0.2.12", 1),
                                             affinity=Affinity.CLIENT, timeout=60))
    plan = diff(built, builder.build(changed, built))
    assert [e.timeout_ms for e in plan.change_services] == [60_000]


def test_stale_objects_are_removed_and_their_slots_evicted() -> None:
    _, built = installed()
    stale = KernelState(services=built.services, tunnels=built.tunnels, rules=built.rules,
                        guards=built.guards, table=True, meta=built.meta,
                        stale=Stale(chains=frozenset({"dc_s_198_51_100_0_24"}), rules=frozenset({(4, 77)}),
                                    registry=frozenset({(55, "198.51.100.0/24@192.0.2.9")})))
    plan = diff(stale, clean(stale))
    assert plan.remove_stale_chains == ("dc_s_198_51_100_0_24",)
    assert plan.unregister == (55,) and plan.remove_rules == ((4, 77),)
    assert set(plan.evict_slots) == {55, 77}
    assert not plan.add_services and not plan.routes
