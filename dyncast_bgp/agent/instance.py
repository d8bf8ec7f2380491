"""What one instance should announce, from what the agent last observed. Pure.

An instance is announced when it is *ready* (its health is known and every
metric source has reported once, success or failure), *healthy*, not
administratively withdrawn, and no source with ``on_failure: withdraw`` is
stale. Its metrics are, in order of precedence: the latest values of its
sources (later sources override earlier ones), its configured capacity, its
static values.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from dyncast_bgp.model import IPAddress, MetricsView, StateFlag

UTILISATION_METRICS = ("cpu_utilization", "memory_utilization", "gpu_utilization")


class Admin(enum.StrEnum):
    """What the operator asked for this instance."""

    ACTIVE = "active"
    CANARY = "canary"
    DRAINING = "draining"  # announced with the draining flag: no new flows
    WITHDRAWN = "withdrawn"  # not announced at all


class OnFailure(enum.StrEnum):
    KEEP_LAST = "keep-last"
    DROP = "drop"
    WITHDRAW = "withdraw"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """The last result of one metric source."""

    on_failure: OnFailure
    max_age: float
    values: MetricsView = field(default_factory=MetricsView)
    good_at: float | None = None  # when the source was asked for ``values`` (they are no older)
    error: str | None = None  # the last failure, None after a success
    reported: bool = False

    def succeeded(self, values: MetricsView, now: float) -> SourceStatus:
        return replace(self, values=values, good_at=now, error=None, reported=True)

    def failed(self, error: str) -> SourceStatus:
        return replace(self, error=error, reported=True)

    def fresh(self, now: float) -> bool:
        return self.good_at is not None and now - self.good_at <= self.max_age

    def usable_values(self, now: float) -> MetricsView:
        if self.error is None:
            return self.values
        if self.on_failure is not OnFailure.DROP and self.fresh(now):
            return self.values  # keep-last, and withdraw until the instance is withdrawn at max_age
        return MetricsView()

    def forces_withdraw(self, now: float) -> bool:
        return self.on_failure is OnFailure.WITHDRAW and self.error is not None and not self.fresh(now)


@dataclass(frozen=True, slots=True)
class InstanceStatus:
    name: str
    binding: IPAddress
    admin: Admin = Admin.ACTIVE
    healthy: bool = False
    health_known: bool = False
    health_detail: str = ""
    sources: tuple[SourceStatus, ...] = ()
    static: MetricsView = field(default_factory=MetricsView)
    capacity: float | None = None
    version: int | None = None
    overload_at: float = 95.0
    drained: bool = False  # with admin draining: the drain is over (ops/drain.py), announced with the drained flag

    @property
    def ready(self) -> bool:
        return self.health_known and all(source.reported for source in self.sources)

    def metrics(self, now: float) -> MetricsView:
        merged = dict(self.static)
        if self.capacity is not None:
            merged["capacity"] = self.capacity
        for source in self.sources:
            merged.update(source.usable_values(now))
        return MetricsView(merged)

    def read_at(self, name: str, now: float) -> float | None:
        """When the value :meth:`metrics` gives for ``name`` was read from its source (the last source holding
        it, as there); None when it comes from the static values or none holds it."""
        for source in reversed(self.sources):
            if name in source.usable_values(now):
                return source.good_at
        return None

    def flags(self, metrics: MetricsView) -> StateFlag:
        flags = StateFlag.NONE
        if self.admin is Admin.DRAINING:
            flags |= StateFlag.DRAINING | (StateFlag.DRAINED if self.drained else StateFlag.NONE)
        if self.admin is Admin.CANARY:
            flags |= StateFlag.CANARY
        if any(metrics.get(name, 0.0) >= self.overload_at for name in UTILISATION_METRICS):
            flags |= StateFlag.OVERLOADED
        return flags

    def withhold_reason(self, now: float) -> str | None:
        """Why the instance is not announced now (None: announce it)."""
        if self.admin is Admin.WITHDRAWN:
            return "withdrawn by the operator"
        if not self.ready:
            return "waiting for the first health result and metrics"
        if not self.healthy:
            return f"unhealthy: {self.health_detail or 'health check failing'}"
        for source in self.sources:
            if source.forces_withdraw(now):
                return f"metric source failing: {source.error}"
        return None
