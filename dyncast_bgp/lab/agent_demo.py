"""`dyncast lab agent-demo`: the agent announcing to real BGP daemons, step by step.

Builds the interop lab in network namespaces (an ExaBGP receiver, an FRR route
reflector with an ADD-PATH client, BIRD and GoBGP), runs `dyncast agent` inside
ExaBGP with two services, and plays a short story: announce, a load rise, a
failed health check, recovery, a stop. After each step it waits until every
receiver shows the expected routes, prints what each receiver holds (metrics
decoded from its own output) and how long the change took to reach all of them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from dyncast_bgp.lab.agent_speaker import child_pids, start_agent
from dyncast_bgp.lab.daemons import wait_routes
from dyncast_bgp.lab.interop import InteropLab, instance_address, missing_binaries
from dyncast_bgp.lab.netns import Lab
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.rib import Route
from dyncast_bgp.wire.community import decode
from dyncast_bgp.wire.metrics import decode_metrics

DSID4 = "203.0.113.10/32"
DSID6 = "2001:db8:53::1/128"
A, B, C = instance_address(0, "ipv4"), instance_address(1, "ipv4"), instance_address(0, "ipv6")
SHOWN = ("cpu_utilization", "active_sessions", "capacity")


@dataclass(frozen=True, slots=True)
class Step:
    title: str
    act: Callable[[], None]
    expect4: set[str]  # next hops expected for DSID4 at every receiver
    expect6: set[str]
    check: Callable[[list[Route]], bool] = lambda routes: True


def _write(path: Path, text: str) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _describe(route: Route) -> str:
    if route.ext_communities is None:
        return f"via {route.next_hop:<12} (values not shown by this daemon)"
    decoded = decode_metrics([decode(raw) for raw in route.ext_communities])
    values = decoded.metrics.values
    shown = ", ".join(f"{name}={values[name]:g}" for name in SHOWN if name in values)
    flags = decoded.metrics.flags
    flags_text = str(flags.name).lower() if flags else "none"
    return f"via {route.next_hop:<12} {shown}, flags={flags_text}"


def _cpu_of(route: Route) -> float | None:
    decoded = decode_metrics([decode(raw) for raw in route.ext_communities or ()])
    return decoded.metrics.values.get("cpu_utilization")


def run_demo(out: TextIO) -> int:
    missing = missing_binaries()
    if missing:
        out.write(f"missing daemons: {missing}; run scripts/setup.sh first\n")
        return 1
    started = time.monotonic()
    with Lab(prefix="dcdemo") as lab:
        out.write("building the lab: 7 network namespaces on one LAN, ExaBGP, FRR, BIRD, GoBGP ...\n")
        interop = InteropLab(lab, speakers=1)
        interop.start_receivers()
        directory = lab.directory("agent")
        metrics, healthy = directory / "a.metrics", directory / "b.healthy"
        _write(metrics, "cpu_utilization=20\nactive_sessions=120\n")
        healthy.write_text("")
        config = {
            "bgp": {"add_path": True},
            "agent": {"respawn": False, "publish": {"min_interval": 0.5, "refresh_interval": 30}},
            "services": [
                {"name": "web", "dsid": DSID4, "instances": [
                    {"name": "web-a", "binding": A, "capacity": 1000,
                     "metrics": [{"type": "file", "path": str(metrics), "interval": 0.25, "timeout": 0.2}]},
                    {"name": "web-b", "binding": B, "capacity": 2000, "static": {"cpu_utilization": 35},
                     "health": {"type": "command", "argv": ["/usr/bin/test", "-e", str(healthy)],
                                "interval": 0.5, "fast_interval": 0.1, "timeout": 0.4, "rise": 2, "fall": 2}}]},
                {"name": "dns", "dsid": DSID6, "instances": [
                    {"name": "dns-a", "binding": C, "capacity": 500, "static": {"cpu_utilization": 12.5}}]},
            ],
        }
        speaker = start_agent(interop, 0, config, directory)
        interop.wait_established([0])
        out.write(f"sessions Established after {time.monotonic() - started:.1f} s; agent config: "
                  f"{directory / 'agent.yml'}\n")

        def stop_agent() -> None:
            pids = expect(lambda: child_pids(speaker), lambda found: len(found) == 1, what="the agent process")
            os.kill(pids[0], signal.SIGTERM)  # the agent runs under ExaBGP: signalled by its pid

        steps = [
            Step("1. the agent announces web (2 instances, ADD-PATH) and dns (IPv6)", lambda: None, {A, B}, {C}),
            Step("2. web-a's load rises to 85 % (its metrics file changes)",
                 lambda: _write(metrics, "cpu_utilization=85\nactive_sessions=900\n"), {A, B}, {C},
                 lambda routes: any(r.next_hop == A and _cpu_of(r) == 85.0 for r in routes)),
            Step("3. web-b's health check fails (fall=2): it is withdrawn", healthy.unlink, {A}, {C}),
            Step("4. web-b is healthy again (rise=2): it is announced again", healthy.touch,
                 {A, B}, {C}),
            Step("5. SIGTERM to the agent: it withdraws everything before exiting", stop_agent, set(), set()),
        ]
        for step in steps:
            _play(step, interop, out)
    out.write(f"\ndone in {time.monotonic() - started:.1f} s; every namespace and process removed.\n")
    return 0


def _play(step: Step, interop: InteropLab, out: TextIO) -> None:
    out.write(f"\n{step.title}\n")
    began = time.monotonic()
    step.act()
    for receiver in interop.receiver_names:
        view = interop.value_view(receiver)
        routes4 = wait_routes(view, DSID4, lambda found: {r.next_hop for r in found} == step.expect4
                              and (not found or step.check(found)), timeout=20)
        routes6 = wait_routes(view, DSID6, lambda found: {r.next_hop for r in found} == step.expect6, timeout=20)
        label = receiver if receiver != "frr" else "frr (via its RR client)"
        out.write(f"   {label}\n")
        for route in sorted(routes4 + routes6, key=lambda r: (r.prefix, r.next_hop)):
            out.write(f"      {route.prefix:<20} {_describe(route)}\n")
        if not routes4 and not routes6:
            out.write("      (no routes)\n")
    out.write(f"   -> reached all {len(interop.receiver_names)} receivers in {time.monotonic() - began:.2f} s\n")
