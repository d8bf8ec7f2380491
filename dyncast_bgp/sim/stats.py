"""The figures of one run: response-time percentiles, SLO misses, peak utilisation, oscillation index.

Pure functions of a :class:`~dyncast_bgp.sim.world.RunResult`.

- Response times are those of the requests that arrived after the warm-up.
- ``peak_utilisation``: the highest utilisation any site had over a window of
  ``PEAK_WINDOW_S`` (after the warm-up), as a fraction (1.0: saturated).
- ``oscillation``: how much the traffic shares swing: per bucket (1 s) the share
  of requests each site received; the index is the mean, over consecutive
  buckets after the warm-up, of half the sum of absolute share changes, i.e. the
  fraction of the traffic that moved to another site from one second to the
  next. Sampling noise alone gives a floor (about 0.02-0.04 in the built-in
  scenarios; the ``random`` policy shows it).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from dyncast_bgp.sim.world import RunResult

PEAK_WINDOW_S = 10.0
CDF_POINTS = 200


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    over_slo: float
    peak_utilisation: float
    oscillation: float
    retried: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def responses_ms(result: RunResult) -> npt.NDArray[np.float64]:
    return np.frombuffer(result.responses, dtype=np.float64) * 1000.0


def first_bucket(result: RunResult) -> int:
    return int(result.warmup_s / result.bucket_s)


def summarise(result: RunResult) -> Summary:
    times = responses_ms(result)
    if times.size == 0:
        return Summary(0, float("nan"), float("nan"), float("nan"), float("nan"), peak_utilisation(result),
                       oscillation_index(result.traffic[first_bucket(result):]), result.retried)
    p50, p99 = np.percentile(times, [50.0, 99.0])
    return Summary(int(times.size), round(float(times.mean()), 3), round(float(p50), 3), round(float(p99), 3),
                   round(float(np.count_nonzero(times > result.slo_s * 1000.0)) / times.size, 6),
                   round(peak_utilisation(result), 4),
                   round(oscillation_index(result.traffic[first_bucket(result):]), 4), result.retried)


def shares(traffic: list[list[int]]) -> list[list[float]]:
    """Per bucket, the fraction of requests each site received (all 0 in a bucket without requests)."""
    out = []
    for row in traffic:
        total = sum(row)
        out.append([count / total if total else 0.0 for count in row])
    return out


def oscillation_index(traffic: list[list[int]]) -> float:
    """Mean fraction of the traffic that changed site between consecutive buckets (empty buckets skipped)."""
    rows = [row for row in shares(traffic) if any(row)]
    if len(rows) < 2:
        return 0.0
    moves = [0.5 * sum(abs(b - a) for a, b in zip(before, after, strict=True))
             for before, after in itertools.pairwise(rows)]
    return sum(moves) / len(moves)


def peak_utilisation(result: RunResult) -> float:
    rows = result.utilisation[first_bucket(result):]
    if not rows:
        return 0.0
    window = max(1, round(PEAK_WINDOW_S / result.bucket_s))
    matrix = np.asarray(rows, dtype=np.float64)
    if matrix.shape[0] < window:
        return float(matrix.mean(axis=0).max())
    kernel = np.ones(window) / window
    return float(max(np.convolve(matrix[:, s], kernel, mode="valid").max() for s in range(matrix.shape[1])))


def cdf_points(result: RunResult, points: int = CDF_POINTS) -> tuple[list[float], list[float]]:
    """(response time ms, cumulative fraction) at ``points`` quantiles, denser in the tail."""
    times = responses_ms(result)
    if times.size == 0:
        return [], []
    levels = 1.0 - np.geomspace(1.0, 1e-4, points)
    values = np.quantile(times, levels)
    return [round(float(v), 4) for v in values], [round(float(q), 6) for q in levels]
