"""A rogue BGP peer against a real router: ExaBGP + `dyncast router` with a trust policy, two ExaBGP announcers.

The honest peer announces three services with an instance at 50 % of 1,000 requests/s. The rogue peer
(allowed to announce two D-SIDs, metrics clamped) announces a D-SID it is not allowed, one allowed D-SID
with absurd metrics (0 % load, capacity 10^9) and one with a false but plausible claim (0 % load,
capacity 5,000). Unprotected, the rogue would draw nearly all new flows of the two allowed services.
The router's status file shows: the refused service never lists the rogue; the absurd metrics are
discarded (neutral, so at most an equal share); the clamped ones give at most an equal share; the
rejections are counted by reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.lab.agent_speaker import RenderedExaBgp, start_speaker
from dyncast_bgp.lab.announcer import Announcer
from dyncast_bgp.lab.daemons import ExaBgp, Local, Peer, wait_established
from dyncast_bgp.lab.netns import Lab, LanPort
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.wire.metrics import encode_metrics, exabgp_list

pytestmark = [pytest.mark.netns, pytest.mark.interop]

AS = 65000
ROUTER, GOOD, ROGUE = "10.0.9.1", "10.0.9.2", "10.0.9.66"
REFUSED, ABSURD, CLAMPED = "203.0.113.99/32", "203.0.113.60/32", "203.0.113.61/32"


@dataclass
class Network:
    router: RenderedExaBgp
    status: Path
    good: Announcer
    rogue: Announcer

    def document(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(self.status.read_text())
        except (OSError, ValueError):
            return None
        return data


def _announce(dsid: str, next_hop: str, **metrics: float) -> str:
    return f"announce route {dsid} next-hop {next_hop} extended-community {exabgp_list(encode_metrics(metrics))}"


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create network namespaces (run as root, e.g. in CI)")
    with Lab(prefix="dctr") as lab:
        router_ns, good_ns, rogue_ns = lab.namespaces("router", "good", "rogue")
        lab.lan("lan", [LanPort(router_ns, (f"{ROUTER}/24",)), LanPort(good_ns, (f"{GOOD}/24",)),
                        LanPort(rogue_ns, (f"{ROGUE}/24",))])
        speakers = {}
        announcers = {}
        for name, namespace, address in (("good", good_ns, GOOD), ("rogue", rogue_ns, ROGUE)):
            announcers[name] = Announcer(lab.directory(f"{name}-announcer"), name=name)
            speakers[name] = ExaBgp(lab, namespace, name=f"{name}-exabgp", local=Local(AS, address, (address,)),
                                    peers=[Peer(ROUTER, AS, passive=True, add_path_receive=False)],
                                    processes=[announcers[name].process()], receive_updates=False)
            speakers[name].start()
        directory = lab.directory("router-config")
        status = directory / "status.json"
        config = {"router": {
            "probes": {"enabled": False}, "status_file": str(status), "status_interval": 0.2,
            "defaults": {"max_step": 1.0, "min_dwell": 0, "smoothing": 1.0},
            "trust": {"default": {"dsids": [], "metrics": "ignored"},  # unknown peers may announce nothing
                      "peers": [{"peer": GOOD, "dsids": ["203.0.113.0/24"], "dbids": [f"{GOOD}/32"]},
                                {"peer": ROGUE, "name": "rogue", "dsids": [ABSURD, CLAMPED],
                                 "metrics": "clamped", "clamp": {"min_utilization": 50, "max_capacity": 1000}}]}}}
        router = start_speaker(lab, router_ns, Local(AS, ROUTER, (ROUTER,)), [Peer(GOOD, AS), Peer(ROGUE, AS)],
                               role="router", config=config, directory=directory, name="router",
                               extra_args=["--no-dataplane", "--no-probes"])
        wait_established([(speakers["good"], ROUTER), (speakers["rogue"], ROUTER)], timeout=30)
        yield Network(router, status, announcers["good"], announcers["rogue"])


def _weights(document: dict[str, Any] | None, service: str) -> dict[str, float] | None:
    if document is None or service not in document.get("services", {}):
        return None
    weights: dict[str, float] = document["services"][service]["weights"]
    return weights


def test_rogue_announcements_get_no_flow_or_no_more_than_an_honest_share(network: Network) -> None:
    network.good.send(*(_announce(dsid, GOOD, cpu_utilization=50, capacity=1000)
                        for dsid in (REFUSED, ABSURD, CLAMPED)))
    network.rogue.send(_announce(REFUSED, ROGUE, cpu_utilization=0, capacity=10**6),
                       _announce(ABSURD, ROGUE, cpu_utilization=0, capacity=10**9),
                       _announce(CLAMPED, ROGUE, cpu_utilization=0, capacity=5000))

    def settled(document: dict[str, Any] | None) -> bool:
        clamped = _weights(document, CLAMPED)
        absurd = [] if document is None else document.get("services", {}).get(ABSURD, {}).get("instances", [])
        return (_weights(document, REFUSED) is not None and any(item["instance"] == ROGUE for item in absurd)
                and clamped is not None and ROGUE in clamped)

    document = expect(network.document, settled, what="decisions for all three services with the rogue's paths",
                      timeout=20, wait=0.2)
    assert document is not None
    assert _weights(document, REFUSED) == {GOOD: 1.0}  # refused at intake: not even excluded
    instances = {item["key"] if "key" in item else json.dumps(item) for item in
                 document["services"][REFUSED]["instances"]}
    assert not any(ROGUE in text for text in instances)
    # unprotected the rogue would get ~100 % (ABSURD) and ~91 % (CLAMPED)
    absurd = _weights(document, ABSURD)
    assert absurd == {GOOD: 1.0}, absurd  # no flow to the rogue: its route is held out ("metrics rejected")
    clamped = _weights(document, CLAMPED)
    assert clamped is not None and clamped[ROGUE] <= 0.5 + 1e-6, clamped
    rejections = document["counters"]["rejections"]
    assert rejections.get("dsid-not-allowed", 0) >= 1
    assert rejections.get("metrics-implausible", 0) >= 1
    assert rejections.get("metrics-clamped", 0) >= 1
    log = (network.router.directory / "exabgp.log").read_text(errors="replace")
    assert '"input_rejected"' in log and '"rule": "rogue"' in log
