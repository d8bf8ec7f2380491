"""The static desired-state file of ``dyncast dataplane apply FILE`` (YAML or JSON; pure parsing).

::

    services:
      - dsid: 203.0.113.10/32          # the D-SID (a bare address means /32 or /128)
        affinity: client               # flow (default) or client
        affinity_timeout: 30           # seconds an idle client keeps its instance (client affinity)
        instances:
          - binding: 192.0.2.11        # the D-BID
            name: site-a               # optional, shown by `show`
            weight: 0.7                # >= 0; weights are relative (0: soft drain)
            path_id: 0                 # optional ADD-PATH id
            forwarding:                # optional; default: direct to the D-BID
              mode: direct             # direct | ipip | gre | srv6
              next_hop: 192.0.2.11     # direct: default the D-BID
              device: eth1             # optional: direct next-hop device, tunnel underlay, srv6 device
              remote: 198.51.100.2     # ipip/gre: tunnel endpoint (default the D-BID); srv6: the SID
              local: 198.51.100.1      # ipip/gre: our tunnel endpoint

Every problem is reported with its location (``services[1].instances[0].weight: ...``).
"""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dyncast_bgp.dataplane.desired import (
    Affinity,
    DesiredState,
    Encap,
    Forwarding,
    InstanceTarget,
    ServiceTarget,
)
from dyncast_bgp.model import InstanceKey, ServiceId

_FIELD = re.compile(r"^[a-z_][a-z0-9_]*$")


class FileError(ValueError):
    """The file cannot be turned into a desired state; ``problems`` name each field."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__("\n".join(f"{origin}: {problem}" for problem in problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ForwardingSpec(_Strict):
    mode: Literal["direct", "ipip", "gre", "srv6"] = "direct"
    next_hop: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    device: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,15}$")
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None


class InstanceSpec(_Strict):
    binding: ipaddress.IPv4Address | ipaddress.IPv6Address
    weight: float = Field(ge=0, allow_inf_nan=False)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:@/+-]{1,64}$")
    path_id: int = Field(default=0, ge=0, le=0xFFFFFFFF)
    forwarding: ForwardingSpec | None = None


class ServiceSpec(_Strict):
    dsid: str
    affinity: Literal["flow", "client"] = "flow"
    affinity_timeout: float = Field(default=300.0, gt=0, le=86400 * 7, allow_inf_nan=False)
    instances: tuple[InstanceSpec, ...] = ()

    @field_validator("dsid")
    @classmethod
    def _dsid(cls, value: str) -> str:
        ServiceId.parse(value)
        return value


class FileSpec(_Strict):
    services: tuple[ServiceSpec, ...] = ()


def parse(text: str, origin: str = "<desired state>") -> DesiredState:
    """Parse YAML/JSON text into a :class:`DesiredState`, or raise :class:`FileError` listing every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise FileError(origin, [f"{where}invalid YAML/JSON: {getattr(exc, 'problem', None) or exc}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FileError(origin, [f"the file must hold a mapping with `services`, not {type(data).__name__}"])
    try:
        spec = FileSpec.model_validate(data)
    except ValidationError as exc:
        raise FileError(origin, _problems(exc)) from None
    return build(spec, origin)


def build(spec: FileSpec, origin: str) -> DesiredState:
    problems: list[str] = []
    targets = []
    seen: dict[ServiceId, int] = {}
    for index, service in enumerate(spec.services):
        where = f"services[{index}]"
        dsid = ServiceId.parse(service.dsid)
        if dsid in seen:
            problems.append(f"{where}.dsid: {dsid} is already services[{seen[dsid]}]")
            continue
        seen[dsid] = index
        instances = []
        for number, instance in enumerate(service.instances):
            try:
                instances.append(_instance(dsid, instance))
            except ValueError as exc:
                problems.append(f"{where}.instances[{number}]: {exc}")
        try:
            targets.append(ServiceTarget(dsid, tuple(instances), Affinity(service.affinity), service.affinity_timeout))
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
    if problems:
        raise FileError(origin, problems)
    return DesiredState.of(targets)


def _instance(service: ServiceId, spec: InstanceSpec) -> InstanceTarget:
    key = InstanceKey(service, spec.binding, spec.path_id)
    forwarding = spec.forwarding or ForwardingSpec()
    mode = Encap(forwarding.mode)
    if mode is Encap.DIRECT:
        built = Forwarding(mode, next_hop=forwarding.next_hop or spec.binding, device=forwarding.device)
    else:
        built = Forwarding(mode, remote=forwarding.remote or spec.binding, local=forwarding.local,
                           device=forwarding.device)
    if not math.isfinite(spec.weight):
        raise ValueError("weight must be finite")
    return InstanceTarget(key, spec.weight, built, spec.name)


def _problems(exc: ValidationError) -> list[str]:
    """One line per field; the alternatives of a union (IPv4 | IPv6) are joined."""
    by_field: dict[str, list[str]] = {}
    for error in exc.errors():
        messages = by_field.setdefault(_loc(error["loc"]), [])
        if error["msg"] not in messages:
            messages.append(error["msg"])
    return [f"{where}: {' or '.join(messages)}" for where, messages in by_field.items()]


def _loc(loc: tuple[Any, ...]) -> str:
    """``("services", 0, "weight")`` -> ``services[0].weight``, without pydantic's union tags."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif _FIELD.match(str(part)):
            text += f".{part}" if text else str(part)
    return text or "<top>"
