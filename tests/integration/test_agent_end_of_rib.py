"""The agent's End-of-RIB (agent/eor.py) through a real ExaBGP 5.0 and 4.2, as the interop lab's ExaBGP receiver
sees it.

The agent's only instance is ready 6 s after it starts (its health check sleeps), long after ExaBGP's session
to the receiver is up: the situation after an agent node restarts. With ``agent.end_of_rib_wait`` (the default)
the rendered config says ``manual-eor`` and the agent sends End-of-RIB after its route; with 0, ExaBGP sends its
own when the session is up, before the route: a peer keeping the node's routes stale (graceful restart) would
flush them then. Both orders are checked, so the test tells them apart.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from dyncast_bgp.lab.agent_speaker import start_agent
from dyncast_bgp.lab.interop import InteropLab, instance_address
from dyncast_bgp.lab.netns import Lab
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.wire.exabgp_json import EndOfRib, RouteUpdate, parse_line
from tests.integration.conftest import require_receiver
from tests.unit.test_exabgp_conf import EXABGP5, EXABGP42

pytestmark = [pytest.mark.netns, pytest.mark.interop]

SLOT = 1
DSID = "203.0.113.41/32"
A = instance_address(6, "ipv4")
READY_AFTER = 6.0  # seconds: the health check's sleep


def config(wait: float) -> dict[str, object]:
    return {
        "bgp": {"add_path": True},
        "agent": {"respawn": False, "end_of_rib_wait": wait, "publish": {"min_interval": 0.2, "refresh_interval": 30}},
        "services": [{"name": "web", "dsid": DSID, "instances": [
            {"name": "a", "binding": A, "static": {"cpu_utilization": 30},
             "health": {"type": "command", "argv": ["/bin/sh", "-c", f"sleep {READY_AFTER:g}"], "interval": 10,
                        "timeout": READY_AFTER + 2, "rise": 1, "fall": 1}}]}],
    }


def _seen(events: Path, offset: int, peer: str) -> list[str]:
    """What ``peer`` sent after ``offset``, in order: "route" (an UPDATE announcing DSID), "eor" (IPv4's)."""
    with events.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").splitlines()
    seen = []
    for line in lines:
        event = parse_line(line)
        if isinstance(event, RouteUpdate) and str(event.peer) == peer and any(
                str(route.prefix) == DSID for route in event.announced):
            seen.append("route")
        elif isinstance(event, EndOfRib) and str(event.peer) == peer and event.family == "ipv4 unicast":
            seen.append("eor")
    return seen


@pytest.mark.parametrize("exabgp", [EXABGP5, EXABGP42], ids=["exabgp-5.0", "exabgp-4.2"])
@pytest.mark.parametrize("wait", [30.0, 0.0], ids=["agent-sends-end-of-rib", "exabgp-sends-end-of-rib"])
def test_end_of_rib_comes_after_the_agent_s_first_route(lab: Lab, interop: InteropLab, wait: float,
                                                        exabgp: Path) -> None:
    require_receiver(interop, "exabgp")
    if not exabgp.exists():
        pytest.fail(f"{exabgp} is missing: run scripts/setup.sh (it installs ExaBGP 4.2 in .venv-exabgp42)")
    version = "42" if exabgp == EXABGP42 else "50"
    receiver = interop.daemons["exabgp"]
    events = receiver.events_path  # type: ignore[attr-defined]
    offset = events.stat().st_size if events.exists() else 0
    peer = str(ipaddress.ip_address(interop.speakers[SLOT].local.addresses[0]))
    receiver_address = receiver.local.addresses[0]
    case = f"{'agent' if wait else 'exabgp'}-{version}"
    directory = lab.directory(f"end-of-rib-{case}")
    speaker = start_agent(interop, SLOT, config(wait), directory, name=f"eor-agent-{case}", executable=str(exabgp))
    try:
        seen = expect(lambda: _seen(events, offset, peer), lambda found: "route" in found and "eor" in found,
                      what=f"{DSID} and the IPv4 End-of-RIB from {peer} at the ExaBGP receiver",
                      timeout=READY_AFTER + 20,
                      diagnose=lambda: (speaker.directory / "exabgp.log").read_text(errors="replace")[-3000:])
    finally:
        speaker.stop()
    first = [kind for index, kind in enumerate(seen) if kind not in seen[:index]]
    if wait:
        assert first == ["route", "eor"], seen
        log = (speaker.directory / "exabgp.log").read_text(errors="replace")
        sent = [line for line in log.splitlines() if '"end_of_rib_sent"' in line and f'"{receiver_address}"' in line]
        assert '"bgp_session_up"' in log and len(sent) == 1 and '"settled": true' in sent[0], sent
    else:  # ExaBGP's own: what a restarted node's peers got before the agent sent its own
        assert first == ["eor", "route"], seen
