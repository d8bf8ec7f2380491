"""containerlab topology files (``*.clab.yml``), read without Docker: a pure parser and the plan to run them.

:func:`parse` turns the text of a topology into a :class:`Topology` or raises
:class:`~dyncast_bgp.config.loader.ConfigError` listing every problem as
``file:line: path: message`` (the same machinery as the agent's config).
Only what a namespace lab can honour is accepted:

- ``name``; ``topology.defaults``, ``topology.kinds``, ``topology.groups`` and
  ``topology.nodes`` with ``kind`` (``linux`` only), ``image``, ``exec``,
  ``binds``, ``cmd``, ``env``, ``labels``, ``group`` and ``sysctls``. Settings
  merge like containerlab's: node > group > kind > defaults; ``env``,
  ``labels`` and ``sysctls`` merge key by key, ``binds`` by container path,
  the others are taken from the most specific level that sets them.
- keys about the container runtime or management network (``mgmt-ipv4``,
  ``ports``, ``startup-delay``, ...) are ignored; :attr:`Topology.notes` says
  which. Any other key is an error, so a typo does not pass silently.
- ``topology.links``: ``endpoints: ["a:eth1", "b:eth1"]`` or ``type: veth``
  with ``endpoints: [{node: a, interface: eth1}, ...]``, optional ``mtu``.

As containerlab does, ``${VAR}`` in ``exec``, ``cmd``, ``env`` and ``binds`` is
the caller's environment variable and ``$$`` is a literal ``$``.

:func:`node_plan` is what the runner does for a node: the bind paths rewritten
in its commands and env, which daemon its image stands for, and which ``exec``
lines are ``tc ... netem`` impairments (:func:`parse_netem`).
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dyncast_bgp.config.loader import ConfigError, Problem, line_of, loc_prefixes, problem_of, unique_problems

KINDS = ("linux",)
IGNORED_KEYS = frozenset({
    "mgmt-ipv4", "mgmt-ipv6", "mgmt_ipv4", "mgmt_ipv6", "ports", "startup-delay", "image-pull-policy",
    "restart-policy", "auto-remove", "network-mode", "runtime", "memory", "cpu", "cpu-set", "shm-size",
    "cap-add", "devices", "dns", "publish", "certificate", "healthcheck", "stages", "aliases", "extras",
    "user", "entrypoint", "type", "license", "startup-config", "enforce-startup-config",
    "suppress-startup-config", "env-files", "wait-for", "kernel-modules",
})
IFNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ROLE_MAX = 24  # the namespace role limit of dyncast_bgp.lab.netns
Scalar = str | int | float | bool


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Settings(_Model):
    """What defaults, kinds, groups and nodes may set."""

    kind: str | None = None
    image: str | None = None
    exec_: tuple[str, ...] | None = Field(default=None, alias="exec")
    binds: tuple[str, ...] | None = None
    cmd: str | None = None
    env: dict[str, Scalar] | None = None
    labels: dict[str, Scalar] | None = None
    sysctls: dict[str, Scalar] | None = None
    group: str | None = None


class EndpointSpec(_Model):
    node: str = Field(min_length=1)
    interface: str = Field(min_length=1)
    mac: str | None = None


class LinkSpec(_Model):
    type: Literal["veth"] | None = None
    endpoints: tuple[str, str] | tuple[EndpointSpec, EndpointSpec]
    mtu: int | None = Field(default=None, ge=68, le=65535)
    labels: dict[str, Scalar] | None = None
    vars: dict[str, Any] | None = None


class TopologySpec(_Model):
    defaults: Settings = Settings()
    kinds: dict[str, Settings] = {}
    groups: dict[str, Settings] = {}
    nodes: dict[str, Settings | None] = Field(min_length=1)
    links: tuple[LinkSpec, ...] = ()


class FileSpec(_Model):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    prefix: str | None = None
    mgmt: dict[str, Any] | None = None
    topology: TopologySpec


# ------------------------------------------------------------------- the resolved topology


@dataclass(frozen=True, slots=True)
class Bind:
    host: Path
    container: str
    read_only: bool = False


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    role: str  # the namespace role: lowercase, '-' for '_' and '.'
    kind: str
    image: str = ""
    exec: tuple[str, ...] = ()
    binds: tuple[Bind, ...] = ()
    cmd: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    sysctls: Mapping[str, str] = field(default_factory=dict)
    group: str | None = None


@dataclass(frozen=True, slots=True)
class Endpoint:
    node: str
    interface: str

    def __str__(self) -> str:
        return f"{self.node}:{self.interface}"


@dataclass(frozen=True, slots=True)
class Link:
    a: Endpoint
    b: Endpoint
    mtu: int | None = None

    def peer_of(self, endpoint: Endpoint) -> Endpoint:
        return self.b if endpoint == self.a else self.a


@dataclass(frozen=True, slots=True)
class Topology:
    name: str
    origin: str  # the file it was read from (for messages and the lab registry)
    directory: Path  # relative bind paths start here
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    notes: tuple[str, ...] = ()

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(f"no node {name!r} in topology {self.name!r}; nodes: {', '.join(self.node_names)}")

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(node.name for node in self.nodes)

    def link_of(self, endpoint: Endpoint) -> Link:
        for link in self.links:
            if endpoint in (link.a, link.b):
                return link
        raise KeyError(f"no link at {endpoint} in topology {self.name!r}")


# ------------------------------------------------------------------- parsing


def load_topology(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Topology:
    """Read and parse a topology file (relative binds resolve against its directory)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(file), [Problem("", f"cannot read: {exc}")]) from None
    return parse(text, str(file), directory=file.resolve().parent, environ=environ)


def parse(text: str, origin: str = "<topology>", *, directory: Path | None = None,
          environ: Mapping[str, str] | None = None) -> Topology:
    """Parse topology text; ``environ`` (default ``os.environ``) expands ``${VAR}``."""
    env = os.environ if environ is None else environ
    base = directory if directory is not None else Path.cwd()
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(origin, [Problem("", f"invalid YAML: {reason}", mark.line + 1 if mark else None)]) from None
    if not isinstance(data, dict):
        raise ConfigError(origin, [Problem("", "the file must hold a mapping with 'name' and 'topology'")])
    notes = _drop_ignored(data)
    try:
        spec = FileSpec.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        deeper = {tuple(error["loc"][:-1]) for error in errors if error["loc"]}
        found = [problem_of(error, data, root) for error in errors
                 if not (error["type"] == "too_short" and tuple(error["loc"]) in loc_prefixes(deeper))]
        raise ConfigError(origin, unique_problems(found)) from None
    problems: list[tuple[tuple[Any, ...], str]] = []
    nodes = _resolve_nodes(spec.topology, base, env, problems)
    links = _resolve_links(spec.topology, set(spec.topology.nodes), problems)
    if problems:
        raise ConfigError(origin, [Problem(_path_text(loc), message, line_of(root, loc)) for loc, message in problems])
    return Topology(name=spec.name, origin=origin, directory=base, nodes=tuple(nodes), links=tuple(links),
                    notes=tuple(notes))


def _drop_ignored(data: dict[str, Any]) -> list[str]:
    """Remove the runtime/management keys we cannot honour; return a note for each."""
    notes: list[str] = []
    topology = data.get("topology")
    if not isinstance(topology, dict):
        return notes
    sections: list[tuple[str, Any]] = [("topology.defaults", topology.get("defaults"))]
    for group in ("kinds", "groups", "nodes"):
        members = topology.get(group)
        if isinstance(members, dict):
            sections += [(f"topology.{group}.{name}", value) for name, value in members.items()]
    for where, section in sections:
        if isinstance(section, dict):
            for key in sorted(set(section) & IGNORED_KEYS):
                del section[key]
                notes.append(f"{where}.{key}: ignored (container runtime or management network setting)")
    return notes


def _path_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def expand(text: str, environ: Mapping[str, str]) -> str:
    """containerlab's variable expansion: ``${VAR}`` (``${VAR:=default}``) from ``environ``, ``$$`` is ``$``."""
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        return environ.get(name, default if default is not None else "")

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}", replace, text)


def _merged_maps(levels: list[dict[str, Scalar] | None], environ: Mapping[str, str]) -> dict[str, str]:
    merged: dict[str, str] = {}
    for level in levels:
        for key, value in (level or {}).items():
            merged[key] = expand(_scalar_text(value), environ)
    return merged


def _scalar_text(value: Scalar) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _resolve_nodes(spec: TopologySpec, base: Path, environ: Mapping[str, str],
                   problems: list[tuple[tuple[Any, ...], str]]) -> list[Node]:
    nodes: list[Node] = []
    roles: dict[str, str] = {}
    for name, raw in spec.nodes.items():
        where: tuple[Any, ...] = ("topology", "nodes", name)
        own = raw or Settings()
        group = own.group
        group_settings = spec.groups.get(group) if group else None  # an undeclared group is just a label
        kind = own.kind or (group_settings.kind if group_settings else None) or spec.defaults.kind
        if kind is None:
            problems.append((where, "needs a 'kind' (on the node, its group or topology.defaults)"))
            continue
        if kind not in KINDS:
            at = (*where, "kind") if own.kind else ("topology", "defaults", "kind")
            problems.append((at, f"kind {kind!r} is not supported without containers; supported: {', '.join(KINDS)}"))
            continue
        levels = [spec.defaults, spec.kinds.get(kind) or Settings(), group_settings or Settings(), own]

        def pick(attribute: str, chain: list[Settings] = levels) -> Any:
            for level in reversed(chain):
                value = getattr(level, attribute)
                if value is not None:
                    return value
            return None

        if not NODE_NAME.match(name):
            problems.append((where, "node names are letters, digits, '_', '.' and '-'"))
            continue
        role = name.lower().replace("_", "-").replace(".", "-")
        if len(role) > ROLE_MAX:
            problems.append((where, f"node name longer than {ROLE_MAX} characters (it names a network namespace)"))
            continue
        if role in roles:
            problems.append((where, f"node name collides with {roles[role]!r} as namespace name {role!r}"))
            continue
        roles[role] = name
        binds = _merged_binds(levels, base, environ, where, problems)
        cmd = pick("cmd")
        nodes.append(Node(
            name=name, role=role, kind=kind, image=pick("image") or "",
            exec=tuple(expand(line, environ) for line in (pick("exec_") or ())), binds=binds,
            cmd=expand(cmd, environ) if cmd is not None else None,
            env=_merged_maps([level.env for level in levels], environ),
            labels=_merged_maps([level.labels for level in levels], {}),
            sysctls=_merged_maps([level.sysctls for level in levels], {}), group=group))
    return nodes


def _merged_binds(levels: list[Settings], base: Path, environ: Mapping[str, str], where: tuple[Any, ...],
                  problems: list[tuple[tuple[Any, ...], str]]) -> tuple[Bind, ...]:
    by_container: dict[str, Bind] = {}
    for level in levels:
        for index, text in enumerate(level.binds or ()):
            try:
                bind = parse_bind(expand(text, environ), base)
            except ValueError as exc:
                at = (*where, "binds", index) if level is levels[-1] else where
                problems.append((at, str(exc)))
                continue
            if bind is not None:
                by_container.pop(bind.container, None)
                by_container[bind.container] = bind
    return tuple(by_container.values())


def parse_bind(text: str, base: Path) -> Bind | None:
    """``host:container[:ro|rw]`` -> :class:`Bind` (host relative to ``base``, ``~`` expanded);
    ``None`` for an anonymous volume (a container path alone)."""
    parts = text.split(":")
    if len(parts) == 1:
        if not parts[0].startswith("/"):
            raise ValueError(f"bind {text!r}: expected host:container[:ro|rw]")
        return None
    if len(parts) > 3 or (len(parts) == 3 and parts[2] not in ("ro", "rw", "z", "Z", "ro,z", "rw,z")):
        raise ValueError(f"bind {text!r}: expected host:container[:ro|rw]")
    host, container = parts[0], parts[1]
    if not host or not container.startswith("/"):
        raise ValueError(f"bind {text!r}: the container path must be absolute and the host path not empty")
    host_path = Path(host).expanduser()
    if not host_path.is_absolute():
        host_path = base / host_path
    return Bind(host=Path(os.path.normpath(host_path)), container=container.rstrip("/") or "/",
                read_only=len(parts) == 3 and parts[2].startswith("ro"))


def _resolve_links(spec: TopologySpec, nodes: set[str], problems: list[tuple[tuple[Any, ...], str]]) -> list[Link]:
    links: list[Link] = []
    used: dict[Endpoint, int] = {}
    for index, raw in enumerate(spec.links):
        where: tuple[Any, ...] = ("topology", "links", index, "endpoints")
        ends: list[Endpoint] = []
        for position, text in enumerate(raw.endpoints):
            if isinstance(text, EndpointSpec):
                node, interface = text.node, text.interface
            else:
                node, _, interface = str(text).partition(":")
            at = (*where, position)
            if node in ("host", "mgmt-net", "macvlan", "ovs-bridge", "bridge") and node not in nodes:
                problems.append((at, f"endpoint {node}:{interface}: links to {node!r} are not supported "
                                     "(only node-to-node veth links)"))
                continue
            if not interface:
                problems.append((at, f"endpoint {text!r}: expected node:interface"))
                continue
            if node not in nodes:
                problems.append((at, f"unknown node {node!r} (nodes: {', '.join(sorted(nodes))})"))
                continue
            if not IFNAME.match(interface) or interface == "lo":
                problems.append((at, f"interface name {interface!r} is not a valid Linux name (1-15 characters)"))
                continue
            endpoint = Endpoint(node, interface)
            if endpoint in used:
                problems.append((at, f"interface {endpoint} is already used by link {used[endpoint]}"))
                continue
            used[endpoint] = index
            ends.append(endpoint)
        if len(ends) == 2:
            links.append(Link(ends[0], ends[1], raw.mtu))
    return links


# ------------------------------------------------------------------- what running a node means


@dataclass(frozen=True, slots=True)
class Netem:
    """The part of a ``tc qdisc ... netem`` line the userspace impairment can reproduce."""

    interface: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss: float = 0.0  # 0..1


@dataclass(frozen=True, slots=True)
class ExecStep:
    command: str
    netem: Netem | None = None
    unsupported: str | None = None  # a netem line the userspace impairment cannot reproduce, and why


Daemon = Literal["frr", "bird", "cmd", "none"]


@dataclass(frozen=True, slots=True)
class NodePlan:
    node: Node
    exec: tuple[ExecStep, ...]
    env: Mapping[str, str]
    cmd: str | None
    daemon: Daemon
    config: Path | None = None  # frr.conf or bird.conf on the host
    frr_daemons: Path | None = None  # a bound /etc/frr/daemons


class NetemError(ValueError):
    """A ``tc ... netem`` line with options the userspace impairment cannot reproduce."""


_TIME = re.compile(r"^(\d+(?:\.\d+)?)(us|usec|ms|msec|s|sec|secs)?$")


def _milliseconds(text: str) -> float:
    match = _TIME.match(text)
    if not match:
        raise NetemError(f"not a time: {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "us"  # tc's bare number is microseconds
    return value * {"us": 0.001, "usec": 0.001, "ms": 1.0, "msec": 1.0, "s": 1000.0, "sec": 1000.0,
                    "secs": 1000.0}[unit]


def parse_netem(command: str) -> Netem | None:
    """The impairment of ``tc qdisc add|replace|change dev IF root netem [delay X [Y]] [loss [random] Z%]``,
    ``None`` when ``command`` is not such a line; :class:`NetemError` for netem options we cannot reproduce."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words[:1] == ["sudo"]:
        words = words[1:]
    if len(words) < 7 or words[0] != "tc" or words[1] != "qdisc" or words[2] not in ("add", "replace", "change"):
        return None
    if words[3] != "dev" or words[5] != "root" or words[6] != "netem":
        return None
    interface, rest = words[4], words[7:]
    delay = jitter = loss = 0.0
    position = 0
    while position < len(rest):
        word = rest[position]
        if word == "delay" and position + 1 < len(rest):
            delay = _milliseconds(rest[position + 1])
            position += 2
            if position < len(rest) and _TIME.match(rest[position]):
                jitter = _milliseconds(rest[position])
                position += 1
        elif word == "loss" and position + 1 < len(rest):
            position += 1
            if rest[position] == "random":
                position += 1
            text = rest[position] if position < len(rest) else ""
            if not re.match(r"^\d+(\.\d+)?%$", text):
                raise NetemError(f"{command!r}: loss must be a percentage, got {text!r}")
            loss = float(text[:-1]) / 100.0
            position += 1
        else:
            raise NetemError(f"{command!r}: netem option {word!r} is not supported without the kernel's netem "
                             "(supported: delay TIME [JITTER], loss PCT%)")
    if not 0.0 <= loss <= 1.0:
        raise NetemError(f"{command!r}: loss must be 0-100%")
    return Netem(interface, delay, jitter, loss)


def rewrite_paths(text: str, binds: tuple[Bind, ...]) -> str:
    """Replace whole-path occurrences of each bind's container path with its host path (longest first)."""
    ordered = sorted(binds, key=lambda bind: len(bind.container), reverse=True)
    if not ordered:
        return text
    by_container = {bind.container: str(bind.host) for bind in ordered}
    pattern = re.compile(r"(?<![\w./-])(" + "|".join(re.escape(bind.container) for bind in ordered)
                         + r")(?=$|[/\s'\";:,)=&|<>])")
    return pattern.sub(lambda match: by_container[match.group(1)], text)


def _bound(binds: tuple[Bind, ...], container: str) -> Path | None:
    """The host path of a container file, bound itself or inside a bound directory."""
    for bind in sorted(binds, key=lambda b: len(b.container), reverse=True):
        if container == bind.container:
            return bind.host
        if container.startswith(bind.container.rstrip("/") + "/"):
            return bind.host / container[len(bind.container.rstrip("/")) + 1:]
    return None


def node_plan(node: Node) -> NodePlan:
    """How to run ``node``: rewritten commands and env, netem lines recognised, the daemon its image stands for."""
    steps: list[ExecStep] = []
    for line in node.exec:
        command = rewrite_paths(line, node.binds)
        try:
            steps.append(ExecStep(command, parse_netem(command)))
        except NetemError as exc:
            steps.append(ExecStep(command, None, str(exc)))
    env = {key: rewrite_paths(value, node.binds) for key, value in node.env.items()}
    cmd = rewrite_paths(node.cmd, node.binds) if node.cmd is not None else None
    image = node.image.lower()
    if "frrouting/frr" in image or image.split(":")[0].endswith("/frr") or image.split(":")[0] == "frr":
        config = _bound(node.binds, "/etc/frr/frr.conf")
        return NodePlan(node, tuple(steps), env, cmd, "frr", config, _bound(node.binds, "/etc/frr/daemons"))
    if "bird" in image:
        return NodePlan(node, tuple(steps), env, cmd, "bird", _bound(node.binds, "/etc/bird/bird.conf")
                        or _bound(node.binds, "/etc/bird.conf"))
    return NodePlan(node, tuple(steps), env, cmd, "cmd" if cmd else "none")


FRR_DAEMONS = ("bgpd", "ospfd", "ospf6d", "ripd", "ripngd", "isisd", "pimd", "ldpd", "bfdd", "fabricd",
               "vrrpd", "pathd", "staticd")


def frr_daemons(daemons_file: str | None, frr_conf: str) -> tuple[str, ...]:
    """The FRR daemons to start besides zebra: those ``=yes`` in ``/etc/frr/daemons`` when bound, else those
    ``frr.conf`` needs (``router bgp`` -> bgpd, ``router ospf`` -> ospfd, ...); staticd always."""
    wanted: set[str] = {"staticd"}
    if daemons_file is not None:
        for line in daemons_file.splitlines():
            match = re.match(r"^\s*([a-z0-9]+)\s*=\s*\"?yes\"?\s*$", line)
            if match and match.group(1) in FRR_DAEMONS:
                wanted.add(match.group(1))
    else:
        for statement, daemon in (("router bgp", "bgpd"), ("router ospf6", "ospf6d"), ("router ospf ", "ospfd"),
                                  ("router isis", "isisd"), ("bfd", "bfdd")):
            if re.search(rf"^\s*{statement}", frr_conf + "\n", re.MULTILINE):
                wanted.add(daemon)
        if re.search(r"^\s*router ospf\s*$", frr_conf, re.MULTILINE):
            wanted.add("ospfd")
    return tuple(daemon for daemon in FRR_DAEMONS if daemon in wanted)
