"""What the decision sees of one instance: the RIB's view plus the path to it.

The RIB builds one :class:`Candidate` per instance of a service. It derives
``state`` from the state flags and the health/peer status, and applies the
metric age limit (``router.metrics_max_age``) before the decision runs: expired
metrics arrive as an empty :class:`~dyncast_bgp.model.ComputeMetrics`, so the
decision only ever handles *absent* metrics ("unknown"), never stale ones.

Within one service the decision identifies an instance by its :data:`Ident`,
one int that sorts like :attr:`InstanceKey.sort_key` does within a service
(IPv4 before IPv6, then D-BID, then ADD-PATH path id). An ``InstanceKey``
hashes and compares in Python code (its ``ipaddress`` fields); an int does
both in C, which matters at 160,000 instances per full recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address

from dyncast_bgp.engine.eligibility import Exclusion
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, PathMetrics

Ident = int
"""``D-BID << 32 | path id``, plus bit 161 for IPv6: an instance's identity within its service."""
IPV6_BIT = 1 << 161
PATH_ID_BITS = 32


@dataclass(frozen=True, slots=True)
class Candidate:
    """One instance of a service as an input to :func:`dyncast_bgp.engine.decide.decide`.

    ``metrics_age`` is the number of seconds since the metrics were received
    (None: unknown); it is shown in explanations, never used to score.
    ``hold``: an exclusion the router imposes before the decision (flap
    dampening); it applies after ``down``/``draining``, before everything else.
    """

    key: InstanceKey
    state: InstanceState
    metrics: ComputeMetrics
    path: PathMetrics
    metrics_age: float | None = None
    name: str | None = None
    hold: Exclusion | None = None
    """Set by the router to hold a healthy instance out (flap dampening); checked after the state."""


def ident_of(key: InstanceKey) -> Ident:
    """The :data:`Ident` of ``key`` (unique within its service, ordered like ``key.sort_key``)."""
    binding = key.binding
    ident = int(binding) << PATH_ID_BITS | key.path_id
    return ident if type(binding) is IPv4Address else ident | IPV6_BIT
