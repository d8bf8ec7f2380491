"""Run `dyncast agent` inside ExaBGP in a speaker slot of the interop lab.

The speaker runs the configuration that `dyncast exabgp-conf --role agent`
renders from the agent's YAML config, exactly as an operator would, so the
renderer, ExaBGP and the agent are exercised together. Used by the interop
tests and by `dyncast lab agent-demo`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from dyncast_bgp.exabgp.render import Role
from dyncast_bgp.lab.daemons.base import Local, Peer
from dyncast_bgp.lab.daemons.exabgp import ExaBgp
from dyncast_bgp.lab.interop import InteropLab
from dyncast_bgp.lab.netns import Lab, Namespace


class RenderedExaBgp(ExaBgp):
    """ExaBGP running a configuration text given from outside (not the harness's own)."""

    def __init__(self, *args: Any, rendered: str, **kwargs: Any) -> None:
        self._rendered = rendered
        super().__init__(*args, **kwargs)

    def write_config(self) -> None:
        self.config_path.write_text(self._rendered)


def dyncast_executable() -> str:
    return str(Path(sys.executable).with_name("dyncast"))


def base_config(local: Local, peers: Sequence[Peer]) -> dict[str, Any]:
    """The ``bgp`` section for an agent with identity ``local`` peering with ``peers``."""
    source = local.addresses[0]
    return {"router_id": local.router_id, "local_as": local.asn,
            "neighbors": [{"address": peer.address, "peer_as": peer.asn, "local_address": source,
                           "description": peer.description} for peer in peers]}


def start_speaker(lab: Lab, namespace: Namespace, local: Local, peers: Sequence[Peer], *, role: Role,
                  config: Mapping[str, Any], directory: Path, name: str, extra_args: Sequence[str] = (),
                  executable: str | None = None) -> RenderedExaBgp:
    """Write ``config`` (``bgp`` merged over the identity), render ExaBGP's for ``role``, start it.

    ``extra_args`` are appended to the dyncast command ExaBGP runs (e.g. ``--no-dataplane``); ``executable`` is
    the ExaBGP to run (default: the project's 5.0; e.g. ``.venv-exabgp42/bin/exabgp`` for 4.2).
    """
    merged = dict(config)
    merged["bgp"] = {**base_config(local, peers), **dict(config.get("bgp", {}))}
    config_path = directory / f"{role}.yml"
    config_path.write_text(yaml.safe_dump(merged, sort_keys=False))
    dyncast = dyncast_executable()
    rendered = subprocess.run([dyncast, "exabgp-conf", "--role", role, "--config", str(config_path),
                               "--dyncast", dyncast], capture_output=True, text=True, check=True).stdout
    if extra_args:
        rendered = rendered.replace(f"--config {config_path};", f"--config {config_path} {' '.join(extra_args)};")
    speaker = RenderedExaBgp(lab, namespace, name=name, local=local, peers=peers, receive_updates=False,
                             rendered=rendered, executable=executable)
    speaker.start()
    return speaker


def start_agent(interop: InteropLab, slot: int, config: Mapping[str, Any], directory: Path,
                *, name: str = "agent-exabgp", executable: str | None = None) -> RenderedExaBgp:
    """The agent in speaker ``slot`` of the interop lab, peering with every receiver."""
    spec = interop.speakers[slot]
    return start_speaker(interop.lab, spec.namespace, spec.local, spec.peers, role="agent", config=config,
                         directory=directory, name=name, executable=executable)


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
