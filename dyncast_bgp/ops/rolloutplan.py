"""Reading a rollout plan file (YAML or JSON) into a :class:`~dyncast_bgp.ops.rollout.Plan`.

```yaml
name: web-v2                      # optional, for people
service: 203.0.113.10/32          # the D-SID
version: 2                        # the version tag the new instances announce (wire metric 0x31)
stages:                           # percent of the service's new flows the new version may take, and how long
  - {share: 10, hold: 2m}         # each stage is watched (seconds, or 30s / 2m / 1h)
  - {share: 30, hold: 5m}
  - {share: 100, hold: 10m}
kpis:                             # toward the new-version instances, the worst of them; every field optional
  max_rtt_ms: 50                  # probe RTT (window mean)
  max_loss: 0.02                  # probe loss (0-1); unreachable counts as 1
  max_service_delay_ms: 200       # the service_delay metric the agents report
  max_error_rate: 1               # percent of requests answered with an error (the error_rate metric)
  max_metrics: {queued_requests: 100}   # any other metric the agents report (a known metric name)
  breach_for: 0                   # seconds a breach must last before the rollback
clients: [198.51.100.0/24]        # optional: only these clients' new flows may reach the new version
rollback: soft                    # soft: flows already on the new version finish there; hard: evicted
auto_commit: false                # commit by itself after the last stage's hold
```

Every error is reported with where it is (``stages.1.share: ...``).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dyncast_bgp.config.schema import METRIC_NAMES
from dyncast_bgp.model import ServiceId
from dyncast_bgp.ops.durations import parse_duration
from dyncast_bgp.ops.rollout import Kpis, Plan, Stage

MAX_PLAN_BYTES = 256 * 1024


class PlanError(ValueError):
    """A plan that cannot be read, with every problem and where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Limit = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Stage(_Strict):
    share: float = Field(gt=0, le=100, allow_inf_nan=False, description="percent of new flows")
    hold: float | str = Field(description="seconds, or a duration like 2m")

    @field_validator("hold")
    @classmethod
    def _hold(cls, value: float | str) -> float:
        return parse_duration(value)


class _Kpis(_Strict):
    max_rtt_ms: Limit | None = None
    max_loss: float | None = Field(default=None, ge=0, le=1, allow_inf_nan=False)
    max_service_delay_ms: Limit | None = None
    max_error_rate: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    max_metrics: dict[str, Limit] = Field(default_factory=dict)
    breach_for: float | str = 0.0

    @field_validator("breach_for")
    @classmethod
    def _breach_for(cls, value: float | str) -> float:
        return parse_duration(value)

    @field_validator("max_metrics")
    @classmethod
    def _known(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(METRIC_NAMES))
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRIC_NAMES)})")
        return value

    @model_validator(mode="after")
    def _one_error_rate(self) -> _Kpis:
        if self.max_error_rate is not None and "error_rate" in self.max_metrics:
            raise ValueError("max_error_rate and max_metrics.error_rate both set: keep one")
        return self

    def limits(self) -> dict[str, float]:
        """``max_metrics`` with ``max_error_rate`` (percent) folded in as the ``error_rate`` metric's limit."""
        limits = dict(self.max_metrics)
        if self.max_error_rate is not None:
            limits["error_rate"] = self.max_error_rate
        return limits


class _Plan(_Strict):
    name: str = Field(default="", max_length=128)
    service: str
    version: int = Field(ge=0, le=4294967295)
    stages: list[_Stage] = Field(min_length=1, max_length=100)
    kpis: _Kpis = Field(default_factory=_Kpis)
    rollback: Literal["soft", "hard"] = "soft"
    auto_commit: bool = False
    clients: list[str] = Field(default_factory=list, max_length=64)

    @field_validator("clients")
    @classmethod
    def _clients(cls, value: list[str]) -> list[str]:
        for index, text in enumerate(value):
            try:
                ipaddress.ip_network(text)
            except ValueError as exc:
                raise ValueError(f"clients[{index}]: {exc}") from None
        return value

    @field_validator("service")
    @classmethod
    def _service(cls, value: str) -> str:
        return str(ServiceId.parse(value))

    @field_validator("stages")
    @classmethod
    def _rising(cls, value: list[_Stage]) -> list[_Stage]:
        shares = [stage.share for stage in value]
        if shares != sorted(shares):
            raise ValueError(f"shares must not fall from one stage to the next: {shares}")
        return value


def plan_from_document(data: Any) -> Plan:
    """A plan from a decoded YAML/JSON document; :class:`PlanError` lists every problem with its location."""
    try:
        model = _Plan.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(part) for part in error['loc']) or 'plan'}: {error['msg']}"
                    for error in exc.errors()]
        raise PlanError("; ".join(problems)) from None
    kpis = model.kpis
    service = ServiceId.parse(model.service)
    wrong = [text for text in model.clients if ipaddress.ip_network(text).version != service.version]
    if wrong:
        raise PlanError(f"clients: {', '.join(wrong)}: not of the address family of {service}")
    return Plan(service=service, version=model.version,
                stages=tuple(Stage(stage.share / 100.0, float(stage.hold)) for stage in model.stages),
                kpis=Kpis(max_rtt_ms=kpis.max_rtt_ms, max_loss=kpis.max_loss,
                          max_service_delay_ms=kpis.max_service_delay_ms, max_metrics=kpis.limits(),
                          breach_for=float(kpis.breach_for)),
                hard_rollback=model.rollback == "hard", auto_commit=model.auto_commit, name=model.name,
                clients=tuple(ipaddress.ip_network(text) for text in model.clients))


def load_plan(path: str | Path) -> Plan:
    """Read a plan file (YAML, of which JSON is a subset)."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(MAX_PLAN_BYTES + 1)
    except OSError as exc:
        raise PlanError(f"{path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(f"{path}: larger than {MAX_PLAN_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PlanError(f"{path}: not YAML or JSON: {str(exc).splitlines()[0]}") from None
    try:
        return plan_from_document(data)
    except PlanError as exc:
        raise PlanError(f"{path}: {exc}") from None

