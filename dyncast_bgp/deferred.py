"""What a recompute replaced, released after it rather than inside it (decision 0015).

Each decided service replaces its outcome: the decision, its weights and exclusions, the service's memory and
the rest of a small graph of objects (with the candidate rows its explanation is made from on first read).
Freed where the last reference drops (``RouterEngine._record``, then ``DecisionBook.record``), every one of
those graphs was deallocated inside the recompute. The objects were made one recompute ago and are cold: at
10,000 services x 16 instances, freeing them inside the recompute cost it about 25-50 ms more than freeing
them afterwards, where they took 20-60 ms (``benchmarks/bench_engine.py`` compares the two in one process).

The router therefore holds what its engine and its decision book replace in a :class:`Deferred` and
releases it a chunk at a time (:data:`RELEASE_CHUNK`), oldest first, at the start of the turns of its loop
once nothing is pending: after the recompute's last slice, the loop's other tasks (the dataplane's apply
among them) go first. :attr:`Deferred.limit` bounds what waits: at every turn, what is held beyond it is
released at once, so a router that is never idle holds about one and a half full recomputes' worth at 10,000
services, and a recompute that replaces more than the limit has the excess freed as it goes.

Nothing here looks inside the objects: releasing drops the references held here, and reference counting
frees them as it would have (an object something else still holds, such as an outcome the audit backlog is
about to compare with the next, lives on until that lets it go); cyclic garbage among them waits for the
collector as before (router/collector.py).
"""

from __future__ import annotations

RELEASE_CHUNK = 1024
"""Objects released per turn of the router's loop: at about 3 us per replaced outcome, a few milliseconds."""
LIMIT = 32_768
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
        self.released = 0  # in total (read by the tests)

    def hold(self, item: object) -> None:
        """Keep ``item`` until a release."""
        self._held.append(item)

    def __len__(self) -> int:
        return len(self._held)

    def release(self, count: int) -> int:
        """Release up to ``count`` of the held objects, the oldest first; how many."""
        held = self._held
        count = max(0, min(count, len(held)))
        if count:
            del held[:count]
            self.released += count
        return count

    def trim(self) -> int:
        """Release what is held beyond :attr:`limit`; how many."""
        return self.release(len(self._held) - self.limit)

    def clear(self) -> int:
        """Release everything held; how many."""
        return self.release(len(self._held))
