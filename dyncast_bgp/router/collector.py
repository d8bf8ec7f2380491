"""The garbage collector around the router's big steps (decision 0008).

The router holds a large, long-lived state: at 10,000 services x 16 instances
about 1.5 million objects the collector tracks (paths, candidates, decisions,
dataplane targets). A full recompute replaces most of them, and the
allocations it makes trigger one or two full (generation 2) collections,
each walking every one of those objects: about 1.2 s of a 4 s step on the
benchmark machine, spent while new flows still follow the old decision.
Reference counting frees everything a step replaces (a full recompute leaves
no cyclic garbage: measured, ``gc.collect()`` after one finds nothing), so
those walks find nothing to free.

So the router runs its decision step and its desired-state build with the
collector paused, then *freezes* what is alive (``gc.freeze``: moved to the
permanent generation, which collections skip). Collections between steps then
walk only what was made since. Objects that are frozen and later drop out of
use are still freed by their reference counts. What waits is cyclic garbage:
a cycle among frozen objects that is dropped later, or one that was already
garbage in the oldest generation when the freeze came (the young generations
are collected before each pause). :meth:`Collector.full` (unfreeze, collect,
freeze again) finds those every ``router.gc_full_interval`` seconds, when the
router is idle or once that time has passed twice over, and logs how many.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from dyncast_bgp import gcpause


@dataclass(slots=True)
class FullCollection:
    """What one periodic full collection did."""

    seconds: float
    unreachable: int
    """Objects found unreachable (cyclic garbage), as ``gc.collect()`` counts them."""
    frozen: int
    """Objects frozen again afterwards (the live state)."""


class Collector:
    """Pauses the collector around the router's steps and runs the full collection on a schedule.

    ``interval``: seconds between full collections (the longest a reference cycle among frozen objects
    waits); ``clock``: monotonic seconds, passed in for tests.
    """

    def __init__(self, interval: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"gc full-collection interval must be > 0 seconds, not {interval!r}")
        self.interval = interval
        self._clock = clock
        self._next = clock() + interval
        self.collections = 0
        self.last: FullCollection | None = None

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Run the block with the collector paused; freeze what is alive after it (also when it raises).

        The young generations are collected first (they hold only what was made since the last collection,
        a few thousand objects), so cyclic garbage made between steps is not frozen with the state. The pause
        nests with the dataplane's (:mod:`dyncast_bgp.gcpause`); a collector turned off stays off.
        """
        with gcpause.frozen_after():
            yield

    def next_due(self) -> float:
        """When the next full collection is due (monotonic seconds)."""
        return self._next

    def due(self, now: float, *, idle: bool) -> bool:
        """Whether to run the full collection now: due and the router idle, or overdue by a whole interval."""
        return now >= self._next + (0.0 if idle else self.interval)

    def full(self) -> FullCollection:
        """Unfreeze, collect every generation, freeze again; schedule the next one."""
        began = time.perf_counter()
        gc.unfreeze()
        unreachable = gc.collect()
        gc.freeze()
        self.last = FullCollection(time.perf_counter() - began, unreachable, gc.get_freeze_count())
        self.collections += 1
        self._next = self._clock() + self.interval
        return self.last
