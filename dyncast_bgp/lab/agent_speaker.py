"""Run `dyncast agent` inside ExaBGP in a speaker slot of the interop lab.

The speaker runs the configuration that `dyncast exabgp-conf --role agent`
renders from the agent's YAML config, exactly as an operator would, so the
renderer, ExaBGP and the agent are exercised together. Used by the interop
tests and by `dyncast lab agent-demo`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dyncast_bgp.lab.daemons.exabgp import ExaBgp
from dyncast_bgp.lab.interop import InteropLab


class RenderedExaBgp(ExaBgp):
    """ExaBGP running a configuration text given from outside (not the harness's own)."""

    def __init__(self, *args: Any, rendered: str, **kwargs: Any) -> None:
        self._rendered = rendered
        super().__init__(*args, **kwargs)

    def write_config(self) -> None:
        self.config_path.write_text(self._rendered)


def dyncast_executable() -> str:
    return str(Path(sys.executable).with_name("dyncast"))


def base_config(interop: InteropLab, slot: int) -> dict[str, Any]:
    """The ``bgp`` section for an agent in ``slot``: one neighbor per receiver of the lab."""
    spec = interop.speakers[slot]
    local = spec.local.addresses[0]
    return {"router_id": spec.local.router_id, "local_as": spec.local.asn,
            "neighbors": [{"address": peer.address, "peer_as": peer.asn, "local_address": local,
                           "description": peer.description} for peer in spec.peers]}


def start_agent(interop: InteropLab, slot: int, config: Mapping[str, Any], directory: Path,
                *, name: str = "agent-exabgp") -> RenderedExaBgp:
    """Write ``config`` (with ``bgp`` merged over the slot's identity), render ExaBGP's, start it."""
    merged = dict(config)
    merged["bgp"] = {**base_config(interop, slot), **dict(config.get("bgp", {}))}
    config_path = directory / "agent.yml"
    config_path.write_text(yaml.safe_dump(merged, sort_keys=False))
    dyncast = dyncast_executable()
    rendered = subprocess.run([dyncast, "exabgp-conf", "--role", "agent", "--config", str(config_path),
                               "--dyncast", dyncast], capture_output=True, text=True, check=True).stdout
    spec = interop.speakers[slot]
    speaker = RenderedExaBgp(interop.lab, spec.namespace, name=name, local=spec.local, peers=spec.peers,
                             receive_updates=False, rendered=rendered)
    speaker.start()
    return speaker


def child_pids(speaker: ExaBgp) -> list[int]:
    """Processes ExaBGP started (the agent): read from /proc, never matched by name."""
    pids: list[int] = []
    for process in speaker.processes:
        for task in Path(f"/proc/{process.pid}/task").glob("*"):
            try:
                pids.extend(int(pid) for pid in (task / "children").read_text().split())
            except OSError:
                continue
    return pids
