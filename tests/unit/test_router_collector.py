"""router/collector.py: the collector paused around a step, the live state frozen, the periodic full collection."""

from __future__ import annotations

import gc
import weakref

import pytest

from dyncast_bgp.router.collector import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_paused_disables_the_collector_and_freezes_what_the_block_leaves_alive() -> None:
    collector = Collector(60.0)
    assert gc.isenabled()
    with collector.paused():
        assert not gc.isenabled()
        kept = [Node() for _ in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    assert not any(node in gc.get_objects() for node in kept[:1])  # frozen objects are not in any generation


def test_paused_keeps_a_disabled_collector_disabled_and_freezes_even_when_the_block_raises() -> None:
    collector = Collector(60.0)
    gc.disable()
    try:
        with pytest.raises(RuntimeError), collector.paused():
            raise RuntimeError("a step failed")
        assert not gc.isenabled()
        assert gc.get_freeze_count() > 0
    finally:
        gc.enable()


def test_the_full_collection_frees_a_cycle_among_frozen_objects() -> None:
    clock = [100.0]
    collector = Collector(30.0, clock=lambda: clock[0])
    with collector.paused():
        first, second = Node(), Node()
        first.other, second.other = second, first
    gone = weakref.ref(first)
    del first, second
    gc.collect()
    assert gone() is not None, "a frozen cycle is not collected by an ordinary collection"
    clock[0] = 140.0
    done = collector.full()
    assert gone() is None
    assert done.unreachable >= 2 and done.frozen == gc.get_freeze_count() > 0
    assert collector.collections == 1 and collector.last is done
    assert collector.next_due() == 170.0


def test_due_when_idle_or_overdue_by_a_whole_interval() -> None:
    clock = [0.0]
    collector = Collector(10.0, clock=lambda: clock[0])
    assert collector.next_due() == 10.0
    assert not collector.due(9.9, idle=True)
    assert collector.due(10.0, idle=True)
    assert not collector.due(19.9, idle=False)  # busy: waits for a quiet moment
    assert collector.due(20.0, idle=False)  # but not for ever


@pytest.mark.parametrize("interval", [0.0, -1.0, float("nan")])
def test_a_bad_interval_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="interval must be > 0"):
        Collector(interval)
