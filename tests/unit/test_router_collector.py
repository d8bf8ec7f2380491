"""router/collector.py: the collector paused around a step, the live state frozen, the periodic full collection."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from dyncast_bgp import gcpause
from dyncast_bgp.router.collector import Collector


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def tracked_ids() -> set[int]:
    return {id(o) for o in gc.get_objects()}  # frozen objects are in no generation


def test_paused_disables_the_collector_and_freezes_what_the_block_leaves_alive() -> None:
    collector = Collector(60.0)
    before = Node()
    assert gc.isenabled() and id(before) in tracked_ids()
    with collector.paused():
        assert not gc.isenabled()
        kept = Node()
        assert id(kept) in tracked_ids()
    assert gc.isenabled()
    assert id(kept) not in tracked_ids() and id(before) not in tracked_ids()
    gc.unfreeze()
    assert id(kept) in tracked_ids()


def test_pauses_nest_across_threads() -> None:
    """The dataplane's apply (a worker thread) and a step (the loop) may overlap: the last to end resumes."""
    collector = Collector(60.0)
    inside, leave = threading.Event(), threading.Event()

    def apply() -> None:
        with gcpause.paused():
            inside.set()
            leave.wait(5)
    worker = threading.Thread(target=apply)
    with collector.paused():
        worker.start()
        assert inside.wait(5)
    assert not gc.isenabled(), "the step ended first: the apply still runs, the collector stays off"
    assert gcpause.depth() == 1
    leave.set()
    worker.join(5)
    assert gc.isenabled() and gcpause.depth() == 0


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
