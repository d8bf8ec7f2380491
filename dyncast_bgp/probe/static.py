"""Path metrics from configuration (``router.static_paths``): capacities and fixed values.

Throughput is never measured by the prober: ``throughput_bps`` is the configured
capacity of the path (``throughput_mbps``) or None. Paths that are not probed
(offline replay, paths that cannot be probed) take all their values from here.
"""

from __future__ import annotations

from collections.abc import Iterable

from dyncast_bgp.config.schema import StaticPath
from dyncast_bgp.model import IPAddress, PathMetrics


def throughput_from_static(paths: Iterable[StaticPath]) -> dict[IPAddress, float]:
    """Configured path capacity in bits/s per D-BID (paths without ``throughput_mbps`` are left out)."""
    return {path.binding: path.throughput_mbps * 1e6 for path in paths if path.throughput_mbps is not None}


def static_metrics(path: StaticPath) -> PathMetrics:
    """The configured values as metrics: mean = peak, reachable (nothing says otherwise)."""
    rtt_us = None if path.rtt_ms is None else path.rtt_ms * 1000.0
    return PathMetrics(rtt_mean_us=rtt_us, rtt_peak_us=rtt_us, loss_mean=path.loss, loss_peak=path.loss,
                       throughput_bps=None if path.throughput_mbps is None else path.throughput_mbps * 1e6,
                       reachable=True)
