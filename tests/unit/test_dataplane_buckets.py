"""Weights -> buckets: exact shares, largest remainder, tiny weights kept, zero means none."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.dataplane.buckets import ranges, split


@pytest.mark.parametrize(("weights", "expected"), [
    ([0.7, 0.3], (7000, 3000)),
    ([0.3, 0.7], (3000, 7000)),
    ([70, 30], (7000, 3000)),
    ([1, 1, 1], (3334, 3333, 3333)),
    ([0.1] * 10, (1000,) * 10),
    ([0.5, 0.0, 0.5], (5000, 0, 5000)),
    ([0.0, 0.0], (0, 0)),
    ([1.0], (10000,)),
    ([1e-9, 1.0], (1, 9999)),  # a positive weight never rounds to "no new flows"
])
def test_split_exact_cases(weights: list[float], expected: tuple[int, ...]) -> None:
    assert split(weights, 10_000) == expected


def test_split_other_resolutions() -> None:
    assert split([0.7, 0.3], 100) == (70, 30)
    assert split([2, 1], 3) == (2, 1)


def test_split_refuses_negative_weights_and_too_small_resolutions() -> None:
    with pytest.raises(ValueError):
        split([1.0, -0.1], 100)
    with pytest.raises(ValueError):
        split([1, 1, 1], 2)


def test_ranges_are_contiguous_and_skip_zero() -> None:
    assert ranges([7000, 0, 3000]) == ((0, 7000), None, (7000, 10000))


weights = st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False), min_size=1,
                   max_size=40)


@given(weights)
def test_split_sums_and_stays_within_one_bucket(values: list[float]) -> None:
    result = split(values, 10_000)
    total = sum(Fraction(v) for v in values)
    if total == 0:
        assert set(result) == {0}
        return
    assert sum(result) == 10_000
    lifted = sum(1 for v, b in zip(values, result, strict=True) if v > 0 and Fraction(v) * 10_000 / total < 1)
    for value, buckets in zip(values, result, strict=True):
        exact = Fraction(value) * 10_000 / total
        assert (buckets > 0) == (value > 0)
        assert abs(buckets - exact) < 1 + lifted  # lifting tiny weights may take a bucket from the largest


@given(weights, st.floats(min_value=0.001, max_value=1000))
def test_split_ignores_scale(values: list[float], scale: float) -> None:
    scaled = [v * scale for v in values]
    if all(Fraction(a) * Fraction(scale) == Fraction(b) for a, b in zip(values, scaled, strict=True)):
        assert split(values, 10_000) == split(scaled, 10_000)
