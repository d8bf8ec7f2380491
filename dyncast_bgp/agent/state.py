"""The agent's state: every instance's observations and every route's publish record.

One asyncio task owns an :class:`AgentState` (STYLE.md habit 6); collectors and
health checks send it results, and ``plan(now)`` returns the ExaBGP commands to
write. No I/O and no clock: time comes in as ``now``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, replace

import structlog

from dyncast_bgp.agent import damping
from dyncast_bgp.agent.aggregate import Member, aggregate
from dyncast_bgp.agent.instance import Admin, InstanceStatus, OnFailure, SourceStatus
from dyncast_bgp.agent.risefall import RiseFall, initial, observe
from dyncast_bgp.config.schema import Config, InstanceConfig, NoHealth, Publish, ServiceConfig
from dyncast_bgp.model import IPAddress, MetricsView, ServiceId
from dyncast_bgp.wire.community import Community, LinkBandwidth, MetricCommunity, Source, WireError
from dyncast_bgp.wire.exabgp_json import Family, family_of
from dyncast_bgp.wire.exabgp_text import Announce, Command, Withdraw
from dyncast_bgp.wire.metrics import encode_metrics

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True, order=True)
class InstanceId:
    service: str
    instance: str

    def __str__(self) -> str:
        return f"{self.service}/{self.instance}"


@dataclass(frozen=True, slots=True)
class RouteKey:
    service: ServiceId
    path_id: int

    def __lt__(self, other: RouteKey) -> bool:
        return (self.service.sort_key, self.path_id) < (other.service.sort_key, other.path_id)


@dataclass(frozen=True, slots=True)
class Encoding:
    """How contents become communities (from the ``bgp`` section)."""

    type_code: int
    link_bandwidth_as: int | None  # None: no link-bandwidth community


def policy_of(publish: Publish) -> damping.Policy:
    def threshold(spec: object) -> damping.Threshold:
        return damping.Threshold(relative=getattr(spec, "relative", None), absolute=getattr(spec, "absolute", None))

    return damping.Policy(min_interval=publish.min_interval, refresh_interval=publish.refresh_interval,
                          threshold=threshold(publish.threshold),
                          thresholds={name: threshold(spec) for name, spec in publish.thresholds.items()})


def assign_path_ids(service: ServiceConfig, add_path: bool) -> dict[str, int]:
    """Path ids per instance: configured ones, others numbered from 1 skipping those (0 without ADD-PATH)."""
    if not add_path:
        return {instance.name: 0 for instance in service.instances}
    taken = {instance.path_id for instance in service.instances if instance.path_id is not None}
    ids: dict[str, int] = {}
    candidate = 1
    for instance in service.instances:
        if instance.path_id is not None:
            ids[instance.name] = instance.path_id
            continue
        while candidate in taken:
            candidate += 1
        ids[instance.name] = candidate
        taken.add(candidate)
    return ids


@dataclass(slots=True)
class _Service:
    config: ServiceConfig
    service_id: ServiceId
    per_site: bool
    policy: damping.Policy
    site_binding: IPAddress | None
    path_ids: dict[str, int]
    instances: list[InstanceId]


class AgentState:
    def __init__(self, config: Config) -> None:
        self.encoding = Encoding(
            type_code=config.bgp.metric_community_type,
            link_bandwidth_as=(config.bgp.link_bandwidth_as if config.bgp.link_bandwidth_as is not None
                               else config.bgp.local_as) if config.bgp.link_bandwidth else None)
        self._services: dict[str, _Service] = {}
        self._status: dict[InstanceId, InstanceStatus] = {}
        self._health: dict[InstanceId, RiseFall] = {}
        self._records: dict[RouteKey, damping.Record] = {}
        self._due: list[tuple[float, str]] = []  # (when, service), lazily cleaned of superseded entries
        self._scheduled: dict[str, float] = {}  # service -> the one time it is due
        self._dirty: set[str] = set()
        self.updates_sent = 0
        self.updates_held = 0
        self._config = config
        self._retired: list[Command] = []  # withdrawals of removed instances, sent by the next plan()
        for service in config.services:
            self._add_service(config, service)

    # ------------------------------------------------------------ set-up

    def _add_service(self, config: Config, service: ServiceConfig) -> None:
        publish = config.publish_for(service)
        service_id = service.service_id
        site = publish.site_binding_v6 if service_id.version == 6 else publish.site_binding
        entry = _Service(config=service, service_id=service_id, per_site=publish.mode == "per-site",
                         policy=policy_of(publish), site_binding=site,
                         path_ids=assign_path_ids(service, config.bgp.add_path and publish.mode == "per-instance"),
                         instances=[])
        if entry.per_site and config.bgp.add_path:
            entry.path_ids = dict.fromkeys(entry.path_ids, 1)
        for instance in service.instances:
            iid = InstanceId(service.name, instance.name)
            entry.instances.append(iid)
            self._status[iid] = _initial_status(instance, publish.overload_utilization)
            if not isinstance(instance.health, NoHealth):
                self._health[iid] = initial(instance.health.rise, instance.health.fall,
                                            instance.health.start_healthy)
        self._services[service.name] = entry
        self._dirty.add(service.name)

    # ------------------------------------------------------------ instances added at run time (agent/api.py)

    def has(self, iid: InstanceId) -> bool:
        return iid in self._status

    def service_id_of(self, service: str) -> ServiceId | None:
        entry = self._services.get(service)
        return entry.service_id if entry is not None else None

    def add_instance(self, service: str, dsid: ServiceId, instance: InstanceConfig) -> InstanceId:
        """Add an instance (and its service, when new); the next ``plan`` announces it once it is ready."""
        entry = self._services.get(service)
        if entry is None:
            self._add_service(self._config, ServiceConfig(name=service, dsid=str(dsid), instances=(instance,)))
            return InstanceId(service, instance.name)
        iid = InstanceId(service, instance.name)
        if iid in self._status:
            raise ValueError(f"{iid} exists")
        publish = self._config.publish_for(entry.config)
        if entry.per_site:
            path_id = next(iter(entry.path_ids.values()), 0)
        elif not self._config.bgp.add_path:
            path_id = 0
        else:
            taken = set(entry.path_ids.values())
            path_id = instance.path_id or next(n for n in range(1, len(taken) + 2) if n not in taken)
        entry.config = entry.config.model_copy(update={"instances": (*entry.config.instances, instance)})
        entry.path_ids[instance.name] = path_id
        entry.instances.append(iid)
        self._status[iid] = _initial_status(instance, publish.overload_utilization)
        if not isinstance(instance.health, NoHealth):
            self._health[iid] = initial(instance.health.rise, instance.health.fall, instance.health.start_healthy)
        self._dirty.add(service)
        return iid

    def replace_instance(self, iid: InstanceId, instance: InstanceConfig) -> None:
        """New settings for a live instance: health and sources keep their results unless their config changed."""
        entry = self._services[iid.service]
        index = entry.instances.index(iid)
        old = entry.config.instances[index]
        instances = list(entry.config.instances)
        instances[index] = instance
        entry.config = entry.config.model_copy(update={"instances": tuple(instances)})
        fresh = _initial_status(instance, self._config.publish_for(entry.config).overload_utilization)
        status = self._status[iid]
        keep_health = old.health == instance.health
        if not keep_health:
            self._health.pop(iid, None)
            if not isinstance(instance.health, NoHealth):
                self._health[iid] = initial(instance.health.rise, instance.health.fall,
                                            instance.health.start_healthy)
        self._update(iid, replace(
            fresh, admin=status.admin if old.state == instance.state else fresh.admin,
            healthy=status.healthy if keep_health else fresh.healthy,
            health_known=status.health_known if keep_health else fresh.health_known,
            health_detail=status.health_detail if keep_health else fresh.health_detail,
            sources=status.sources if old.metrics == instance.metrics else fresh.sources))

    def remove_instance(self, iid: InstanceId) -> None:
        """Forget an instance; the next ``plan`` withdraws what it announced (its service too, when emptied)."""
        entry = self._services[iid.service]
        index = entry.instances.index(iid)
        entry.config = entry.config.model_copy(
            update={"instances": entry.config.instances[:index] + entry.config.instances[index + 1:]})
        del entry.instances[index]
        path_id = entry.path_ids.pop(iid.instance)
        del self._status[iid]
        self._health.pop(iid, None)
        keys = [RouteKey(entry.service_id, path_id)] if not entry.per_site or not entry.instances else []
        if not entry.instances:
            keys = [key for key in self._records if key.service == entry.service_id]
            del self._services[iid.service]
            self._scheduled.pop(iid.service, None)
            self._dirty.discard(iid.service)
        else:
            self._dirty.add(iid.service)
        for key in keys:
            record = self._records.pop(key, None)
            if record is not None and record.published is not None:
                self._retired.append(Withdraw(key.service, record.published.next_hop, key.path_id))
                self.updates_sent += 1

    # ------------------------------------------------------------ inputs

    def instances(self) -> list[tuple[InstanceId, InstanceConfig]]:
        return [(iid, self._services[iid.service].config.instances[index])
                for entry in self._services.values() for index, iid in enumerate(entry.instances)]

    def status(self, iid: InstanceId) -> InstanceStatus:
        return self._status[iid]

    def health_machine(self, iid: InstanceId) -> RiseFall | None:
        return self._health.get(iid)

    def record_metrics(self, iid: InstanceId, source: int, values: MetricsView | None, error: str | None,
                       now: float) -> None:
        status = self._status[iid]
        sources = list(status.sources)
        sources[source] = sources[source].succeeded(values, now) if values is not None else \
            sources[source].failed(error or "failed")
        self._update(iid, replace(status, sources=tuple(sources)))

    def record_health(self, iid: InstanceId, ok: bool, detail: str) -> bool:
        """Feed one health result; True when the instance's health flipped."""
        machine = self._health.get(iid)
        if machine is None:
            return False
        machine, flipped = observe(machine, ok)
        self._health[iid] = machine
        status = self._status[iid]
        changed = replace(status, healthy=machine.healthy, health_known=status.health_known or flipped
                          or machine.healthy == ok, health_detail=detail)
        self._update(iid, changed)
        return flipped

    def set_admin(self, iid: InstanceId, admin: Admin) -> Admin:
        """Set the operator state; returns the one it replaces. The next ``plan`` acts on it."""
        before = self._status[iid].admin
        self._update(iid, replace(self._status[iid], admin=admin))
        return before

    def set_drained(self, iid: InstanceId, drained: bool) -> None:
        """Mark a draining instance drained (the drained flag joins the draining flag; ops/drain.py)."""
        if self._status[iid].drained != drained:
            self._update(iid, replace(self._status[iid], drained=drained))

    def drain_service(self, iid: InstanceId) -> ServiceConfig:
        """The config of the instance's service (its ``drain`` constraints)."""
        return self._services[iid.service].config

    def drain_settle(self, iid: InstanceId) -> float:
        """The settle time of the instance's service's drains (``Config.settle_for``)."""
        return self._config.settle_for(self._services[iid.service].config)

    def configured_admin(self, iid: InstanceId) -> Admin:
        """The operator state the config file gives the instance (what it started with)."""
        entry = self._services[iid.service]
        return Admin(entry.config.instances[entry.instances.index(iid)].state)

    def path_id(self, iid: InstanceId) -> int:
        return self._services[iid.service].path_ids[iid.instance]

    def published(self, iid: InstanceId, now: float) -> damping.Content | None:
        """What peers hold for this instance: its own route, or (per-site) the site route it is part of."""
        entry = self._services[iid.service]
        record = self._records.get(RouteKey(entry.service_id, entry.path_ids[iid.instance]))
        if record is None or record.published is None:
            return None
        if entry.per_site:
            return record.published if self._status[iid].withhold_reason(now) is None else None
        return record.published if record.published.next_hop == self._status[iid].binding else None

    def _update(self, iid: InstanceId, status: InstanceStatus) -> None:
        if status != self._status[iid]:
            self._status[iid] = status
            self._dirty.add(iid.service)

    # ------------------------------------------------------------ outputs

    def next_due(self) -> float | None:
        self._drop_superseded()
        return self._due[0][0] if self._due else None

    def _schedule(self, service: str, when: float) -> None:
        """Look at ``service`` again at ``when``: one entry per service, the earliest time wins."""
        current = self._scheduled.get(service)
        if current is not None and current <= when:
            return
        self._scheduled[service] = when
        heapq.heappush(self._due, (when, service))

    def _drop_superseded(self) -> None:
        while self._due and self._scheduled.get(self._due[0][1]) != self._due[0][0]:
            heapq.heappop(self._due)

    def plan(self, now: float) -> list[Command]:
        """Commands to send now; afterwards ``next_due()`` says when to call again."""
        self._drop_superseded()
        while self._due and self._due[0][0] <= now:
            _, service = heapq.heappop(self._due)
            if self._scheduled.get(service) is not None and self._scheduled[service] <= now:
                del self._scheduled[service]
                self._dirty.add(service)
            self._drop_superseded()
        commands, self._retired = self._retired, []
        for name in sorted(self._dirty):
            commands.extend(self._plan_service(self._services[name], now))
        self._dirty.clear()
        return commands

    def settled(self, now: float) -> bool:
        """Whether what peers should hold is sent: no instance still waiting for its first health result and
        metrics (an instance the operator withdrew does not wait), and every route with something to announce
        announced at least once (none held back since). What the agent's End-of-RIB waits for
        (:mod:`~dyncast_bgp.agent.eor`); a later metric update held by damping does not count: its route is
        there."""
        if any(not status.ready and status.admin is not Admin.WITHDRAWN for status in self._status.values()):
            return False
        for entry in self._services.values():
            for key, desired in self._desired(entry, now).items():
                if desired is None:
                    continue
                record = self._records.get(key)
                if record is None or record.published is None:
                    return False
        return True

    def families(self) -> frozenset[Family]:
        """The address families of the services the agent announces (``"ipv4 unicast"``, ``"ipv6 unicast"``)."""
        return frozenset(family_of(entry.service_id.version) for entry in self._services.values())

    def withdraw_all(self) -> list[Command]:
        commands: list[Command] = []
        for key, record in sorted(self._records.items()):
            if record.published is not None:
                commands.append(Withdraw(key.service, record.published.next_hop, key.path_id))
                self._records[key] = damping.Record(None, record.sent_at)
        return commands

    def _plan_service(self, entry: _Service, now: float) -> list[Command]:
        commands: list[Command] = []
        for key, desired in self._desired(entry, now).items():
            result = damping.step(self._records.get(key, damping.Record()), desired, now, entry.policy)
            self._records[key] = result.record
            if result.action == damping.Action.ANNOUNCE and result.content is not None:
                commands.append(Announce(key.service, result.content.next_hop, key.path_id,
                                         self.communities(result.content, aggregated=entry.per_site)))
                self.updates_sent += 1
            elif result.action == damping.Action.WITHDRAW and result.content is not None:
                commands.append(Withdraw(key.service, result.content.next_hop, key.path_id))
                self.updates_sent += 1
            if result.due is not None:
                self.updates_held += 1
                self._schedule(entry.config.name, result.due)
        for iid in entry.instances:
            expiry = _next_expiry(self._status[iid], now)
            if expiry is not None:
                self._schedule(entry.config.name, expiry)
        return commands

    def _desired(self, entry: _Service, now: float) -> dict[RouteKey, damping.Content | None]:
        views: list[tuple[InstanceId, damping.Content | None]] = []
        for iid in entry.instances:
            status = self._status[iid]
            if status.withhold_reason(now) is not None:
                views.append((iid, None))
                continue
            metrics = status.metrics(now)
            views.append((iid, damping.Content(status.binding, metrics, status.flags(metrics), status.version)))
        if not entry.per_site:
            return {RouteKey(entry.service_id, entry.path_ids[iid.instance]): content for iid, content in views}
        announced = [content for _, content in views if content is not None]
        key = RouteKey(entry.service_id, next(iter(entry.path_ids.values()), 0))
        summary = aggregate([Member(c.metrics, c.flags, c.version) for c in announced], len(entry.instances))
        if summary is None:
            return {key: None}
        next_hop = entry.site_binding or announced[0].next_hop
        return {key: damping.Content(next_hop, summary.metrics, summary.flags, summary.version)}

    def communities(self, content: damping.Content, *, aggregated: bool = False) -> tuple[Community, ...]:
        values = dict(content.metrics)
        sources = dict.fromkeys(values, Source.AGGREGATED) if aggregated else None
        try:
            metric_list = encode_metrics(values, flags=content.flags, version=content.version,
                                         type_code=self.encoding.type_code, sources=sources)
        except WireError:
            good = {name: value for name, value in values.items() if _encodable(name, value)}
            for name in sorted(set(values) - set(good)):
                log.warning("metric_not_encodable", metric=name, value=values[name])
            metric_list = encode_metrics(good, flags=content.flags, version=content.version,
                                         type_code=self.encoding.type_code, sources=sources)
        result: list[Community] = list(metric_list)
        bandwidth = self._link_bandwidth(content.metrics)
        if bandwidth is not None:
            result.append(bandwidth)
        return tuple(result)

    def _link_bandwidth(self, metrics: MetricsView) -> LinkBandwidth | None:
        """Free capacity as the link-bandwidth figure, for FRR weighted ECMP (only ratios matter)."""
        if self.encoding.link_bandwidth_as is None or "capacity" not in metrics:
            return None
        busiest = max((metrics.get(name, 0.0) for name in
                       ("cpu_utilization", "memory_utilization", "gpu_utilization")), default=0.0)
        free = max(0.0, metrics["capacity"] * (1.0 - min(busiest, 100.0) / 100.0))
        return LinkBandwidth.of(self.encoding.link_bandwidth_as, free)

    @property
    def published_routes(self) -> int:
        return sum(1 for record in self._records.values() if record.published is not None)

    def service_names(self) -> Iterable[str]:
        return self._services.keys()


def _encodable(name: str, value: float) -> bool:
    try:
        MetricCommunity.of(name, value)
    except WireError:
        return False
    return True


def _initial_status(instance: InstanceConfig, overload_at: float) -> InstanceStatus:
    no_health = isinstance(instance.health, NoHealth)
    start_healthy = no_health or bool(getattr(instance.health, "start_healthy", False))
    sources = tuple(SourceStatus(on_failure=OnFailure(source.on_failure), max_age=source.effective_max_age)
                    for source in instance.metrics)
    return InstanceStatus(name=instance.name, binding=instance.binding, admin=Admin(instance.state),
                          healthy=start_healthy, health_known=start_healthy, sources=sources,
                          static=MetricsView(instance.static), capacity=instance.capacity,
                          version=instance.version, overload_at=overload_at)


def _next_expiry(status: InstanceStatus, now: float) -> float | None:
    """When a failing source's kept values run out (the announcement then changes)."""
    times = [source.good_at + source.max_age for source in status.sources
             if source.error is not None and source.good_at is not None and source.good_at + source.max_age > now]
    return min(times) if times else None
