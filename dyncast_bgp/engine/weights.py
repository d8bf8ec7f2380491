"""Operations on weight vectors: normalising, and capping with water-filling.

Weights are lists of non-negative floats (one per instance, in the canonical
order of :mod:`~dyncast_bgp.engine.assess`) or dicts for the rarely used caps;
every function returns new values that sum to 1 (when the input is not
empty), so results depend on nothing but the canonically ordered input.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeVar

K = TypeVar("K")


def normalise(values: Sequence[float]) -> list[float]:
    """``values`` scaled to sum to 1; an equal split when they sum to 0.

    Values so large that their sum overflows are first scaled by the largest.
    """
    total: float = sum(values)
    if total == math.inf:
        largest = max(values)
        values = [value / largest for value in values]
        total = sum(values)
    if total > 0.0:
        return list(map(total.__rtruediv__, values))  # value / total, without a Python frame per value
    share = 1.0 / len(values) if values else 0.0
    return [share] * len(values)


def apply_caps(weights: Mapping[K, float], caps: Mapping[K, float]) -> tuple[dict[K, float], frozenset[K]]:
    """Cap each weight at ``caps[key]`` (0-1), giving the excess to the uncapped ones.

    Water-filling: the weights above their cap are set to it, the others are
    scaled up (in proportion to their weights; equally if those are all 0) to
    keep the sum at 1, and so on until no weight is above its cap. When every
    weight is capped and the caps sum to less than 1, the caps cannot be met
    and the result is the caps scaled up to sum to 1. Returns the weights and
    the keys that were held at (or, when unsatisfiable, scaled from) a cap.
    """
    result = dict(weights)
    capped: set[K] = set()
    while True:
        over = [key for key, value in result.items()
                if key not in capped and key in caps and value > _cap(caps[key])]
        if not over:
            return result, frozenset(capped)
        for key in over:
            capped.add(key)
            result[key] = _cap(caps[key])
        free = [key for key in result if key not in capped]
        if not free:
            keys = list(result)
            return dict(zip(keys, normalise([result[key] for key in keys]), strict=True)), frozenset(capped)
        _fill(result, free, 1.0 - sum(result[key] for key in capped))


def _cap(value: float) -> float:
    return min(max(value, 0.0), 1.0)


def _fill(result: dict[K, float], free: list[K], rest: float) -> None:
    """Scale the ``free`` weights in place so that they sum to ``rest``."""
    basis = sum(result[key] for key in free)
    if basis > 0.0:
        for key in free:
            result[key] = result[key] * rest / basis
    else:
        for key in free:
            result[key] = rest / len(free)
