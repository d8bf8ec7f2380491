"""The rendered nftables ruleset and ip batches for a few representative decisions.

Inputs are the desired-state files tests/golden/dataplane/<case>.yml (the
format of `dyncast dataplane apply`); outputs sit beside them:

* ``<case>.nft``: the complete ruleset (first install), as given to ``nft -f``;
* ``<case>.routes``: the routes, rules, guards and tunnels of a fresh install;
* ``<case>.<change>.nft`` / ``.routes``: the incremental transaction and
  batches for one change applied on top of the case.

The integration tests load every ``.nft`` file into a real kernel with
``nft -c``. Regenerate after an intended change: pytest tests/golden --update-golden
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from dyncast_bgp.dataplane.desired import DesiredState, InstanceTarget, ServiceTarget
from dyncast_bgp.dataplane.fileformat import parse
from dyncast_bgp.dataplane.layout import Layout
from dyncast_bgp.dataplane.nft import render_table, render_transaction
from dyncast_bgp.dataplane.plan import Builder, diff, empty_state
from dyncast_bgp.dataplane.routes import render_install, render_setup, render_teardown
from dyncast_bgp.dataplane.state import KernelState, Meta

HERE = Path(__file__).parent / "dataplane"
CASES = ("flow_and_client", "drain_and_thirds", "encapsulation")
LAYOUT = Layout()


def desired(case: str) -> DesiredState:
    return parse((HERE / f"{case}.yml").read_text(), f"{case}.yml")


def install(state: DesiredState) -> tuple[Builder, KernelState]:
    builder = Builder(LAYOUT)
    built = builder.build(state, empty_state(), Meta(saved_src_valid_mark=0))
    builder.commit()
    return builder, built


def check(name: str, text: str, update_golden: bool) -> None:
    target = HERE / name
    if update_golden:
        target.write_text(text)
    assert target.exists(), f"{name} missing: run pytest tests/golden --update-golden"
    assert target.read_text() == text, f"{name} differs from the renderer: rerun with --update-golden"


@pytest.mark.parametrize("case", CASES)
def test_first_install_matches_golden(case: str, update_golden: bool) -> None:
    _, state = install(desired(case))
    check(f"{case}.nft", render_table(state, LAYOUT), update_golden)
    check(f"{case}.routes", render_install(list(state.instances()), LAYOUT).text(), update_golden)


def reweight(state: DesiredState) -> DesiredState:
    """The first service's weights reversed: a pure weight change."""
    first, *rest = state.services
    weights = [instance.weight for instance in first.instances][::-1]
    instances = tuple(InstanceTarget(i.key, w, i.forwarding, i.name) for i, w in zip(first.instances, weights,
                                                                                       strict=True))
    return DesiredState((ServiceTarget(first.service, instances, first.affinity, first.affinity_timeout), *rest))


def drop_last_instance(state: DesiredState) -> DesiredState:
    """The first service loses its last instance: a hard removal."""
    first, *rest = state.services
    return DesiredState((ServiceTarget(first.service, first.instances[:-1], first.affinity, first.affinity_timeout),
                         *rest))


CHANGES: dict[str, Callable[[DesiredState], DesiredState]] = {"reweight": reweight, "remove": drop_last_instance}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_changes_match_golden(case: str, change: str, update_golden: bool) -> None:
    builder, before = install(desired(case))
    after = builder.build(CHANGES[change](desired(case)), before)
    plan = diff(before, after)
    routes = render_setup(plan, LAYOUT).text() + render_teardown(plan, LAYOUT).text()
    check(f"{case}.{change}.nft", render_transaction(plan, LAYOUT), update_golden)
    check(f"{case}.{change}.routes", routes, update_golden)
    if change == "reweight":  # a weight change is one nftables transaction and nothing else
        assert routes == ""
        assert plan.evict_slots == () and not plan.register and not plan.unregister
    else:
        assert len(plan.evict_slots) == 1
