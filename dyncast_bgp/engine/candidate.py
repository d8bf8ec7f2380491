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
from dyncast_bgp.slots import slot_setters

Ident = int
"""``D-BID << 32 | path id``, plus bit 161 for IPv6: an instance's identity within its service."""
IPV6_BIT = 1 << 161
PATH_ID_BITS = 32


@dataclass(frozen=True, slots=True, init=False)
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

    def __init__(self, key: InstanceKey, state: InstanceState, metrics: ComputeMetrics, path: PathMetrics,  # noqa: PLR0917
                 metrics_age: float | None = None, name: str | None = None, hold: Exclusion | None = None) -> None:
        # written out: the RIB builds one per instance of every dirty service (160,000 in a full recompute),
        # and the generated __init__ of a frozen dataclass calls object.__setattr__ per field
        set_key, set_state, set_metrics, set_path, set_age, set_name, set_hold = _CANDIDATE_SLOTS
        set_key(self, key)
        set_state(self, state)
        set_metrics(self, metrics)
        set_path(self, path)
        set_age(self, metrics_age)
        set_name(self, name)
        set_hold(self, hold)


_CANDIDATE_SLOTS = slot_setters(Candidate)


def ident_of(key: InstanceKey) -> Ident:
    """The :data:`Ident` of ``key`` (unique within its service, ordered like ``key.sort_key``)."""
    binding = key.binding
    ident = int(binding) << PATH_ID_BITS | key.path_id
    return ident if type(binding) is IPv4Address else ident | IPV6_BIT
