"""Building frozen dataclasses without their generated ``__init__``, for the router's hot loop.

A frozen dataclass only guards ``__setattr__``: its generated ``__init__`` sets
each field through ``object.__setattr__``, a slow call per field. The slot
descriptors of a ``slots=True`` dataclass set a field directly. The hot paths
(one object per instance of every changed service: 160,000 in a full
recompute) build their objects with these setters; the property tests in
``tests/property/test_fast_paths.py`` hold each such object equal to the one the
constructor builds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

Setter = Callable[[Any, Any], None]


def slot_setters(cls: type) -> tuple[Setter, ...]:
    """The slot setter of every field of the frozen, slotted dataclass ``cls``, in field order (derived from
    ``dataclasses.fields``, so a field added later is not missed)."""
    return tuple(cls.__dict__[field.name].__set__ for field in dataclasses.fields(cls))
