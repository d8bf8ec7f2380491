"""Render an ExaBGP configuration for the agent or router role. Pure: returns text.

What it writes, per neighbor: router-id, local and peer AS, addresses, hold
time, optional TCP-MD5 password, optional ``rate-limit`` (messages per second
read from the neighbour), explicit families (without them ExaBGP offers every
family it knows), ADD-PATH (send for the agent, receive for the router) and
graceful restart when configured, and the API binding to the dyncast process. For the agent,
``manual-eor`` and ``neighbor-changes`` unless ``agent.end_of_rib_wait`` is 0: the agent sends End-of-RIB
itself once it has announced (:mod:`~dyncast_bgp.agent.eor`).
ExaBGP (4.2 and 5.0) has no maximum-prefix limit and no TCP-AO (RFC 5925):
the router enforces prefix limits itself (``router.trust``, docs/hardening.md).
The agent's process uses the text encoder (it only writes); the router's uses
the JSON encoder and receives parsed updates and neighbor changes. The same
text is valid for ExaBGP 5.0 and 4.2 (checked by tests with each version's
own validation).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Literal

from dyncast_bgp.config.schema import Config, Neighbor

Role = Literal["agent", "router"]
PROCESS = {"agent": "dyncast-agent", "router": "dyncast-router"}


def render(config: Config, *, role: Role, command: Sequence[str], config_path: str) -> str:
    """The ExaBGP configuration text; ``command`` is the dyncast executable (argv prefix)."""
    process = PROCESS[role]
    argv = [*command, role, "--config", config_path]
    lines = [
        f"# ExaBGP configuration for the dyncast {role}, rendered by `dyncast exabgp-conf --role {role}`.",
        "# Run: env exabgp_daemon_user=root exabgp_api_cli=false exabgp THIS_FILE",
        "",
        f"process {process} {{",
        f"    run {' '.join(shlex.quote(arg) for arg in argv)};",
        f"    encoder {'text' if role == 'agent' else 'json'};",
    ]
    if role == "agent" and not config.agent.respawn:
        lines.append("    respawn false;")
    lines.append("}")
    for neighbor in config.bgp.neighbors:
        lines.append("")
        lines.extend(_neighbor(config, neighbor, role, process))
    if not config.bgp.neighbors:
        lines.append("")
        lines.append("# no bgp.neighbors in the config: add them to announce anything")
    return "\n".join(lines) + "\n"


def _neighbor(config: Config, neighbor: Neighbor, role: Role, process: str) -> list[str]:
    bgp = config.bgp
    body = [
        f"router-id {bgp.router_id};",
        f"local-as {bgp.local_as};",
        f"peer-as {neighbor.peer_as};",
        f"hold-time {neighbor.hold_time};",
    ]
    if neighbor.description:
        body.append(f'description "{_quote(neighbor.description)}";')
    if neighbor.local_address is not None:
        body.append(f"local-address {neighbor.local_address};")
    if neighbor.md5_password:
        body.append(f'md5-password "{_quote(neighbor.md5_password)}";')
    if neighbor.passive:
        body.append("passive true;")
    if neighbor.rate_limit is not None:
        body.append(f"rate-limit {neighbor.rate_limit};")
    eor_by_agent = role == "agent" and config.agent.end_of_rib_wait > 0
    if eor_by_agent:
        body.append("manual-eor true;")  # the agent sends it once it has announced (agent/eor.py)
    body.append("family {")
    body.extend(f"    {family};" for family in neighbor.families)
    body.append("}")
    capability = []
    if bgp.add_path:
        capability.append(f"add-path {'send' if role == 'agent' else 'receive'};")
    if bgp.graceful_restart is not None:
        capability.append(f"graceful-restart {bgp.graceful_restart};")
    if role == "router":
        capability.append("route-refresh;")  # a respawned router asks its peers to send their routes again
    if capability:
        body.append("capability {")
        body.extend(f"    {line}" for line in capability)
        body.append("}")
    body.append("api {")
    body.append(f"    processes [ {process} ];")
    if role == "router" or eor_by_agent:
        body.append("    neighbor-changes;")
    if role == "router":
        body.append("    receive {")
        body.append("        parsed;")
        body.append("        update;")
        body.append("    }")
    body.append("}")
    return [f"neighbor {neighbor.address} {{", *(f"    {line}" for line in body), "}"]


def _quote(text: str) -> str:
    if any(ch in text for ch in '"\\;{}\n'):
        raise ValueError(f"cannot be written into an ExaBGP config: {text!r} (contains \" \\ ; {{ }} or newline)")
    return text
