"""Which instances' flows the router evicts for operations: drained instances. Pure.

An agent marks an instance *drained* (state flags draining + drained, ops/drain.py) when its
soft drain is over (no sessions left, or its deadline) or at once for a hard drain. The
router then deletes the conntrack and affinity entries still pinned to it
(``Dataplane.evict``), after the state without it is installed, so each of those flows
takes a new weighted pick on its next packet (REL006 6.2(2a) "migration of existing
traffic flows"; A.4.2 "switch the rest"). This is independent of the service's
``shift_on_failure``: a drained instance is being taken out on purpose, its flows must move.

An instance is evicted once, when the decision first excludes it as ``drained``; it must
leave that state (undrain) before a later drain evicts it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dyncast_bgp.model import Decision, InstanceKey, ServiceId

DRAINED_REASON = "drained"  # engine/eligibility.py DRAINED


@dataclass(slots=True)
class DrainedTracker:
    """Remembers which instances each service's last decision had as drained."""

    drained: dict[ServiceId, frozenset[InstanceKey]] = field(default_factory=dict)

    def observe(self, decisions: Iterable[Decision]) -> dict[InstanceKey, str]:
        """Instances newly excluded as drained in these decisions (to evict), with the reason ``drained``."""
        evict: dict[InstanceKey, str] = {}
        for decision in decisions:
            excluded = decision.excluded
            if DRAINED_REASON not in excluded.values():  # the usual decision: nothing drained (compared in C)
                if self.drained:
                    self.drained.pop(decision.service, None)
                continue
            now = frozenset(key for key, reason in excluded.items() if reason == DRAINED_REASON)
            before = self.drained.get(decision.service, frozenset())
            for key in now - before:
                evict[key] = "drained"
            if now:
                self.drained[decision.service] = now
            else:
                self.drained.pop(decision.service, None)
        return evict
