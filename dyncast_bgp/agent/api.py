"""The registration API: orchestrators add, change and remove instances while the agent runs.

ETSI GR NFV-EVE 020 (clauses 5.1.2.3, 5.2.2.3) has NFV-MANO (or Kubernetes,
OpenStack ...) notify the Dyncast function when a VNF instance is
instantiated or terminated: its function name, its locator (the D-BID) and
the monitoring parameters that apply. This module is that notification's
receiving end, as the state task sees it: a request comes in as an
:class:`ApiRequest`, :meth:`Registrations.apply` changes the
:class:`AgentState` (the only place it does) and says what it did, the
runtime plans and writes the BGP commands, and :meth:`Registrations.answer`
builds the reply, so a reply reflects what was already sent.

The HTTP transport is :mod:`dyncast_bgp.agent.apiserver`; the OpenAPI
description :mod:`dyncast_bgp.agent.openapi` (docs/openapi/agent-registration.yaml).

Registrations live in the state file (``agent.api.state_file``, written
atomically by :mod:`dyncast_bgp.agent.persist`) and come back at start,
reconciled with the static config: the config wins, and a registration that
collides with it (same instance, D-BID or path id, or a different D-SID) is
dropped and reported (log ``registration_conflict`` and ``conflicts`` in GET
answers).
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from pydantic import Field, ValidationError, field_validator

from dyncast_bgp.agent import control, monitoring, persist
from dyncast_bgp.agent.instance import Admin, InstanceStatus
from dyncast_bgp.agent.registry import NameConflict, NameRegistry
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import error_message, format_loc
from dyncast_bgp.config.schema import Config, InstanceConfig, Name, with_length
from dyncast_bgp.model import ServiceId

log = structlog.get_logger(__name__)

PREFIX = "/v1"


class Registration(InstanceConfig):
    """An instance as the orchestrator registers it: the config's instance fields plus its service."""

    service: Name = Field(description="the function name (the service's global identifier)")
    dsid: str | None = Field(default=None, description="the service's D-SID; default: the name's mapping")
    monitoring: tuple[str, ...] = Field(default=(), max_length=64,
                                        description="monitoring parameters that apply (ETSI EVE 020 Table 5.1.3-1)")
    parameters: dict[str, float] = Field(default_factory=dict,
                                         description="values of instance parameters pushed by the orchestrator")

    @field_validator("dsid")
    @classmethod
    def _dsid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        text = with_length(value)
        ServiceId.parse(text)
        return text

    @field_validator("monitoring")
    @classmethod
    def _monitoring(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return monitoring.check_monitoring(value)

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, value: dict[str, float]) -> dict[str, float]:
        for name, number in value.items():
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name}: must be a finite number >= 0")
        monitoring.to_wire_values(value)
        return value

    def instance(self) -> InstanceConfig:
        """The instance as the config would have it (pushed parameters become static metric values)."""
        fields = {name: getattr(self, name) for name in InstanceConfig.model_fields}
        fields["static"] = {**self.static, **monitoring.to_wire_values(self.parameters)}
        return InstanceConfig(**fields)

    def document(self) -> dict[str, Any]:
        """What the state file keeps (the body as normalised, defaults left out)."""
        data: dict[str, Any] = self.model_dump(mode="json", exclude_defaults=True)
        data.setdefault("service", self.service)
        return data


@dataclass(frozen=True, slots=True)
class FieldError:
    loc: str
    msg: str


def validate(data: Any) -> Registration | list[FieldError]:
    """The registration in a parsed body, or every problem with its field path (``health.interval``)."""
    try:
        return Registration.model_validate(data)
    except ValidationError as exc:
        errors = [FieldError(format_loc(_field_loc(tuple(e["loc"]), data)) or "<body>", error_message(e))
                  for e in exc.errors()]
        return list({(e.loc, e.msg): e for e in errors}.values())


def validate_saved(data: Any) -> tuple[Registration | list[FieldError], list[str]]:
    """A state-file entry, read as :func:`validate` reads a body except that fields this version does not
    know (a newer version wrote them: docs/operations.md, upgrading dyncast itself) are dropped; their
    paths come back second, for the log. Any other problem fails the entry as it would a request."""
    try:
        return Registration.model_validate(data), []
    except ValidationError as exc:
        errors = exc.errors()
    unknown = [_field_loc(tuple(e["loc"]), data) for e in errors if e["type"] == "extra_forbidden"]
    if not unknown or len(unknown) != len(errors):
        return validate(data), []
    trimmed = copy.deepcopy(data)
    for path in unknown:
        node = trimmed
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]
    return validate(trimmed), [format_loc(path) for path in unknown]


def _field_loc(loc: tuple[Any, ...], data: Any) -> tuple[Any, ...]:
    """A pydantic location as a path into the body: union member and discriminator tags left out."""
    kept: list[Any] = []
    node = data
    for part in loc:
        if isinstance(node, dict):
            if part not in node and node.get("type") == part:
                continue  # the tag of a discriminated union
            kept.append(part)
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            kept.append(part)
            node = node[part]
        else:
            break  # a scalar: what follows names union members, not fields
    return tuple(kept)


# ------------------------------------------------------------ requests and answers


@dataclass(frozen=True, slots=True)
class ApiRequest:
    method: str
    path: str
    query: Mapping[str, str] = field(default_factory=dict)
    body: Any = None  # parsed JSON (None: no body)

    @classmethod
    def of(cls, method: str, target: str, body: Any = None) -> ApiRequest:
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query, keep_blank_values=True).items()}
        return cls(method.upper(), parts.path, query, body)


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    body: dict[str, Any]


def refuse(status: int, message: str, fields: list[FieldError] | None = None) -> ApiResponse:
    body: dict[str, Any] = {"ok": False, "error": message}
    if fields:
        body["fields"] = [{"loc": f.loc, "msg": f.msg} for f in fields]
    return ApiResponse(status, body)


@dataclass(frozen=True, slots=True)
class Applied:
    """What :meth:`Registrations.apply` did; :meth:`Registrations.answer` turns it into the reply."""

    status: int
    iid: InstanceId | None = None
    refused: ApiResponse | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class InstanceTasks(Protocol):
    """The runtime's side: start and stop an instance's collectors and health check."""

    def start_instance(self, iid: InstanceId, instance: InstanceConfig) -> None: ...

    def stop_instance(self, iid: InstanceId) -> None: ...


@dataclass(frozen=True, slots=True)
class Conflict:
    service: str
    instance: str | None
    reason: str
    origin: str  # state_file | names

    def view(self) -> dict[str, Any]:
        return {"service": self.service, "instance": self.instance, "reason": self.reason, "origin": self.origin}


# ------------------------------------------------------------ the registrations


class Registrations:
    """Instances registered over the API: checked, added to the state, kept in the state file. Owner task only."""

    def __init__(self, config: Config, state: AgentState, *,
                 save: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        api = config.agent.api
        self._config = config
        self._state = state
        self._save = save
        self.names = NameRegistry(services={s.name: s.service_id for s in config.services},
                                  names={name: ServiceId.parse(dsid) for name, dsid in api.names.items()},
                                  pool=api.pool)
        self._configured = {InstanceId(s.name, i.name) for s in config.services for i in s.instances}
        self.registered: dict[InstanceId, Registration] = {}
        self.leaving: dict[InstanceId, float] = {}  # graceful deregistrations: iid -> deadline
        self._settle_at: dict[InstanceId, float] = {}  # ... and when their settle time (drain.settle) ends
        self._ticked = -math.inf  # the last tick's time: settle times at or before it need no timer (next_due)
        self.conflicts: list[Conflict] = [Conflict(c.name, None, c.message, "names") for c in self.names.conflicts]
        self.save_failures = 0
        for conflict in self.conflicts:
            log.warning("registration_conflict", service=conflict.service, reason=conflict.reason, origin="names")

    # ------------------------------------------------------------ start

    def restore(self, saved: list[dict[str, Any]], tasks: InstanceTasks | None = None) -> None:
        """Re-register what the state file holds; the config wins every conflict, which is reported."""
        for index, data in enumerate(saved):
            checked, ignored = validate_saved(data)
            service = str(data.get("service", "?")) if isinstance(data, dict) else "?"
            name = str(data.get("name", "?")) if isinstance(data, dict) else "?"
            if ignored:
                log.warning("registration_state_fields_ignored", service=service, instance=name, entry=index,
                            fields=ignored, reason="written by a newer version; this version does not know them")
            if isinstance(checked, list):
                reason = "; ".join(f"{e.loc}: {e.msg}" for e in checked)
                self._conflict(Conflict(service, name, f"state file entry {index} is invalid: {reason}",
                                        "state_file"))
                continue
            iid = InstanceId(checked.service, checked.name)
            refused = refuse(409, f"instance {iid} is in the config file; the config wins") \
                if self._state.has(iid) else self._admissible(checked, replacing=None)
            if refused is not None:
                self._conflict(Conflict(iid.service, iid.instance, refused.body["error"], "state_file"))
                continue
            self._add(iid, checked, tasks)
        if self.conflicts:
            self._persist()

    def _conflict(self, conflict: Conflict) -> None:
        self.conflicts.append(conflict)
        log.warning("registration_conflict", service=conflict.service, instance=conflict.instance,
                    reason=conflict.reason, origin=conflict.origin, winner="config")

    # ------------------------------------------------------------ requests

    def apply(self, request: ApiRequest, tasks: InstanceTasks, now: float) -> Applied:
        """Carry out a request (the only place the API changes anything)."""
        route = _route(request.path)
        if route is None:
            return Applied(404, refused=refuse(404, f"no such resource: {request.path}"))
        kind, iid = route
        allowed = {"instances": ("GET", "POST"), "instance": ("GET", "PUT", "DELETE"), "services": ("GET",),
                   "parameters": ("GET",)}[kind]
        if request.method not in allowed:
            refused = refuse(405, f"{request.method} not allowed on {request.path} (allowed: {', '.join(allowed)})")
            refused.body["allow"] = list(allowed)
            return Applied(405, refused=refused)
        if request.method == "GET":
            if iid is not None and not self._state.has(iid):
                return Applied(404, refused=refuse(404, f"no instance {iid}"))
            return Applied(200, iid)
        if request.method == "POST":
            return self._register(request.body, tasks)
        assert iid is not None
        if request.method == "PUT":
            return self._update(iid, request.body, tasks)
        return self._deregister(iid, request.query, tasks, now)

    def _register(self, body: Any, tasks: InstanceTasks) -> Applied:
        checked = validate(body)
        if isinstance(checked, list):
            return Applied(422, refused=refuse(422, "invalid registration", checked))
        iid = InstanceId(checked.service, checked.name)
        if self._state.has(iid):
            where = "the config file (the config wins)" if iid in self._configured else "a registration"
            hint = "; it is being deregistered" if iid in self.leaving else "; use PUT to change it"
            return Applied(409, refused=refuse(409, f"instance {iid} exists, from {where}{hint}"))
        refused = self._admissible(checked, replacing=None)
        if refused is not None:
            return Applied(refused.status, refused=refused)
        self._add(iid, checked, tasks)
        self._persist()
        log.info("instance_registered", service=iid.service, instance=iid.instance, dbid=str(checked.binding),
                 dsid=str(self._state.service_id_of(iid.service)))
        return Applied(201, iid)

    def _add(self, iid: InstanceId, registration: Registration, tasks: InstanceTasks | None) -> None:
        mapping = self.names.check(registration.service, None, {})
        assert not isinstance(mapping, NameConflict)
        instance = registration.instance()
        self._state.add_instance(iid.service, mapping.service_id, instance)
        self.registered[iid] = registration
        if tasks is not None:
            tasks.start_instance(iid, instance)

    def _admissible(self, registration: Registration, *, replacing: InstanceId | None) -> ApiResponse | None:
        """Why a registration cannot be taken as it is (None: it can)."""
        name = registration.service
        in_use = {sid: service for service in self._state.service_names()
                  if (sid := self._state.service_id_of(service)) is not None}
        asked = ServiceId.parse(registration.dsid) if registration.dsid is not None else None
        mapping = self.names.check(name, asked, in_use)
        if isinstance(mapping, NameConflict):
            return refuse(409, mapping.message)
        if mapping.service_id.version != registration.binding.version:
            return refuse(422, "invalid registration", [FieldError(
                "binding", f"IPv{registration.binding.version} D-BID for {name}'s IPv{mapping.service_id.version} "
                f"D-SID {mapping.service_id}")])
        siblings = [(iid, self._state.status(iid)) for iid, _ in self._state.instances()
                    if iid.service == name and iid != replacing]
        for iid, status in siblings:
            if status.binding == registration.binding:
                return refuse(409, f"duplicate D-BID {registration.binding} in {name}: {iid} has it")
        if registration.path_id is not None:
            for iid, _ in siblings:
                if self._state.path_id(iid) == registration.path_id:
                    return refuse(409, f"path_id {registration.path_id} is taken in {name} by {iid}")
        publish = self._config.agent.publish
        if (replacing is None and siblings and not self._config.bgp.add_path and publish.mode == "per-instance"
                and self._state.service_id_of(name) is not None):
            return refuse(409, f"{name} has an instance already: a second one of one D-SID in per-instance mode "
                          "needs bgp.add_path: true (each announcement would replace the last)")
        return None

    def _update(self, iid: InstanceId, body: Any, tasks: InstanceTasks) -> Applied:
        if isinstance(body, dict):
            body = {"service": iid.service, "name": iid.instance, **body}
        checked = validate(body)
        if isinstance(checked, list):
            return Applied(422, refused=refuse(422, "invalid registration", checked))
        if (checked.service, checked.name) != (iid.service, iid.instance):
            return Applied(422, refused=refuse(422, "invalid registration", [FieldError(
                "name", f"the body names {checked.service}/{checked.name}, the path {iid}; rename by "
                "deregistering and registering")]))
        if iid in self._configured and self._state.has(iid):
            return Applied(409, refused=refuse(409, f"{iid} is defined in the config file (the config wins); "
                                               "change it there"))
        current = self.registered.get(iid)
        if current is None:
            return Applied(404, refused=refuse(404, f"no registered instance {iid}; POST to register it"))
        if iid in self.leaving:
            return Applied(409, refused=refuse(409, f"{iid} is being deregistered"))
        if checked.path_id is not None and checked.path_id != self._state.path_id(iid):
            return Applied(409, refused=refuse(409, f"path_id of {iid} is {self._state.path_id(iid)} and cannot "
                                               "change while registered"))
        refused = self._admissible(checked, replacing=iid)
        if refused is not None:
            return Applied(refused.status, refused=refused)
        before, after = current.instance(), checked.instance()
        self._state.replace_instance(iid, after)
        if before.metrics != after.metrics or before.health != after.health:
            tasks.stop_instance(iid)
            tasks.start_instance(iid, after)
        self.registered[iid] = checked
        self._persist()
        log.info("instance_updated", service=iid.service, instance=iid.instance, dbid=str(checked.binding))
        return Applied(200, iid, extra={"changed": before != after})

    def _deregister(self, iid: InstanceId, query: Mapping[str, str], tasks: InstanceTasks, now: float) -> Applied:
        if iid not in self.registered:
            if iid in self._configured and self._state.has(iid):
                return Applied(409, refused=refuse(409, f"{iid} is defined in the config file; remove it there, "
                                                   "or `dyncast ctl withdraw` it"))
            return Applied(404, refused=refuse(404, f"no registered instance {iid}"))
        immediate = query.get("immediate", "false").lower()
        if immediate not in ("true", "false", "1", "0", ""):
            return Applied(400, refused=refuse(400, "query.immediate: expected true or false"))
        deadline = self._config.agent.api.drain_deadline
        if "deadline" in query:
            try:
                deadline = float(query["deadline"])
                if not math.isfinite(deadline) or deadline < 0 or deadline > 86400:
                    raise ValueError
            except ValueError:
                return Applied(400, refused=refuse(400, "query.deadline: expected seconds, 0 to 86400"))
        if immediate in ("true", "1"):
            self._remove(iid, tasks, why="immediate")
            return Applied(200, None, extra={"removed": str(iid), "mode": "immediate"})
        if iid not in self.leaving:
            self.leaving[iid] = now + deadline
            self._settle_at[iid] = now + self._state.drain_settle(iid)
            before = self._state.set_admin(iid, Admin.DRAINING) if self._state.status(iid).admin \
                is not Admin.WITHDRAWN else Admin.WITHDRAWN
            log.info("instance_deregistering", service=iid.service, instance=iid.instance, deadline=deadline,
                     **{"from": str(before)})
            self._persist()
        return Applied(202, iid, extra={"mode": "graceful"})

    def _remove(self, iid: InstanceId, tasks: InstanceTasks, *, why: str) -> None:
        tasks.stop_instance(iid)
        self._state.remove_instance(iid)
        self.registered.pop(iid, None)
        self.leaving.pop(iid, None)
        self._settle_at.pop(iid, None)
        self._persist()
        log.info("instance_deregistered", service=iid.service, instance=iid.instance, why=why)

    # ------------------------------------------------------------ graceful deregistration

    def tick(self, tasks: InstanceTasks, now: float) -> None:
        """Finish graceful deregistrations whose sessions reached zero, or whose deadline passed."""
        for iid, deadline in sorted(self.leaving.items()):
            if not self._state.has(iid):
                self.leaving.pop(iid)
                self._settle_at.pop(iid, None)
                continue
            status = self._state.status(iid)
            sessions = status.metrics(now).get("active_sessions")
            if now >= deadline:
                self._remove(iid, tasks, why="deadline")
            elif sessions is not None and sessions <= 0 and self._settled(iid, status, now):
                self._remove(iid, tasks, why="sessions ended")
            elif self._state.published(iid, now) is None:
                self._remove(iid, tasks, why="not announced")
        self._ticked = max(self._ticked, now)

    def _settled(self, iid: InstanceId, status: InstanceStatus, now: float) -> bool:
        """Whether the session count was read the service's ``drain.settle`` after the deregistration began, as
        for a drain (ops/drain.py, decision 0011): before, a router may still pin a new session on it."""
        read = status.read_at("active_sessions", now)
        return (now if read is None else read) >= self._settle_at.get(iid, -math.inf)

    def next_due(self) -> float | None:
        """The next time :meth:`tick` has something to do: a deadline, or a settle time, ends."""
        due = [at for at in self._settle_at.values() if at > self._ticked]
        return min([*self.leaving.values(), *due], default=None)

    # ------------------------------------------------------------ answers

    def answer(self, request: ApiRequest, applied: Applied, now: float) -> ApiResponse:
        """The reply, built after the change (if any) was planned and written."""
        if applied.refused is not None:
            return applied.refused
        route = _route(request.path)
        assert route is not None
        kind, _ = route
        body: dict[str, Any] = {"ok": True, **applied.extra}
        if applied.iid is not None and self._state.has(applied.iid):
            body["instance"] = self.view(applied.iid, now)
        elif applied.iid is not None:  # a graceful deregistration that finished at once (no sessions)
            body["removed"] = str(applied.iid)
        elif kind == "instances" and request.method == "GET":
            body["instances"] = [self.view(iid, now) for iid, _ in self._state.instances()]
            body["conflicts"] = [conflict.view() for conflict in self.conflicts]
        elif kind == "services":
            body.update(self.services_view())
        elif kind == "parameters":
            body["parameters"] = monitoring.describe(monitoring.PARAMETERS)
        return ApiResponse(applied.status, body)

    def view(self, iid: InstanceId, now: float) -> dict[str, Any]:
        view = control.instance_view(self._state, iid, now)
        registration = self.registered.get(iid)
        view["origin"] = "api" if registration is not None else "config"
        view["dsid"] = str(self._state.service_id_of(iid.service))
        if registration is not None:
            view["monitoring"] = monitoring.describe(registration.monitoring)
            view["registration"] = registration.document()
        if iid in self.leaving:
            view["deregistering"] = {"deadline_in": round(max(0.0, self.leaving[iid] - now), 3)}
        return view

    def services_view(self) -> dict[str, Any]:
        running = {service: str(self._state.service_id_of(service)) for service in self._state.service_names()}
        pool = self.names.pool
        return {"names": self.names.table(), "running": running, "pool": str(pool) if pool is not None else None,
                "conflicts": [c.view() for c in self.conflicts if c.origin == "names"]}

    # ------------------------------------------------------------ the state file

    def _persist(self) -> None:
        if self._save is None:
            return
        document = [registration.document() for iid, registration in sorted(self.registered.items())
                    if iid not in self.leaving]
        try:
            self._save(document)
        except OSError as exc:
            self.save_failures += 1
            log.error("registration_state_write_failed", error=str(exc))


def state_file_saver(path: str) -> Callable[[list[dict[str, Any]]], None]:
    def save(document: list[dict[str, Any]]) -> None:
        persist.save(path, document)

    return save


def load_saved(path: str | None) -> list[dict[str, Any]]:
    """What the state file holds ([] without one); an unreadable file is logged and moved aside."""
    if path is None:
        return []
    try:
        return persist.load(path)
    except persist.StateFileError as exc:
        log.error("registration_state_unreadable", error=str(exc))
        return []


def _route(path: str) -> tuple[str, InstanceId | None] | None:
    if not path.startswith(PREFIX + "/"):
        return None
    parts = [unquote(part) for part in path[len(PREFIX) + 1:].split("/")]
    if parts == ["instances"]:
        return "instances", None
    if parts == ["services"]:
        return "services", None
    if parts == ["parameters"]:
        return "parameters", None
    if len(parts) == 3 and parts[0] == "instances" and all(0 < len(p) <= 64 for p in parts[1:]):
        return "instance", InstanceId(parts[1], parts[2])
    return None


def parse_body(raw: bytes) -> Any:
    """The JSON of a request body; ValueError saying where it is not JSON."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ValueError("body: not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"body: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError("body: JSON nested too deeply") from None
