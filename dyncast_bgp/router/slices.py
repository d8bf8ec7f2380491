"""Long reads of the router's state done a slice at a time, so the event loop keeps turning.

The status file and the metrics endpoint read every decision's explanation: at 1,000 services x 16
instances that took 1-2.5 s on this project's 2-core VM (for a decision of the batch path the explanation is
one per-service decision more, decision 0006), and the loop was held all that time: no probe answered, no
ExaBGP line read, no control request served. :func:`in_slices` does such a read over a list taken at its
start (the outcomes are immutable; the engine may replace them meanwhile), yielding to the loop whenever
:data:`SLICE_SECONDS` have passed. What it builds mixes decisions made up to the read's length apart, each one
whole (decision 0013).

Each slice runs as a decision step does (decision 0008, :func:`~dyncast_bgp.gcpause.frozen_after`): the
young generations collected first, the collector paused, what is alive frozen after it. The 160,000
samples of a 1,000-service scrape otherwise set off full collections that walked what had been built so
far, each longer than the last (18 to 93 ms, inside a slice); and paused for the whole read instead, the
collector was off most of the time while the status file was rewritten, and the next decision step's
collection of the young generations walked the whole read (40-230 ms, found in review). Between slices
the other tasks run with the collector on. What a read builds is plain data, freed by its reference count
when the next read replaces it; a cycle in it waits for the router's periodic full collection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from dyncast_bgp import gcpause

SLICE_SECONDS = 0.02
"""How long a background read holds the loop at most before letting the other tasks run (plus one item)."""

_T = TypeVar("_T")
_R = TypeVar("_R")


async def in_slices(items: Sequence[_T], work: Callable[[_T], _R], *, seconds: float | None = None,
                    clock: Callable[[], float] = time.perf_counter) -> list[_R]:
    """``[work(item) for item in items]``, yielding to the event loop whenever ``seconds`` (default
    :data:`SLICE_SECONDS`) have passed."""
    if seconds is None:
        seconds = SLICE_SECONDS
    results: list[_R] = []
    at, count = 0, len(items)
    while at < count:
        with gcpause.frozen_after():  # each slice: see the module docstring
            until = clock() + seconds
            while at < count:
                results.append(work(items[at]))
                at += 1
                if clock() >= until:
                    break
        if at < count:
            await asyncio.sleep(0)
    return results
