"""What a recompute replaced, released after it rather than inside it (decision 0015).

Each decided service replaces its outcome: the decision, its weights and exclusions, the service's memory and
the rest of a small graph of objects. Freed where the last reference drops (``RouterEngine._record``, then
``DecisionBook.record``), every one of those graphs is deallocated inside the recompute. The objects were made
one recompute ago and are cold: at 10,000 services x 16 instances the frees took about 50 ms of a 470 ms full
recompute, and the same objects freed together afterwards took 22-35 ms (``benchmarks/bench_engine.py``).

The router therefore holds what its engine and its decision book replace in a :class:`Deferred` and
releases it a chunk at a time (:data:`RELEASE_CHUNK`) in the turns of its loop once nothing is pending, so new
flows follow the new decisions sooner and no turn is held long by frees. :attr:`Deferred.limit` bounds what
waits: a router that is never idle (a recompute always pending) releases the excess at each turn, so memory
stays bounded by about one full recompute's worth of replaced state.

Nothing here looks inside the objects: releasing drops the last references and reference counting frees them
as it would have; cyclic garbage among them waits for the collector as before (router/collector.py).
"""

from __future__ import annotations

RELEASE_CHUNK = 1024
"""Objects released per turn of the router's loop: at about 3 us per replaced outcome, a few milliseconds."""
LIMIT = 65_536
"""Objects held at most; above it the excess is released at once (:meth:`Deferred.trim`). A full recompute of
10,000 services holds 20,000 (each replaced outcome, and each decision-book entry holding the one before)."""


class Deferred:
    """Objects whose release waits (see the module). ``limit``: how many may wait."""

    __slots__ = ("_held", "limit", "released")

    def __init__(self, *, limit: int = LIMIT) -> None:
        if limit < 0:
            raise ValueError(f"deferred release limit must be at least 0 objects, not {limit}")
        self.limit = limit
        self._held: list[object] = []
        self.released = 0  # in total, for the router's counters

    def hold(self, item: object) -> None:
        """Keep ``item`` until a release."""
        self._held.append(item)

    def __len__(self) -> int:
        return len(self._held)

    def release(self, count: int) -> int:
        """Release up to ``count`` of the held objects, the most recent first; how many."""
        held = self._held
        count = max(0, min(count, len(held)))
        if count:
            del held[len(held) - count:]
            self.released += count
        return count

    def trim(self) -> int:
        """Release what is held beyond :attr:`limit`; how many."""
        return self.release(len(self._held) - self.limit)

    def clear(self) -> int:
        """Release everything held; how many."""
        return self.release(len(self._held))
