"""How a canary rollout bends one service's decision: caps on the new version, or holding it out. Pure.

The router passes the candidates of a service under a rollout through :func:`steer_candidates`
before :func:`~dyncast_bgp.engine.decide.decide`:

- while the rollout runs (or is paused) at a stage with share ``s`` < 1, each of the ``n``
  new-version instances that may take new flows gets the cap ``s / n`` (``decide``'s caps hook):
  together they never get more than ``s`` of the new flows; the excess goes to the old version;
- once rolled back, the new-version instances are held out (an exclusion, like flap dampening):
  they take no new flows at once, flows already on them stay (unless the rollback is hard,
  when the router evicts them);
- committed, or share 1: nothing changes.

With ``clients`` (a client-prefix canary), the decision is the split for those clients only;
the router gives every other client the same split without the new version
(:func:`without_new_version`), so the new version gets none of their new flows until the
commit.

Caps bound the *target*; ``decide`` moves weights toward it at the slew rate, and its first
decision starts from the capacity split. So that the new version is never above the stage's
share, not even for one decision, the router passes the previous decision's weights: when the
new version had more than the share then (or there is no previous decision), it is held out for
this one decision (:data:`RESET`) and comes back from 0, below its cap, at the next review.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.eligibility import TIER_HELD, Exclusion
from dyncast_bgp.model import InstanceKey, IPNetwork


@dataclass(frozen=True, slots=True)
class VersionSteer:
    version: int  # the new version's tag (wire metric 0x31)
    share: float  # 0-1: the most of the new flows the new version may take
    hold: str | None = None  # hold the new version out, with this reason (rolled back)
    clients: tuple[IPNetwork, ...] = ()  # the new version only for new flows from these clients (none: all)


RESET = "rollout: new version above its stage share, held out for one decision"
EPSILON = 1e-9


def steer_candidates(candidates: Sequence[Candidate], steer: VersionSteer,
                     previous: Mapping[InstanceKey, float] | None = None
                     ) -> tuple[list[Candidate], dict[InstanceKey, float] | None, frozenset[InstanceKey]]:
    """The candidates (new-version ones held out when rolled back), the caps for ``decide``, the new-version keys.

    ``previous``: the weights of the service's previous decision (None: there was none).
    """
    new = [c for c in candidates if c.metrics.version == steer.version]
    keys = frozenset(c.key for c in new)
    if steer.hold is None and steer.share < 1.0 and new and (
            previous is None or sum(w for key, w in previous.items() if key in keys) > steer.share + EPSILON):
        steer = VersionSteer(steer.version, steer.share, RESET)
    if steer.hold is not None:
        held = Exclusion(steer.hold, tier=TIER_HELD)
        return [replace(c, hold=held) if c.key in keys and c.hold is None else c for c in candidates], None, keys
    if steer.share >= 1.0 or not new:
        return list(candidates), None, keys
    taking = [c for c in new if c.state.takes_new_flows and c.hold is None] or new
    cap = steer.share / len(taking)
    return list(candidates), {c.key: cap for c in new}, keys


def without_new_version(weights: Mapping[InstanceKey, float], new: frozenset[InstanceKey]) -> dict[InstanceKey, float]:
    """``weights`` with the new version at 0 and the rest scaled to sum 1 (a client-prefix canary's split for
    everyone outside the audience). When nothing else takes flows, ``weights`` as they are: no client is left
    without a service for a canary's sake."""
    rest = sum(weight for key, weight in weights.items() if key not in new)
    if rest <= EPSILON:
        return dict(weights)
    return {key: 0.0 if key in new else weight / rest for key, weight in weights.items()}
