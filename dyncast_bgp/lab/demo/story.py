"""The demo's script: phases, each with the actions that open it. Pure data, no I/O.

The default story (:func:`three_site_story`) follows issue 5: steady state; a
load spike at the smallest site; an instance failure; a degraded link; a
drain for maintenance; recovery. Each action names a lab node and what to do
there, so :mod:`dyncast_bgp.lab.demo.actions` can carry it out and the report
can print it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

RUN_DIR = "/run/dyncast-lab/three-site"  # where the lab's routers and agents put status files and sockets
ActionKind = Literal["busy", "fail", "recover", "impair", "drain", "undrain"]


@dataclass(frozen=True, slots=True)
class Action:
    """One change to the lab.

    - ``busy``: instance ``target`` gets ``value`` synthetic busy workers (0 clears);
    - ``fail`` / ``recover``: instance ``target`` fails its health check and requests (or recovers);
    - ``impair``: link end ``target`` (``node:ifname``) gets ``value`` ms one-way delay and ``loss``;
    - ``drain`` / ``undrain``: instance ``target`` via its site agent's control socket.
    """

    kind: ActionKind
    target: str
    value: float = 0.0
    loss: float = 0.0

    def describe(self) -> str:
        if self.kind == "busy":
            return f"{self.target}: {self.value:g} workers busy" if self.value else f"{self.target}: load spike over"
        if self.kind == "impair":
            return f"{self.target}: delay {self.value:g} ms, loss {self.loss * 100:g} %"
        return f"{self.kind} {self.target}"


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    title: str
    seconds: float
    actions: tuple[Action, ...] = ()
    expect: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class Site:
    name: str
    instances: tuple[str, ...]
    agent: str
    link: tuple[str, str]  # the two ends (node:ifname) of the site's link to the transit
    delay_ms: float
    control_socket: str  # the site agent's control socket (dyncast ctl)


@dataclass(frozen=True, slots=True)
class Story:
    phases: tuple[Phase, ...]
    sites: tuple[Site, ...]
    instance_address: dict[str, str]  # instance -> D-BID (where its admin endpoint listens)
    clients: tuple[str, ...]
    routers: tuple[str, ...]
    status_files: dict[str, str]  # router -> its status document (router.status_file)

    @property
    def seconds(self) -> float:
        return sum(phase.seconds for phase in self.phases)

    def site_of(self, instance: str) -> str:
        for site in self.sites:
            if instance in site.instances:
                return site.name
        raise KeyError(f"instance {instance!r} is in no site of the story")

    def site_by_name(self, name: str) -> Site:
        for site in self.sites:
            if site.name == name:
                return site
        raise KeyError(f"no site {name!r} in the story")


def three_site_story(scale: float = 1.0) -> Story:
    """The issue-5 story on labs/three-site; ``scale`` stretches or shrinks every phase."""
    sites = (
        Site("site1", ("s1a",), "edge1", ("edge1:eth1", "transit:eth4"), 5.0, f"{RUN_DIR}/edge1.sock"),
        Site("site2", ("s2a",), "edge2", ("edge2:eth1", "transit:eth5"), 10.0, f"{RUN_DIR}/edge2.sock"),
        Site("site3", ("s3a", "s3b"), "edge3", ("edge3:eth1", "transit:eth6"), 20.0, f"{RUN_DIR}/edge3.sock"),
    )
    degraded = tuple(Action("impair", end, 60.0, 0.02) for end in sites[1].link)
    restored = tuple(Action("impair", end, sites[1].delay_ms, 0.0) for end in sites[1].link)
    phases = (
        Phase("steady", "Steady state", 25 * scale,
              expect="new sessions spread by free capacity and path RTT"),
        Phase("spike", "Load spike at site1", 25 * scale, (Action("busy", "s1a", 3),),
              expect="site1's share of new sessions falls; its open sessions stay"),
        Phase("failure", "Instance s3b fails", 20 * scale, (Action("busy", "s1a", 0), Action("fail", "s3b")),
              expect="no new session goes to s3b within a second of its health check failing"),
        Phase("degraded", "Link to site2 degraded (60 ms, 2 % loss)", 25 * scale,
              (Action("recover", "s3b"), *degraded),
              expect="site2's share falls as the probes see the RTT"),
        Phase("drain", "s3a drained for maintenance", 25 * scale, (*restored, Action("drain", "s3a")),
              expect="no new session to s3a; its open sessions finish; zero failed requests"),
        Phase("recovery", "Recovery", 20 * scale, (Action("undrain", "s3a"),),
              expect="all instances take new sessions again"),
    )
    return Story(phases=phases, sites=sites,
                 instance_address={"s1a": "10.1.1.2", "s2a": "10.2.1.2", "s3a": "10.3.1.2", "s3b": "10.3.2.2"},
                 clients=("client1", "client2"), routers=("ingress1", "ingress2"),
                 status_files={"ingress1": f"{RUN_DIR}/ingress1.status.json",
                               "ingress2": f"{RUN_DIR}/ingress2.status.json"})
