"""Carry out a story's actions on a running lab (I/O: commands inside the lab's namespaces)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from typing import Protocol

from dyncast_bgp.ctl.client import ClientError, call
from dyncast_bgp.ctl.protocol import Request
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
        # a unix socket is a file: reachable from here whatever network namespace the agent runs in
        site = story.site_by_name(story.site_of(action.target))
        try:
            answer = call(site.control_socket, Request(action.kind, {"instance": f"{SERVICE_NAME}/{action.target}"}),
                          timeout=5.0)
        except ClientError as exc:
            raise LabError(f"{action.describe()}: {exc}") from None
        if not answer.get("ok"):
            raise LabError(f"{action.describe()}: the agent refused: {answer.get('error')}")
        return action.describe()
    path = {"busy": f"/admin/load?busy={int(action.value)}", "fail": "/admin/fail",
            "recover": "/admin/recover"}[action.kind]
    site = story.site_by_name(story.site_of(action.target))
    url = f"http://{story.instance_address[action.target]}:{SERVICE_PORT}{path}"
    done = lab.exec(site.agent, ["curl", "-sS", "-m", "2", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}",
                                 url], check=False)
    if done.returncode != 0 or not done.stdout.strip().startswith("2"):
        raise LabError(f"{action.describe()}: POST {url} gave {done.stdout.strip()} {done.stderr.strip()}")
    return action.describe()
