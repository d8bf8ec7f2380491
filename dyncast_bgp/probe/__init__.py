"""Path probes from an ingress to each instance (C-NMA in CATS terms); docs/probes.md.

Public API:

- :class:`Prober`: asyncio prober for thousands of targets (UDP echo or ICMP);
  ``set_targets``, ``snapshot``, ``on_change``.
- :class:`PathWindow`, :class:`ChangeThreshold`: the pure statistics.
- :class:`ProbeSchedule`: the pure scheduler/matcher under the prober.
- :mod:`~dyncast_bgp.probe.packet`: the probe packet codec (also used by
  :mod:`dyncast_bgp.agent.echo`, the responder).
"""

from dyncast_bgp.probe.packet import PacketError, ProbePacket
from dyncast_bgp.probe.prober import ChangeCallback, Prober, ProberCounters, queue_sink
from dyncast_bgp.probe.schedule import ProbeSchedule, TargetStatus
from dyncast_bgp.probe.sockets import ProbeSetupError
from dyncast_bgp.probe.static import static_metrics, throughput_from_static
from dyncast_bgp.probe.window import ChangeThreshold, PathWindow, changed_materially

__all__ = [
    "ChangeCallback",
    "ChangeThreshold",
    "PacketError",
    "PathWindow",
    "ProbePacket",
    "ProbeSchedule",
    "ProbeSetupError",
    "Prober",
    "ProberCounters",
    "TargetStatus",
    "changed_materially",
    "queue_sink",
    "static_metrics",
    "throughput_from_static",
]
