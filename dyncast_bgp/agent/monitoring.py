"""Monitoring parameters as ETSI names them, mapped onto what the agent and routers carry. Pure.

ETSI GR NFV-EVE 020 Table 5.1.3-1 lists the Dyncast monitoring parameters:
compute ``cpu_utilization`` (NFV-TST 008 clause 6.6, Processor Utilization)
and memory ``memory_utilization`` (clause 8.6, Memory Used over memory
allocated), reported for an instance; and the network set (mean and peak
latency, throughput, packet loss rate between Dyncast nodes), which the
ingress routers measure themselves with path probes toward each D-BID.

A registration names the parameters that apply to its instance (``monitoring``)
and may push values of instance parameters (``parameters``: the orchestrator
"provides the collected monitoring parameters", EVE 020 Table 5.1.2.4-1 step 1).
Names are accepted as in the table ("mean packet loss rate") or with
underscores; the wire metrics (:data:`dyncast_bgp.wire.community.BY_NAME`) are
accepted under their own names too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dyncast_bgp.wire.community import BY_NAME


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str  # as ETSI (or our wire registry) names it, with underscores
    kind: str  # compute | memory | network | service
    carried_as: str  # the wire metric, or the router's path statistic
    measured_by: str  # "agent" (announced in BGP) | "router probes"


_NETWORK = (
    Parameter("mean_latency", "network", "rtt_mean_us", "router probes"),
    Parameter("peak_latency", "network", "rtt_peak_us", "router probes"),
    Parameter("mean_throughput", "network", "throughput_bps", "router probes"),
    Parameter("peak_throughput", "network", "throughput_bps", "router probes"),
    Parameter("mean_packet_loss_rate", "network", "loss_mean", "router probes"),
    Parameter("peak_packet_loss_rate", "network", "loss_peak", "router probes"),
)
_KINDS = {"cpu_utilization": "compute", "gpu_utilization": "compute", "memory_utilization": "memory"}

PARAMETERS: dict[str, Parameter] = {
    **{name: Parameter(name, _KINDS.get(name, "service"), name, "agent")
       for name in BY_NAME if name not in ("state", "version")},
    **{parameter.name: parameter for parameter in _NETWORK},
}


def normalise(name: str) -> str:
    """``"Mean packet loss rate"`` and ``mean-packet-loss-rate`` -> ``mean_packet_loss_rate``."""
    return "_".join(name.strip().lower().replace("-", " ").split())


def known_names() -> str:
    return ", ".join(PARAMETERS)


def parameter(name: str) -> Parameter:
    """The parameter ``name`` stands for; ValueError (listing the known ones) when there is none."""
    found = PARAMETERS.get(normalise(name))
    if found is None:
        raise ValueError(f"unknown monitoring parameter {name!r}; known: {known_names()}")
    return found


def check_monitoring(names: Iterable[str]) -> tuple[str, ...]:
    """Normalised, de-duplicated, in the order given."""
    seen: dict[str, None] = {}
    for name in names:
        seen[parameter(name).name] = None
    return tuple(seen)


def to_wire_values(values: Mapping[str, float]) -> dict[str, float]:
    """Pushed parameter values as wire metrics; a network parameter is refused (the routers measure it)."""
    wire: dict[str, float] = {}
    for name, value in values.items():
        found = parameter(name)
        if found.measured_by != "agent":
            raise ValueError(f"{found.name} is measured by the routers' path probes toward the D-BID, "
                             "not announced by the agent; list it in `monitoring` instead")
        wire[found.carried_as] = value
    return wire


def describe(names: Iterable[str]) -> dict[str, dict[str, str]]:
    """How each named parameter reaches the decision (for GET answers)."""
    return {name: {"kind": PARAMETERS[name].kind, "carried_as": PARAMETERS[name].carried_as,
                   "measured_by": PARAMETERS[name].measured_by} for name in names}
