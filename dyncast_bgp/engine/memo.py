"""A memo keyed by the identity of its key objects, for the engine's per-instance lookups.

The RIB hands the engine the same D-BID objects step after step (the ExaBGP JSON
parser keeps one object per address text), and an ``ipaddress`` object hashes in
Python: looking it up by ``id()`` is a C-level int lookup. Each entry holds its
key object, so the ``id`` cannot be reused while the entry exists; an equal but
distinct object is simply computed again, with the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class IdentityMemo(Generic[K, V]):
    """``make(key)`` remembered per key object; emptied whole when it holds ``limit`` entries."""

    __slots__ = ("_entries", "_limit")

    def __init__(self, limit: int) -> None:
        self._entries: dict[int, tuple[K, V]] = {}
        self._limit = limit

    def get(self, key: K, make: Callable[[K], V]) -> V:
        hit = self._entries.get(id(key))
        if hit is not None and hit[0] is key:
            return hit[1]
        value = make(key)
        if len(self._entries) >= self._limit:
            self._entries.clear()
        self._entries[id(key)] = (key, value)
        return value

    def clear(self) -> None:
        """Forget everything (what ``make`` reads changed)."""
        self._entries.clear()
