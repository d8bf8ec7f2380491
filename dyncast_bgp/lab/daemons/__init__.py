"""BGP daemons for labs: ExaBGP, FRR, BIRD and GoBGP in network namespaces, with one RIB type.

Each module's docstring lists what was learned about running that daemon here
(command lines, output formats, pitfalls).
"""

from dyncast_bgp.lab.daemons.base import Daemon, Local, Peer, require_binaries, wait_established, wait_routes
from dyncast_bgp.lab.daemons.bird import Bird
from dyncast_bgp.lab.daemons.exabgp import ApiProcess, ExaBgp
from dyncast_bgp.lab.daemons.frr import Frr
from dyncast_bgp.lab.daemons.gobgp import GoBgp

__all__ = ["ApiProcess", "Bird", "Daemon", "ExaBgp", "Frr", "GoBgp", "Local", "Peer", "require_binaries",
           "wait_established", "wait_routes"]
