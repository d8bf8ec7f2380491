"""Carry out a story's actions on a running lab (I/O: commands inside the lab's namespaces)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from dyncast_bgp.lab.demo.story import Action, Story
from dyncast_bgp.lab.errors import LabError

SERVICE_PORT = 8080
SERVICE_NAME = "web"


class LabControl(Protocol):
    """What the demo needs of a running lab (dyncast_bgp.lab.runner.LabRun provides it)."""

    def exec(self, node: str, command: str | Sequence[str], *, check: bool = True,
             timeout: float = 15.0) -> subprocess.CompletedProcess[str]: ...

    def impair(self, node: str, ifname: str, *, delay_ms: float = 0.0, jitter_ms: float = 0.0,
               loss: float = 0.0) -> float: ...


def perform(lab: LabControl, story: Story, action: Action) -> str:
    """Do ``action``; return what was done (for the log and the report). Raises LabError on failure."""
    if action.kind == "impair":
        node, _, ifname = action.target.partition(":")
        lab.impair(node, ifname, delay_ms=action.value, loss=action.loss)
        return action.describe()
    if action.kind in ("drain", "undrain"):
        site = story.site_by_name(story.site_of(action.target))
        done = lab.exec(site.agent, ["dyncast", "ctl", "--socket", site.control_socket, action.kind,
                                     f"{SERVICE_NAME}/{action.target}"], check=False)
        if done.returncode != 0:
            raise LabError(f"{action.describe()}: dyncast ctl exited {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()}")
        return action.describe()
    path = {"busy": f"/admin/load?busy={int(action.value)}", "fail": "/admin/fail",
            "recover": "/admin/recover"}[action.kind]
    site = story.site_by_name(story.site_of(action.target))
    url = f"http://{story.instance_address[action.target]}:{SERVICE_PORT}{path}"
    done = lab.exec(site.agent, ["curl", "-sS", "-m", "2", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}",
                                 url], check=False)
    if done.returncode != 0 or not done.stdout.strip().startswith("2"):
        raise LabError(f"{action.describe()}: POST {url} gave {done.stdout.strip() or done.stderr.strip()}")
    return action.describe()
