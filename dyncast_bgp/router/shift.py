"""Session shift on failure (issue 9 item 4): which instances' flows to move when they fail. Pure.

ETSI GR NFV-EVE 020 clause 5.1: a session can be shifted to another site
during its life when its site stops working properly. With
``shift_on_failure: true`` in a service's router policy, an instance that
*fails* loses its existing flows: the router deletes their conntrack and
affinity entries (``Dataplane.evict``), so each flow's next packet takes a
new weighted pick among the instances still eligible. It suits stateless and
UDP services; for TCP a moved flow meets a new instance that resets it, so
the default (false) keeps flows where they are (they end with the instance).

A failure is the decision turning an instance out for one of these reasons:

- ``withdrawn``: its route is gone (agent withdrew it: unhealthy, operator withdraw, deregistered);
- ``down``: announced with the down state;
- ``unreachable``: the router's path probes go unanswered;
- ``budget``: its path breaks the service's latency or loss budget.

Draining, utilisation limits, flap dampening and the like are not failures:
those instances keep their flows (that is what draining is for). An instance
is evicted once, when it fails; it must take new flows again before a later
failure evicts it again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from dyncast_bgp.model import Decision, InstanceKey, ServiceId


def failure_of(reason: str) -> str | None:
    """The failure an exclusion reason names, or None when the instance has not failed."""
    if reason == "down":
        return "down"
    if reason.startswith("unreachable"):
        return "unreachable"
    if reason.startswith(("rtt ", "loss ")) and "budget" in reason:
        return "budget"
    return None


@dataclass(slots=True)
class ShiftTracker:
    """Remembers each service's last decision and says which instances just failed."""

    last: dict[ServiceId, Decision] = field(default_factory=dict)

    def observe(self, decisions: Iterable[Decision], enabled: Callable[[ServiceId], bool]) -> dict[InstanceKey, str]:
        """Instances of services with shift-on-failure that failed since the previous decision, with the failure."""
        failed: dict[InstanceKey, str] = {}
        for decision in decisions:
            if not enabled(decision.service):  # a service's policy is fixed: its decisions need not be kept
                continue
            before = self.last.get(decision.service)
            self.last[decision.service] = decision
            if before is None:
                continue
            for key in (*before.weights, *before.excluded):
                earlier = before.excluded.get(key)
                if key in decision.weights or (earlier is not None and failure_of(earlier) is not None):
                    continue  # still taking flows, or failed before (evicted then)
                reason = decision.excluded.get(key)
                why = "withdrawn" if reason is None else failure_of(reason)
                if why is not None:
                    failed[key] = why
        return failed
