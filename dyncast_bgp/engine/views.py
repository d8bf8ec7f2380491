"""Read-only mappings that put off work until someone reads them.

A decision's weights are keyed by :class:`~dyncast_bgp.model.InstanceKey`,
whose hash runs in Python (its ``ipaddress`` fields): building a dict of 16
of them costs more than deciding the weights. :class:`KeyedValues` keeps the
keys and values side by side and builds its index on the first lookup by
key; iterating it (what validating, printing and diffing a decision mostly
do) never hashes. A service's memory keeps its weights the same way, by
:data:`~dyncast_bgp.engine.candidate.Ident`: those ints hash badly (``x mod
2**61-1`` leaves the low bits of ``D-BID << 32`` equal across a service's
instances, so every lookup probes several slots), and the next decision
usually has the same instances in the same order, which one comparison finds.
:class:`LazyMapping` builds its whole content (the reason texts) on first use.
"""

from __future__ import annotations

from collections.abc import Callable, ItemsView, Iterator, Mapping, Sequence, ValuesView
from itertools import repeat
from typing import Any, Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class KeyedValues(Mapping[K, V]):
    """A read-only mapping over parallel ``keys`` and ``values`` (keys unique), indexed on first lookup."""

    __slots__ = ("_index", "_keys", "_values", "_wider")

    def __init__(self, keys: Sequence[K], values: Sequence[V], *,
                 wider: tuple[Sequence[K], Sequence[V], V] | None = None) -> None:
        """``wider``: the same mapping laid out over more keys, ``(keys, values, fill)``, the keys not in
        this mapping with the value ``fill``; only :meth:`lookup` reads it (the batch decision has a
        service's weights laid out that way, and the next decision usually asks for them so)."""
        if len(keys) != len(values):
            raise ValueError(f"{len(keys)} keys for {len(values)} values")
        self._keys = keys
        self._values = values
        self._wider = wider
        self._index: dict[K, V] | None = None

    def _indexed(self) -> dict[K, V]:
        if self._index is None:
            self._index = dict(zip(self._keys, self._values, strict=True))
        return self._index

    def __getitem__(self, key: K) -> V:
        return self._indexed()[key]

    def aligned(self, keys: Sequence[K]) -> Sequence[V] | None:
        """The values in the order of ``keys`` when ``keys`` are exactly this mapping's keys, in order; else None.

        A comparison of two sequences in C, where a lookup per key would hash each one.
        """
        return self._values if self._keys == keys else None

    def same_as(self, other: Mapping[K, V]) -> bool:
        """``dict(self) == dict(other)``: when ``other`` is a :class:`KeyedValues` with the same keys in the same
        order (a decision compared with the one before it, usually), one comparison of the key sequences and
        one of the value sequences, in C, identity first; else the dicts."""
        if len(self._keys) != len(other):
            return False
        if type(other) is KeyedValues and self._keys == other._keys:
            mine, theirs = self._values, other._values
            if type(mine) is list and type(theirs) is list:  # a list never equals a tuple or an array
                return mine == theirs
        return dict(zip(self._keys, self._values, strict=True)) == dict(other)

    def spread(self, keys: Sequence[K], fill: V) -> Sequence[V] | None:
        """The values over exactly ``keys``, in order, when ``keys`` are this mapping's keys or the keys of its
        ``wider`` layout with ``fill`` for the keys not here; else None. Sequence comparisons only: no key
        hashed."""
        if self._keys == keys:
            return self._values
        wider = self._wider
        if wider is not None and wider[2] == fill and wider[0] == keys:
            return wider[1]
        return None

    def lookup(self, keys: Sequence[K], default: V) -> Sequence[V]:
        """The value of each of ``keys`` (``default`` for a key not here), in order: :meth:`aligned` when it
        applies, else one index lookup per key in C."""
        spread = self.spread(keys, default)
        return spread if spread is not None else list(map(self._indexed().get, keys, repeat(default)))

    def __contains__(self, key: object) -> bool:
        return key in self._indexed()

    def __iter__(self) -> Iterator[K]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def items(self) -> ItemsView[K, V]:
        return _Items(self, self._keys, self._values)

    def values(self) -> ValuesView[V]:
        return _Values(self, self._values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(zip(self._keys, self._values, strict=True))!r})"


class _Items(ItemsView[K, V], Generic[K, V]):
    __slots__ = ("_pairs",)

    def __init__(self, mapping: Mapping[K, V], keys: Sequence[K], values: Sequence[V]) -> None:
        super().__init__(mapping)
        self._pairs = (keys, values)

    def __iter__(self) -> Iterator[tuple[K, V]]:
        return zip(*self._pairs, strict=True)

    def __len__(self) -> int:
        return len(self._pairs[0])


class _Values(ValuesView[V], Generic[V]):
    __slots__ = ("_sequence",)

    def __init__(self, mapping: Mapping[Any, V], values: Sequence[V]) -> None:
        super().__init__(mapping)
        self._sequence = values

    def __iter__(self) -> Iterator[V]:
        return iter(self._sequence)

    def __len__(self) -> int:
        return len(self._sequence)


class LazyMapping(Mapping[K, V]):
    """A read-only mapping whose content ``build()`` makes on first use (once)."""

    __slots__ = ("_build", "_data")

    def __init__(self, build: Callable[[], Mapping[K, V]]) -> None:
        self._build: Callable[[], Mapping[K, V]] | None = build
        self._data: Mapping[K, V] | None = None

    def _resolved(self) -> Mapping[K, V]:
        if self._data is None:
            assert self._build is not None
            self._data, self._build = self._build(), None
        return self._data

    def __getitem__(self, key: K) -> V:
        return self._resolved()[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._resolved())

    def __len__(self) -> int:
        return len(self._resolved())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({dict(self._resolved())!r})"
