"""A discrete-event simulator of Dyncast steering: sites, ingresses, what they know, and the policies compared.

Public API: :func:`load` a scenario, :func:`simulate` it under one policy
(:data:`POLICIES`), :func:`summarise` the run. ``dyncast simulate`` is the
command line (:mod:`dyncast_bgp.sim.commands`); docs/evaluation.md the results.
"""

from dyncast_bgp.sim.policies import POLICIES, Policy, PolicySpec
from dyncast_bgp.sim.scenario import Scenario, ScenarioError, load, parse
from dyncast_bgp.sim.stats import Summary, summarise
from dyncast_bgp.sim.world import RunResult, simulate

__all__ = ["POLICIES", "Policy", "PolicySpec", "RunResult", "Scenario", "ScenarioError", "Summary", "load",
           "parse", "simulate", "summarise"]
