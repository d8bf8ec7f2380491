"""What one service's decision remembers from one step to the next.

:func:`~dyncast_bgp.engine.decide.decide` takes the previous
:class:`ServiceMemory` and returns the next one; the caller (the engine's one
state-owning task) only stores it. It is immutable, so an old memory can be
kept for replay or comparison without copying. Instances are remembered by
their :data:`~dyncast_bgp.engine.candidate.Ident` (an int; cheap to hash),
which is unique within the service the memory belongs to.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from dyncast_bgp.engine.candidate import Ident

_EMPTY: Mapping[Ident, float] = MappingProxyType({})


class ServiceMemory(NamedTuple):
    """Per-service stability state (a NamedTuple: immutable, and built 10,000 times per full recompute).

    ``weights``: the last decision's weights by instance (empty after a blackhole).
    ``moved_at``: when they last moved (for ``min_dwell``), None before any move.
    ``incumbent``: the instance ``best`` chose last time.
    ``limited``: instances a limit excluded last time (re-admitted with hysteresis).
    ``ineligible_since``: when the service last found no eligible instance, None
    while some instance is eligible (the fallback grace runs from here).
    """

    weights: Mapping[Ident, float] = _EMPTY
    moved_at: float | None = None
    incumbent: Ident | None = None
    limited: frozenset[Ident] = frozenset()
    ineligible_since: float | None = None


EMPTY = ServiceMemory()
"""The memory of a service decided for the first time."""
