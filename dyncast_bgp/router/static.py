"""Path metrics from `router.static_paths` (replay, or paths that are not probed). Pure."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from dyncast_bgp.config.schema import StaticPath
from dyncast_bgp.model import IPAddress, PathMetrics


def static_paths(paths: Sequence[StaticPath]) -> Callable[[IPAddress], PathMetrics]:
    table = {path.binding: _metrics(path) for path in paths}
    empty = PathMetrics()
    return lambda binding: table.get(binding, empty)


def _metrics(path: StaticPath) -> PathMetrics:
    rtt = None if path.rtt_ms is None else path.rtt_ms * 1000.0
    throughput = None if path.throughput_mbps is None else path.throughput_mbps * 1e6
    return PathMetrics(rtt_mean_us=rtt, rtt_peak_us=rtt, loss_mean=path.loss, loss_peak=path.loss,
                       throughput_bps=throughput)
