"""Weights -> whole buckets out of the service's resolution (pure).

A new flow draws ``numgen random mod R`` (R = :attr:`Layout.resolution`,
10,000 by default) and takes the instance owning that bucket, so an instance
with ``b`` buckets gets a share of exactly ``b / R`` of the new flows.

Rounding is the largest-remainder (Hamilton) method on the exact binary
values of the weights (scaled to integers: no rounding error enters): each
instance first gets ``floor(R * w / sum(w))`` buckets, the buckets left over
go one each to the largest remainders (ties: earlier instance first). The result always sums to R, no instance is more
than one bucket (0.01 %) away from its exact share, and shares that are
whole multiples of 1/R come out exactly: 70/30 -> 7000/3000, 1/3 each ->
3334/3333/3333. One exception: an instance with a positive weight below
half a bucket still gets one bucket (taken from the largest), so a tiny
weight never silently means "no new flows"; weight 0 means exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence


def split(weights: Sequence[float], resolution: int) -> tuple[int, ...]:
    """Buckets per weight, summing to ``resolution`` (or all zero when every weight is 0)."""
    if len(weights) == 1:  # the common single-instance service
        if weights[0] < 0:
            raise ValueError("weights must be >= 0")
        return (resolution,) if weights[0] > 0 else (0,)
    if len(weights) == 2 and resolution >= 2:  # the next most common: the same method, inlined
        return _split_two(weights[0], weights[1], resolution)
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    if resolution < sum(1 for w in weights if w > 0):
        raise ValueError(f"resolution {resolution} is smaller than the number of weighted instances")
    exact = _integers(weights)
    total = sum(exact)
    if total == 0:
        return tuple(0 for _ in weights)
    scaled = [w * resolution for w in exact]
    buckets = [value // total for value in scaled]
    left = resolution - sum(buckets)
    if left:
        order = sorted(range(len(scaled)), key=lambda i: (-(scaled[i] % total), i))
        for index in order[:left]:
            buckets[index] += 1
    for index, weight in enumerate(exact):
        if weight > 0 and buckets[index] == 0:
            donor = max(range(len(buckets)), key=lambda i: (buckets[i], -i))
            buckets[donor] -= 1
            buckets[index] = 1
    return tuple(buckets)


def _split_two(first: float, second: float, resolution: int) -> tuple[int, int]:
    """:func:`split` of two weights (the same arithmetic without the lists and the sort)."""
    if first < 0 or second < 0:
        raise ValueError("weights must be >= 0")
    a_num, a_den = first.as_integer_ratio()
    b_num, b_den = second.as_integer_ratio()
    if a_den != b_den:  # both are powers of two: scale to the larger
        common = max(a_den, b_den)
        a_num, b_num = a_num * (common // a_den), b_num * (common // b_den)
    total = a_num + b_num
    if total == 0:
        return (0, 0)
    a_scaled, b_scaled = a_num * resolution, b_num * resolution
    a, b = a_scaled // total, b_scaled // total
    if a + b < resolution:  # one bucket left: the larger remainder, the first on a tie
        if a_scaled % total >= b_scaled % total:
            a += 1
        else:
            b += 1
    if a_num > 0 and a == 0:  # a positive weight keeps one bucket, taken from the other
        return (1, b - 1)
    if b_num > 0 and b == 0:
        return (a - 1, 1)
    return (a, b)


def _integers(weights: Sequence[float]) -> list[int]:
    """The weights scaled by one power of two to exact integers (a float is m * 2**e, so this is exact)."""
    ratios = [w.as_integer_ratio() for w in weights]  # floats and ints both have it
    common = max((denominator for _, denominator in ratios), default=1)  # every denominator is a power of two
    return [numerator * (common // denominator) for numerator, denominator in ratios]


def ranges(buckets: Sequence[int]) -> tuple[tuple[int, int] | None, ...]:
    """The half-open bucket range ``[low, high)`` of each instance in order (None for 0 buckets)."""
    out: list[tuple[int, int] | None] = []
    low = 0
    for count in buckets:
        out.append((low, low + count) if count else None)
        low += count
    return tuple(out)
