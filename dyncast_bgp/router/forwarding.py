"""Which way the ingress reaches an instance: the first `router.forwarding` rule matching its D-BID.

Pure. Without a matching rule the instance is a directly connected next hop
(its D-BID), which suits intra-site server access (ETSI GR NFV-EVE 020 clause
5.2); across a transit that knows no D-SID, configure an encapsulation.
"""

from __future__ import annotations

from collections.abc import Sequence

from dyncast_bgp.config.schema import ForwardingRule
from dyncast_bgp.dataplane.desired import Encap, Forwarding
from dyncast_bgp.model import IPAddress


def forwarding_for(binding: IPAddress, rules: Sequence[ForwardingRule]) -> Forwarding:
    for rule in rules:
        if rule.prefix.version == binding.version and binding in rule.prefix:
            mode = Encap(rule.mode)
            if mode is Encap.DIRECT:
                return Forwarding(mode, next_hop=rule.next_hop or binding, device=rule.device)
            return Forwarding(mode, remote=rule.remote or binding, local=rule.local, device=rule.device)
    return Forwarding(Encap.DIRECT, next_hop=binding)
