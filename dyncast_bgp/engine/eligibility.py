"""Which instances may take new flows, and why the others may not.

Checked in this order; the first that applies is the reason:

1. ``down``; path ``unreachable`` (probes unanswered) — not healthy: never used,
   not even by the fallback.
2. ``drained``, ``draining`` — the operator's intent; healthy, so the
   ``least-cost`` fallback may use them, after every other healthy instance.
3. held out by the router before the decision (``Candidate.hold``: flap
   dampening); unknown inputs with ``unknown_metrics: exclude``; a reported
   capacity of 0.
4. Hard limits: mean RTT over ``latency_budget_ms``, mean loss over ``loss_budget``.
5. Soft limits: the agent's overloaded flag, ``utilisation >= utilization_ceiling``.

Every exclusion but a soft limit is **hard**: the instance drops out of the
weights at once (docs/control-law.md section 5). A **soft** limit
(:attr:`Exclusion.soft`) only stops growth: the instance gets no share of the
target, and a weight it still holds is walked down to 0 by the ordinary
stability step (slew limit, EWMA, dwell) instead of being dropped in one
step. Load is the one condition every ingress sees at the same moment from
the same report, and it is caused by the ingresses themselves: dropping an
instance at the ceiling everywhere at once moves its whole share onto the
others in one second, which pushes the next one over (the ceiling cascade of
docs/decisions/0004-soft-utilisation-ceiling.md). Down, unreachable, draining
and a path over its budget are facts about the instance or the path that no
ingress causes, so they act at once.

Limits have hysteresis: an instance excluded by a limit in the previous
decision (``limited``) is re-admitted only once every value is back below
``limit / (1 + hysteresis)``, so an instance hovering at a limit does not
enter and leave the set at every metric update.

Reasons are stable texts (the limit, never the live value, which the
explanation shows): a decision whose exclusions did not change compares equal
to the previous one, so a metric update of an excluded instance does not make
the dataplane re-apply an unchanged state. (An instance shedding under a soft
limit still has a weight; its entry in ``Decision.reasons``, like every
weight's, shows the live value: :func:`shedding_note`.)
"""

from __future__ import annotations

from dataclasses import dataclass

from dyncast_bgp.engine.params import Params
from dyncast_bgp.model import InstanceState, PathMetrics, StateFlag

TIER_UNHEALTHY = -1
TIER_LIMIT = 0
TIER_DRAINING = 1
TIER_DRAINED = 2
TIER_HELD = 3


@dataclass(frozen=True, slots=True)
class Exclusion:
    """Why an instance takes no new flows.

    ``limit``: excluded by a limit (re-admitted with hysteresis). ``soft``: a
    soft limit (the overloaded flag, the utilisation ceiling): no new share,
    but a weight the instance holds comes down by the slew limit rather than
    at once. ``tier``: the order in which the ``least-cost`` fallback considers
    healthy-but-ineligible instances (lowest first); ``TIER_UNHEALTHY``
    instances are never used.
    """

    reason: str
    limit: bool = False
    tier: int = TIER_LIMIT
    soft: bool = False

    @property
    def healthy(self) -> bool:
        return self.tier != TIER_UNHEALTHY


DOWN = Exclusion("down", tier=TIER_UNHEALTHY)
UNREACHABLE = Exclusion("unreachable: path probes unanswered", tier=TIER_UNHEALTHY)
DRAINED = Exclusion("drained", tier=TIER_DRAINED)
DRAINING = Exclusion("draining", tier=TIER_DRAINING)
NO_CAPACITY = Exclusion("capacity 0", tier=TIER_DRAINING)
OVERLOADED = Exclusion("overloaded (agent flag)", limit=True, soft=True)


def flap_damped(penalty: float) -> Exclusion:
    """Held out by the router's flap dampening (:mod:`~dyncast_bgp.engine.flap`); ``penalty`` is the one after
    the last flap, so the text changes only with a new flap. Healthy, but the fallback's last resort."""
    return Exclusion(f"flap-damped (penalty {penalty:.1f})", tier=TIER_HELD)


def state_exclusion(state: InstanceState, reachable: bool) -> Exclusion | None:
    """Step 1-2: the exclusion that the instance's state or path reachability implies, if any."""
    if state is InstanceState.DOWN:
        return DOWN
    if not reachable:
        return UNREACHABLE
    if state is InstanceState.DRAINED:
        return DRAINED
    if state is InstanceState.DRAINING:
        return DRAINING
    return None


def unknown_exclusion(unknown: tuple[str, ...]) -> Exclusion:
    """Step 3 with ``unknown_metrics: exclude``."""
    return Exclusion(f"unknown metrics: {', '.join(unknown)}")


def _over(value: float, limit: float, limited: bool, p: Params, *, inclusive: bool = False) -> bool:
    """Whether ``value`` is over ``limit``; for a ``limited`` instance, not yet back below the re-admission level."""
    if limited and limit > 0.0:
        return value >= limit * p.readmit_factor
    return value >= limit if inclusive else value > limit


def _limit_reason(what: str, limit: float, unit: str, name: str, *, limited: bool, p: Params,
                  soft: bool = False) -> Exclusion:
    if limited:
        return Exclusion(f"{what} not yet back below {limit * p.readmit_factor:.4g}{unit} ({name} {limit:g}{unit})",
                         limit=True, soft=soft)
    return Exclusion(f"{what} over the {limit:g}{unit} {name}", limit=True, soft=soft)


def limit_exclusion(utilisation: float | None, flags: StateFlag, path: PathMetrics, p: Params, *,
                    limited: bool) -> Exclusion | None:
    """Steps 4-5: the first limit the instance is over, or None; a hard limit before a soft one.

    ``limited``: a limit excluded it in the previous decision (re-admission
    hysteresis). The utilisation ceiling is inclusive: at the ceiling there
    is no room left.
    """
    rtt = path.rtt_mean_us
    if p.latency_budget_us is not None and rtt is not None and _over(rtt, p.latency_budget_us, limited, p):
        return _limit_reason("rtt", p.latency_budget_us / 1000.0, " ms", "budget", limited=limited, p=p)
    loss = path.loss_mean
    if p.loss_budget is not None and loss is not None and _over(loss, p.loss_budget, limited, p):
        return _limit_reason("loss", p.loss_budget, "", "budget", limited=limited, p=p)
    if flags & StateFlag.OVERLOADED:
        return OVERLOADED
    if utilisation is not None and _over(utilisation, p.ceiling, limited, p, inclusive=True):
        return _limit_reason("utilisation", p.ceiling, "%", "ceiling", limited=limited, p=p, soft=True)
    return None


SHEDDING = "no new share, shedding by slew"


def shedding_note(exclusion: Exclusion, utilisation: float, p: Params) -> str:
    """Why an instance under a soft limit still holds a weight, with the live value (for ``Decision.reasons``)."""
    if exclusion is OVERLOADED:
        return f"{exclusion.reason}: {SHEDDING}"
    if utilisation >= p.ceiling:
        return f"utilisation {utilisation:.1f}% >= ceiling {p.ceiling:g}%: {SHEDDING}"
    return (f"utilisation {utilisation:.1f}% not yet back below {p.ceiling * p.readmit_factor:.4g}% "
            f"(ceiling {p.ceiling:g}%): {SHEDDING}")
