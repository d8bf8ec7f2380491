"""The configuration file, as a pydantic schema (extra fields forbidden).

One YAML file configures either role. ``services`` and ``agent`` are what the
agent needs; ``bgp`` is shared (it is also what `dyncast exabgp-conf` renders).
Validation here is structural and per-field; cross-field rules (unique names,
ADD-PATH needed for several instances ...) live in :mod:`dyncast_bgp.config.rules`
so that every problem is reported at once with its location.
"""

from __future__ import annotations

import functools
import ipaddress
import math
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dyncast_bgp.model import ServiceId
from dyncast_bgp.wire.community import BY_NAME, DEFAULT_METRIC_TYPE

PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
METRIC_NAMES = tuple(name for name in BY_NAME if name not in ("state", "version"))


def with_length(dsid: str) -> str:
    """A D-SID written without a length is a host route: ``/32`` or ``/128``."""
    return dsid if "/" in dsid else dsid + ("/128" if ":" in dsid else "/32")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _check_metric_name(name: str) -> str:
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(METRIC_NAMES)}")
    return name


# ---------------------------------------------------------------- BGP identity


class Neighbor(Strict):
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    peer_as: int = Field(ge=1, le=4294967295)
    local_address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
    description: str | None = Field(default=None, max_length=200, pattern=r'^[^"\\;{}\n]*$')
    md5_password: str | None = Field(default=None, min_length=1, max_length=80, repr=False,
                                     pattern=r'^[^"\\;{}\n]+$')
    passive: bool = False
    hold_time: int = Field(default=180, ge=0, le=65535)
    families: tuple[Literal["ipv4 unicast", "ipv6 unicast"], ...] = ("ipv4 unicast", "ipv6 unicast")
    rate_limit: int | None = Field(
        default=None, ge=1, le=1_000_000, description="ExaBGP `rate-limit`: messages per second read from this "
        "neighbour (None: unlimited); the router also caps what one neighbour may hold (router.trust)")

    @field_validator("hold_time")
    @classmethod
    def _hold(cls, value: int) -> int:
        if 0 < value < 3:
            raise ValueError("must be 0 or at least 3 seconds (RFC 4271)")
        return value


class Bgp(Strict):
    router_id: ipaddress.IPv4Address
    local_as: int = Field(ge=1, le=4294967295)
    neighbors: tuple[Neighbor, ...] = Field(default=(), max_length=256)
    graceful_restart: int | None = Field(default=None, ge=1, le=4095,
                                         description="restart time in seconds; None disables")
    add_path: bool = Field(default=False, description="negotiate ADD-PATH send (agent) / receive (router)")
    metric_community_type: int = Field(default=DEFAULT_METRIC_TYPE, ge=0x83, le=0x8F,
                                       description="IANA experimental, transitive (0x83-0x8F)")
    link_bandwidth: bool = Field(default=False, description="also attach the 0x40/0x04 community")
    link_bandwidth_as: int | None = Field(default=None, ge=0, le=65535)


# ---------------------------------------------------------------- metric sources


class SourceBase(Strict):
    interval: PositiveSeconds = 5.0
    timeout: PositiveSeconds = 2.0
    max_age: PositiveSeconds | None = Field(
        default=None, description="seconds a value is kept after its source fails; default 3 intervals")
    on_failure: Literal["keep-last", "drop", "withdraw"] = "keep-last"

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> SourceBase:
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout:g}) must not exceed interval ({self.interval:g})")
        return self

    @property
    def effective_max_age(self) -> float:
        return self.max_age if self.max_age is not None else 3 * self.interval


class ProcSource(SourceBase):
    """Host CPU and memory from /proc/stat and /proc/meminfo."""

    type: Literal["procfs"]
    proc_root: str = "/proc"


class CgroupSource(SourceBase):
    """CPU and memory of one cgroup v2 (cpu.stat, cpu.max, memory.current, memory.max)."""

    type: Literal["cgroup"]
    path: str = Field(min_length=1, description="cgroup directory, e.g. /sys/fs/cgroup/system.slice/web.service")


class DocumentSource(SourceBase):
    """A source returning a document (JSON, or ``name=value`` lines) from which ``fields`` picks metrics."""

    fields: dict[str, str] = Field(
        default_factory=dict,
        description="metric name -> dotted JSON path; default: metric names at the top level")

    @field_validator("fields")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            _check_metric_name(name)
        return value


class HttpSource(DocumentSource):
    """An HTTP(S) endpoint of the instance returning a JSON object."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")


class CommandSource(DocumentSource):
    """A command (argv, no shell) printing JSON or ``name=value`` lines."""

    type: Literal["command"]
    argv: tuple[str, ...] = Field(min_length=1)


class FileSource(DocumentSource):
    """A file holding JSON or ``name=value`` lines, re-read every interval."""

    type: Literal["file"]
    path: str = Field(min_length=1)


MetricSource = Annotated[ProcSource | CgroupSource | HttpSource | CommandSource | FileSource,
                         Field(discriminator="type")]


# ---------------------------------------------------------------- health checks


class HealthBase(Strict):
    interval: PositiveSeconds = 5.0
    fast_interval: PositiveSeconds = 1.0
    timeout: PositiveSeconds = 2.0
    rise: int = Field(default=3, ge=1, le=100)
    fall: int = Field(default=3, ge=1, le=100)
    start_healthy: bool = Field(default=False, description="assume healthy before the first result")

    @model_validator(mode="after")
    def _intervals(self) -> HealthBase:
        if self.fast_interval > self.interval:
            raise ValueError(f"fast_interval ({self.fast_interval:g}) must not exceed interval "
                             f"({self.interval:g})")
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout:g}) must not exceed interval ({self.interval:g})")
        return self


class HttpHealth(HealthBase):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    expect_status: tuple[int, ...] = (200,)
    expect_body: str | None = None


class TcpHealth(HealthBase):
    type: Literal["tcp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)


class CommandHealth(HealthBase):
    type: Literal["command"]
    argv: tuple[str, ...] = Field(min_length=1)


class NoHealth(Strict):
    """Always healthy (the instance is announced while the agent runs)."""

    type: Literal["none"]


HealthCheck = Annotated[HttpHealth | TcpHealth | CommandHealth | NoHealth, Field(discriminator="type")]


# ---------------------------------------------------------------- publishing


class Threshold(Strict):
    """Re-announce when |new-old| >= absolute or |new-old|/|old| >= relative (either)."""

    relative: NonNegative | None = 0.10
    absolute: NonNegative | None = None


class Publish(Strict):
    mode: Literal["per-instance", "per-site"] = "per-instance"
    min_interval: PositiveSeconds = Field(default=1.0, description="never re-announce one route faster")
    refresh_interval: PositiveSeconds = Field(default=60.0, description="re-announce at least this often")
    threshold: Threshold = Threshold()
    thresholds: dict[str, Threshold] = Field(default_factory=dict, description="per-metric overrides")
    overload_utilization: float = Field(default=95.0, gt=0, le=100,
                                        description="utilisation (percent) at which the overloaded flag is set")
    site_binding: ipaddress.IPv4Address | None = Field(
        default=None, description="per-site mode: next hop of aggregated IPv4 routes (default: first instance)")
    site_binding_v6: ipaddress.IPv6Address | None = Field(
        default=None, description="per-site mode: next hop of aggregated IPv6 routes (default: first instance)")

    @field_validator("thresholds")
    @classmethod
    def _names(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        for name in value:
            _check_metric_name(name)
        return value

    @model_validator(mode="after")
    def _order(self) -> Publish:
        if self.refresh_interval < self.min_interval:
            raise ValueError(f"refresh_interval ({self.refresh_interval:g}) must be >= min_interval "
                             f"({self.min_interval:g})")
        return self


# ---------------------------------------------------------------- services


class InstanceConfig(Strict):
    name: Name
    binding: ipaddress.IPv4Address | ipaddress.IPv6Address = Field(description="D-BID, the BGP next hop")
    path_id: int | None = Field(default=None, ge=1, le=4294967295, description="ADD-PATH id; default: auto")
    capacity: NonNegative | None = Field(default=None, description="nominal requests/s")
    version: int | None = Field(default=None, ge=0, le=4294967295)
    state: Literal["active", "canary", "draining", "withdrawn"] = Field(
        default="active", description="draining: announced with the draining flag; withdrawn: not announced")
    static: dict[str, float] = Field(default_factory=dict, description="fixed metric values")
    metrics: tuple[MetricSource, ...] = ()
    health: HealthCheck = NoHealth(type="none")

    @field_validator("static")
    @classmethod
    def _static(cls, value: dict[str, float]) -> dict[str, float]:
        for name, number in value.items():
            _check_metric_name(name)
            if not math.isfinite(number) or number < 0:
                raise ValueError(f"{name}: must be a finite number >= 0")
        return value



SETTLE_MARGIN: Final = 2.0
"""Seconds a drain's default settle time adds to the re-announce throttle (BGP, the routers' apply, a metrics read)."""


class DrainPolicy(Strict):
    """Drain constraints and defaults of one service at this agent (docs/agent.md#drain); counted per agent."""

    min_available: int = Field(default=0, ge=0, description="a drain that would leave fewer instances available "
                               "(announced, healthy, not draining) at this agent is refused")
    max_drained: int | None = Field(default=None, ge=1, description="instances pending, draining or drained at "
                                    "once at this agent; a further drain is refused (None: no limit)")
    deadline: PositiveSeconds = Field(default=600.0, description="seconds of draining after which the instance "
                                      "counts as drained whatever its sessions (routers then move the rest)")
    lead_time: NonNegative = Field(default=0.0, description="seconds between the drain request and the draining "
                                   "flag on the wire")
    threshold: NonNegative = Field(default=0.0, description="drained once active_sessions is at or below this")
    settle: NonNegative | None = Field(
        default=None, description="seconds after draining began before a session count can end the drain: the "
        "draining flag must reach the routers (re-announce throttle, BGP, their apply) and a session pinned just "
        "before must show in the count; default publish.min_interval + 2 (3 with the default throttle); 0: off")


class ServiceConfig(Strict):
    name: Name
    dsid: str = Field(description="the anycast service prefix (D-SID), e.g. 203.0.113.10/32")
    instances: tuple[InstanceConfig, ...] = Field(min_length=1, max_length=4096)
    publish: Publish | None = Field(default=None, description="overrides agent.publish for this service")
    drain: DrainPolicy = Field(default_factory=DrainPolicy, description="drain constraints at this agent")

    @field_validator("dsid")
    @classmethod
    def _dsid(cls, value: str) -> str:
        text = with_length(value)
        ServiceId.parse(text)
        return text

    @property
    def service_id(self) -> ServiceId:
        return ServiceId.parse(self.dsid)


class EchoResponder(Strict):
    """UDP echo the routers' path probes reach (issue 3): off unless configured."""

    listen: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = Field(min_length=1)
    port: int = Field(default=9950, ge=1, le=65535)


class AgentApi(Strict):
    """The registration API (docs/orchestrator.md): orchestrators add and remove instances at run time."""

    listen: str | None = Field(default=None, pattern=r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$",
                               description="host:port of the HTTP/JSON registration API; None: off")
    state_file: str | None = Field(default=None, min_length=1,
                                   description="registrations are kept here across restarts; None: not kept")
    names: dict[Name, str] = Field(default_factory=dict,
                                  description="function name -> D-SID, the same at every site")
    pool: ipaddress.IPv4Network | ipaddress.IPv6Network | None = Field(
        default=None, description="anycast prefix D-SIDs of unnamed functions are allocated from (by a hash)")
    drain_deadline: PositiveSeconds = Field(
        default=60.0, description="a graceful deregistration withdraws after this long if sessions stay above 0")

    @field_validator("names")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for name, dsid in value.items():
            text = with_length(dsid)
            ServiceId.parse(text)
            checked[name] = text
        return checked


def listen_address(value: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host means every address; port 0 picks a free one) as (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port with a port 0-65535, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"write an IPv6 address in brackets, e.g. [::1]:9100, got {value!r}")
    return host or "0.0.0.0", int(port)


def _check_listen(value: str | None) -> str | None:
    if value is not None:
        listen_address(value)
    return value


def _check_socket_path(value: str | None) -> str | None:
    if value is None:
        return value
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    if "\0" in value or value.endswith("/"):
        raise ValueError("must be a file path")
    if len(value.encode()) > 107:
        raise ValueError("a unix socket path may have at most 107 bytes")
    return value


def _octal_mode(value: object) -> object:
    """YAML reads 0660 as octal already; a string is read as octal too ("0660", "0o660", "660")."""
    if isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        if not text or any(digit not in "01234567" for digit in text):
            raise ValueError(f"not an octal mode: {value!r}")
        return int(text, 8)
    return value


class AgentConfig(Strict):
    api: AgentApi = AgentApi()
    publish: Publish = Publish()
    echo: EchoResponder | None = None
    withdraw_on_exit: bool = True
    respawn: bool = Field(default=True, description="ExaBGP restarts the agent when it exits (rendered config)")
    end_of_rib_wait: float = Field(
        default=30.0, ge=0.0, le=3600.0, allow_inf_nan=False,
        description="seconds after a BGP session comes up within which the agent sends End-of-RIB (RFC 4724) "
        "itself, as soon as every instance is announced or known not to be (agent/eor.py); the rendered "
        "ExaBGP config says manual-eor. 0: ExaBGP sends it when the session is up, before the agent of a "
        "restarted node has announced anything, and peers keeping its routes stale flush them")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_listen: str | None = Field(default=None, description="host:port of the Prometheus endpoint")
    control_socket: str | None = Field(
        default=None, min_length=2, description="absolute path of the unix socket `dyncast ctl` talks to (drain, "
        "undrain, withdraw, restore, instances, status); None: no control socket")
    control_socket_mode: int = Field(
        default=0o660, ge=0, le=0o777, description="permissions of the control socket file; octal, e.g. 0o660 or "
        "\"0660\" (whoever may write to it may drain instances)")

    @field_validator("control_socket")
    @classmethod
    def _control_socket(cls, value: str | None) -> str | None:
        return _check_socket_path(value)

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str | None) -> str | None:
        return _check_listen(value)

    @field_validator("control_socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        return _octal_mode(value)


# ---------------------------------------------------------------- router (ingress D-Router)


class CategoryWeights(Strict):
    """Weights of the L1 categories in the L2 score (CATS metric levels)."""

    compute: NonNegative = 0.6
    network: NonNegative = 0.4

    @model_validator(mode="after")
    def _some(self) -> CategoryWeights:
        if self.compute + self.network <= 0:
            raise ValueError("at least one category weight must be > 0")
        return self


class FlapDampening(Strict):
    """Router-side flap dampening of one service's instances, RFC 2439 style (docs/hardening.md).

    Each flap (an instance back after a withdrawal, or its draining/overloaded flag cleared again) adds
    ``penalty``; the penalty halves every ``half_life`` seconds. Above ``suppress`` the instance is held out
    (``flap-damped``) until the penalty decays below ``reuse``; the penalty is capped so that this takes at
    most ``max_suppress`` seconds after the last flap. The defaults hold out only an instance that flaps
    about three times within ~5 s (or keeps flapping faster than every ~11 s).
    """

    enabled: bool = True
    penalty: float = Field(default=1.0, gt=0, le=1000, allow_inf_nan=False, description="added per flap")
    half_life: PositiveSeconds = 15.0
    suppress: float = Field(default=2.5, gt=0, allow_inf_nan=False, description="held out above this penalty")
    reuse: float = Field(default=1.0, gt=0, allow_inf_nan=False, description="readmitted below this penalty")
    max_suppress: PositiveSeconds = Field(default=60.0, description="longest hold after the last flap (seconds)")

    @model_validator(mode="after")
    def _thresholds(self) -> FlapDampening:
        if self.reuse >= self.suppress:
            raise ValueError(f"reuse ({self.reuse:g}) must be below suppress ({self.suppress:g})")
        if self.max_suppress / self.half_life > 64:
            raise ValueError("max_suppress may be at most 64 half-lives")
        ceiling = self.reuse * 2.0 ** (self.max_suppress / self.half_life)
        if ceiling <= self.suppress:
            raise ValueError(f"the penalty can never exceed suppress ({self.suppress:g}): the cap "
                             f"reuse * 2^(max_suppress/half_life) is {ceiling:.3g}; raise max_suppress")
        return self


class ServicePolicy(Strict):
    """How one service's new flows are spread; every field has a default."""

    policy: Literal["weighted", "best", "local-first", "consolidate"] = "weighted"
    latency_budget_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    loss_budget: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    utilization_ceiling: float = Field(default=95.0, gt=0, le=100)
    category_weights: CategoryWeights = CategoryWeights()
    use_agent_score: bool = Field(default=False, description="use the agent's L2 overall_score when present")
    unknown_metrics: Literal["neutral", "pessimistic", "exclude"] = "neutral"
    # stability (docs/control-law.md)
    smoothing: float = Field(default=0.3, gt=0, le=1, description="EWMA weight of a new observation")
    hysteresis: NonNegative = Field(default=0.1, description="relative score margin before `best` switches")
    min_dwell: NonNegative = Field(default=5.0, description="seconds a weight is held after it moved")
    max_step: float = Field(default=0.1, gt=0, le=1, description="largest weight change per decision step")
    # local-first / consolidate
    local: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = Field(
        default=(), description="local-first: D-BIDs in these prefixes are local")
    spill_at: float = Field(default=80.0, gt=0, le=100, description="local-first: utilisation that spills over")
    target_utilization: float = Field(default=70.0, gt=0, le=100, description="consolidate: pack up to this")
    # no eligible instance
    fallback: Literal["least-cost", "keep", "blackhole"] = "least-cost"
    fallback_grace: NonNegative = Field(default=10.0, description="seconds the last decision is kept first")
    # dataplane
    affinity: Literal["flow", "client"] = "flow"
    affinity_timeout: PositiveSeconds = 300.0
    shift_on_failure: bool = Field(
        default=False, description="move existing flows off an instance that fails (withdrawn, down, unreachable, "
        "over a latency/loss budget): true suits stateless and UDP services; false keeps them (TCP would reset)")
    # hardening (docs/hardening.md)
    flap_dampening: FlapDampening = FlapDampening()


class Probes(Strict):
    enabled: bool = True
    method: Literal["udp", "icmp"] = "udp"
    port: int = Field(default=9950, ge=1, le=65535, description="UDP echo port of the agents")
    interval: PositiveSeconds = 1.0
    timeout: PositiveSeconds = 1.0
    window: int = Field(default=10, ge=1, le=10_000, description="probes per statistics window")
    unreachable_after: int = Field(default=3, ge=1, le=100, description="lost probes in a row")

    @model_validator(mode="after")
    def _timeout(self) -> Probes:
        if self.timeout > self.interval:
            raise ValueError(f"timeout ({self.timeout:g}) must not exceed interval ({self.interval:g})")
        return self


class ForwardingRule(Strict):
    """How to reach instances whose D-BID is in ``prefix`` (first matching rule wins)."""

    prefix: ipaddress.IPv4Network | ipaddress.IPv6Network
    mode: Literal["direct", "ipip", "gre", "srv6"] = "direct"
    next_hop: ipaddress.IPv4Address | ipaddress.IPv6Address | None = Field(
        default=None, description="direct: default the D-BID itself")
    device: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    remote: ipaddress.IPv4Address | ipaddress.IPv6Address | None = Field(
        default=None, description="tunnel endpoint (srv6: the SID); default the D-BID itself")
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None

    @model_validator(mode="after")
    def _tunnel(self) -> ForwardingRule:
        if self.mode in ("ipip", "gre") and self.local is None:
            raise ValueError(f"{self.mode} needs a local tunnel address")
        return self


class StaticPath(Strict):
    """Path metrics used instead of probes (replay, or paths that cannot be probed)."""

    binding: ipaddress.IPv4Address | ipaddress.IPv6Address
    rtt_ms: NonNegative | None = None
    loss: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None = None
    throughput_mbps: NonNegative | None = None


def _network(value: object) -> object:
    """A plain address is a host prefix (/32, /128)."""
    return with_length(value) if isinstance(value, str) else value


class MetricClamp(Strict):
    """Plausible bounds for the metrics of a ``metrics: clamped`` peer (docs/hardening.md)."""

    min_utilization: float = Field(default=20.0, ge=0, le=100, allow_inf_nan=False,
                                   description="cpu/memory/gpu utilisation reported below this counts as this")
    max_capacity: NonNegative | None = Field(default=None, description="capacity reported above this counts as this")
    max_score: float = Field(default=8.0, ge=0, le=10, allow_inf_nan=False,
                             description="agent scores (compute, network, overall) above this count as this")


class TrustRule(Strict):
    """What a BGP neighbour may announce; unset limits allow anything (docs/hardening.md)."""

    dsids: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = Field(
        default=None, description="D-SIDs must lie inside one of these prefixes (None: any)")
    dbids: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = Field(
        default=None, description="next hops (D-BIDs) must lie inside one of these prefixes (None: any)")
    max_instances: int | None = Field(default=None, ge=0, description="most paths held from the peer")
    max_prefixes: int | None = Field(default=None, ge=0, description="most distinct D-SIDs held from the peer")
    metrics: Literal["trusted", "clamped", "ignored"] = "trusted"
    clamp: MetricClamp = MetricClamp()

    @field_validator("dsids", "dbids", mode="before")
    @classmethod
    def _hosts(cls, value: object) -> object:
        return [_network(item) for item in value] if isinstance(value, list | tuple) else value


class PeerTrust(TrustRule):
    """The rule for the neighbours inside ``peer`` (an address or a prefix); the first match wins."""

    peer: ipaddress.IPv4Network | ipaddress.IPv6Network
    name: str | None = Field(default=None, max_length=64, description="shown in logs (default: the peer prefix)")

    @field_validator("peer", mode="before")
    @classmethod
    def _host(cls, value: object) -> object:
        return _network(value)


class Trust(Strict):
    """Per-neighbour trust: ``peers`` in order, ``default`` for the others (default: trust everything)."""

    default: TrustRule = TrustRule()
    peers: tuple[PeerTrust, ...] = Field(default=(), max_length=4096)


class RouterConfig(Strict):
    defaults: ServicePolicy = ServicePolicy()
    services: dict[str, ServicePolicy] = Field(
        default_factory=dict, description="D-SID -> overrides of `defaults` (only the fields given)")
    probes: Probes = Probes()
    forwarding: tuple[ForwardingRule, ...] = ()
    static_paths: tuple[StaticPath, ...] = ()
    metrics_max_age: PositiveSeconds | None = Field(
        default=None, description="metrics older than this count as unknown (None: never)")
    stale_routes_time: NonNegative | None = Field(
        default=None, description="keep a down peer's routes this long (default: bgp.graceful_restart, else 0)")
    apply_interval: NonNegative = Field(default=0.1, description="coalesce dataplane applies (seconds)")
    gc_full_interval: PositiveSeconds = Field(
        default=300.0, description="seconds between the router's full garbage collections; its decision steps "
        "run with the collector paused and freeze what they leave alive (router/collector.py, decision 0008)")
    startup_hold: NonNegative = Field(
        default=15.0, description="after a start, the kernel is first programmed when every established peer has "
        "sent End-of-RIB, or after this many seconds, so a restart never replaces the installed state with a "
        "half-learned RIB (instances missing from the desired state lose their flows)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    decision_log_lines: int = Field(
        default=20, ge=0, description="changed decisions logged one line each at info (decision_changed) in each "
        "recompute, the first ones in service order; the others at debug, counted in one decision_lines_limited "
        "line. A fallback (service_fallback, warning) is always logged. Every change is in `dyncast ctl show "
        "decisions`, the status file and the audit log")
    metrics_listen: str | None = None
    metrics_instances: Literal["all", "weights", "none"] = Field(
        default="all", description="the per-instance series of the metrics endpoint: all (metrics, metrics age, "
        "scores, eligible and weight: about 10 series per instance, each scrape reading every instance's "
        "explanation), weights (dyncast_router_weight only, read from the decisions: one series per instance), "
        "none (the service and path series only). Every instance stays in `dyncast ctl explain` and the status "
        "file")
    status_file: str | None = Field(
        default=None, description="write the status document (decisions and their reasons, JSON) here")
    status_interval: PositiveSeconds = Field(default=0.5, description="how often the status file is rewritten")
    trust: Trust = Field(default_factory=Trust, description="what each BGP neighbour may announce (docs/hardening.md)")
    control_socket: str | None = Field(
        default=None, min_length=2, description="absolute path of the unix socket `dyncast ctl` talks to (show "
        "services/instances/decisions, explain, flows); None: no control socket")
    control_socket_mode: int = Field(default=0o660, ge=0, le=0o777,
                                     description="permissions of the control socket file (octal, e.g. 0o660)")
    metrics_interval: PositiveSeconds = Field(
        default=5.0, description="seconds between samples of the dataplane's flow counts for the metrics endpoint")
    audit_log: str | None = Field(
        default=None, min_length=1, description="append one JSON line per decision change here (the audit log)")
    audit_max_bytes: int = Field(default=64 * 1024 * 1024, ge=4096,
                                 description="rotate the audit log when it would grow past this size")
    audit_keep: int = Field(default=3, ge=0, le=100, description="rotated audit files kept (FILE.1 ... FILE.N)")
    audit_min_change: float = Field(
        default=0.0, ge=0.0, le=1.0, allow_inf_nan=False, description="write a changed decision to the audit "
        "log only when a weight moved by at least this much since the last decision written for its service, or "
        "its weighted or excluded instances or its fallback changed; the others are counted (audit_skipped) and "
        "the next record says how many it skipped. 0: every change. Needs audit_log")
    rollout_state: str | None = Field(
        default=None, min_length=1, description="canary rollouts are kept in this JSON file across restarts "
        "(docs/operations.md#canary-rollout); None: kept in memory only")

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str | None) -> str | None:
        return _check_listen(value)

    @field_validator("control_socket")
    @classmethod
    def _control_socket(cls, value: str | None) -> str | None:
        return _check_socket_path(value)

    @field_validator("control_socket_mode", mode="before")
    @classmethod
    def _octal(cls, value: object) -> object:
        return _octal_mode(value)

    @field_validator("services")
    @classmethod
    def _dsids(cls, value: dict[str, ServicePolicy]) -> dict[str, ServicePolicy]:
        seen: dict[ServiceId, str] = {}
        for dsid in value:
            service = ServiceId.parse(with_length(dsid))
            if service in seen:
                raise ValueError(f"{seen[service]!r} and {dsid!r} name the same service {service}: "
                                 "give its policy once")
            seen[service] = dsid
        return value

    @model_validator(mode="after")
    def _audit_min_change_needs_a_log(self) -> RouterConfig:
        if self.audit_min_change and not self.audit_log:
            raise ValueError("audit_min_change is set but audit_log is not: there is no audit log to keep material "
                             "changes in (set router.audit_log, or drop audit_min_change)")
        return self

    def stale_time(self, graceful_restart: int | None) -> float:
        """How long a lost peer's paths are kept: ``stale_routes_time``, else the graceful-restart time."""
        if self.stale_routes_time is not None:
            return self.stale_routes_time
        return float(graceful_restart or 0)

    def policy_for(self, service: ServiceId) -> ServicePolicy:
        """The defaults with this service's explicitly given fields on top (one lookup: the router asks for every
        service it decides, and for every changed decision)."""
        base, policies = self._merged()
        return policies.get(service, base)

    def policies(self) -> list[ServicePolicy]:
        """Every policy in force: the defaults, then each given service's."""
        base, policies = self._merged()
        return [base, *policies.values()]

    def _merged(self) -> tuple[ServicePolicy, dict[ServiceId, ServicePolicy]]:
        source, base, policies = self._policies
        if source is not self.services or base is not self.defaults:  # a copy carried the cache along
            del self.__dict__["_policies"]  # (``model_copy(update=...)`` copies it with the fields)
            source, base, policies = self._policies
        return base, policies

    @functools.cached_property
    def _policies(self) -> tuple[dict[str, ServicePolicy], ServicePolicy, dict[ServiceId, ServicePolicy]]:
        """``services``, ``defaults`` and each service given there, parsed once, with its policy made once."""
        return self.services, self.defaults, {ServiceId.parse(with_length(dsid)): self.defaults.model_copy(
            update={name: getattr(override, name) for name in override.model_fields_set})
            for dsid, override in self.services.items()}


class Config(Strict):
    bgp: Bgp
    agent: AgentConfig = AgentConfig()
    services: tuple[ServiceConfig, ...] = Field(default=(), max_length=100_000)
    router: RouterConfig = RouterConfig()

    def publish_for(self, service: ServiceConfig) -> Publish:
        return service.publish or self.agent.publish

    def settle_for(self, service: ServiceConfig) -> float:
        """The service's drain settle time (decision 0011): as configured, else its throttle + 2 s."""
        settle = service.drain.settle
        return settle if settle is not None else self.publish_for(service).min_interval + SETTLE_MARGIN

    @model_validator(mode="after")
    def _settle_after_the_throttle(self) -> Config:
        """A drain's settle time must outlast the re-announce throttle that can hold back the draining flag
        (decision 0011); 0 turns the settle time off."""
        for index, service in enumerate(self.services):
            settle, throttle = self.settle_for(service), self.publish_for(service).min_interval
            if 0 < settle <= throttle:
                raise ValueError(f"services[{index}] ({service.name}): drain.settle ({settle:g} s) must exceed "
                                 f"publish.min_interval ({throttle:g} s), which can hold the draining flag back "
                                 "that long (or be 0 to end drains on any session count)")
        return self
