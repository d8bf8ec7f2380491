"""Pausing Python's garbage collector around large allocations, shared by every thread of the process.

The router's decision steps (router/collector.py) run on the event loop while the dataplane's apply
(dataplane/linux.py) runs in a worker thread; both pause the collector. ``gc.disable()`` is process-wide, so
two independent pauses would undo each other: whichever ended first turned the collector back on while the
other was still allocating. Here the pauses nest: the first to start records whether the collector was on and
turns it off, the last to end turns it back on if it was.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator


class _Pauses:
    """The pauses in progress and whether the collector was on before the first."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.resume = False


_pauses = _Pauses()


@contextlib.contextmanager
def paused(*, freeze: bool = False) -> Iterator[None]:
    """Run the block with the collector off; ``freeze``: then ``gc.freeze()`` what is alive (also on error)."""
    state = _pauses
    with state.lock:
        if state.depth == 0:
            state.resume = gc.isenabled()
            gc.disable()
        state.depth += 1
    try:
        yield
    finally:
        with state.lock:
            if freeze:
                gc.freeze()
            state.depth -= 1
            if state.depth == 0 and state.resume:
                gc.enable()


def depth() -> int:
    """Pauses in progress (for tests)."""
    return _pauses.depth


@contextlib.contextmanager
def frozen_after() -> Iterator[None]:
    """Collect the young generations, run the block with the collector paused, then freeze what is alive.

    The young generations hold only what was made since the last collection or freeze (a few thousand
    objects), so cyclic garbage made before the block is not frozen with what the block builds; after it,
    nothing the block built is left for a collection to walk (the router's decision steps, router/collector.py,
    and its long reads a slice at a time, router/slices.py)."""
    gc.collect(1)
    with paused(freeze=True):
        yield
