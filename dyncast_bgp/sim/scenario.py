"""Scenario files: sites, ingresses and what each ingress can know, as a validated value.

A scenario is a YAML file (the built-in ones live in ``dyncast_bgp/sim/scenarios/``).
``parse(text, origin)`` is pure; ``load(name_or_path)`` reads a file or a built-in
scenario by name. Every schema problem is reported with its location
(``skewed.yaml: sites[1].servers: must be >= 1``), all at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BUILTIN_DIR = Path(__file__).with_name("scenarios")

Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Strict):
    """A span of simulated time, ``start`` inclusive, ``end`` exclusive (seconds)."""

    start: NonNegative
    end: NonNegative

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end:g}) must be after start ({self.start:g})")
        return self


class Surge(Window):
    """The ingress's request rate is multiplied by ``factor`` during the window."""

    factor: NonNegative


class ServiceTime(_Strict):
    """Shape of the work per request (mean 1, scaled by a server's ``rate``).

    ``exponential``; ``lognormal`` with coefficient of variation ``cv``; ``pareto``
    with tail index ``alpha`` (> 1; the variance is infinite for alpha <= 2).
    """

    distribution: Literal["exponential", "lognormal", "pareto"] = "exponential"
    cv: Positive = 2.0
    alpha: Annotated[float, Field(gt=1, allow_inf_nan=False)] = 2.5


class Site(_Strict):
    """An edge site running one instance of the service: ``servers`` FIFO servers of ``rate`` requests/s each."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    servers: int = Field(ge=1, le=10_000)
    rate: Positive
    failures: tuple[Window, ...] = ()

    @property
    def capacity(self) -> float:
        return self.servers * self.rate


class Ingress(_Strict):
    """An ingress router and its client population.

    ``rate`` is requests/s (Poisson session arrivals; see :class:`Sessions`); ``rtt_ms``
    the round trip to every site. ``count`` > 1 makes that many identical ingresses
    (named ``name-1`` ...), each with ``rate``.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    rate: NonNegative
    rtt_ms: dict[str, NonNegative]
    surges: tuple[Surge, ...] = ()
    count: int = Field(default=1, ge=1, le=1000)


class Sessions(_Strict):
    """Requests per session (geometric, mean ``requests``) and the mean gap between them (exponential).

    Every request of a session goes to the instance its first request went to (flow affinity).
    """

    requests: Annotated[float, Field(ge=1, allow_inf_nan=False)] = 1.0
    think_s: Positive = 1.0


class Damping(_Strict):
    """The agent's publishing rule (docs/agent.md): thresholds, min interval, refresh."""

    relative: NonNegative = 0.10
    absolute: NonNegative | None = None
    min_interval_s: Positive = 1.0
    refresh_s: Positive = 60.0


class Information(_Strict):
    """What the ingresses learn and when.

    The agent measures every ``agent_interval_s`` (mean utilisation over the interval,
    backlog at that instant), publishes through ``damping``; BGP brings an update to an
    ingress ``propagation_s`` later (plus up to ``propagation_jitter_s``, fixed per ingress).
    A failed site is withdrawn ``health_detect_s`` after it fails (then propagation);
    probes see it unreachable after ``probe_detect_s``. Probes measure the RTT with a
    Gaussian error of ``probe_noise_ms`` (standard deviation). Each ingress decides every
    ``decision_interval_s``, at its own phase. A request sent to a failed site is retried
    by the client after ``retry_timeout_s`` (a new flow: a new pick).
    """

    agent_interval_s: Positive = 1.0
    damping: Damping = Damping()
    propagation_s: NonNegative = 1.0
    propagation_jitter_s: NonNegative = 0.5
    health_detect_s: NonNegative = 3.0
    probe_detect_s: NonNegative = 3.0
    probe_noise_ms: NonNegative = 1.0
    decision_interval_s: Positive = 1.0
    retry_timeout_s: Positive = 1.0


class Scenario(_Strict):
    """One simulated world; ``policy`` holds the :class:`ServicePolicy` fields for the dyncast policies."""

    name: str = Field(min_length=1)
    description: str = ""
    duration_s: Positive
    warmup_s: NonNegative = 30.0
    slo_ms: Positive = 100.0
    bucket_s: Positive = 1.0
    seed: int = 1
    service_time: ServiceTime = ServiceTime()
    sessions: Sessions = Sessions()
    information: Information = Information()
    sites: tuple[Site, ...] = Field(min_length=1)
    ingresses: tuple[Ingress, ...] = Field(min_length=1)
    policy: dict[str, Any] = Field(default_factory=dict)
    policies: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        names = [site.name for site in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("site names must be unique")
        for ingress in self.ingresses:
            missing = [name for name in names if name not in ingress.rtt_ms]
            extra = [name for name in ingress.rtt_ms if name not in names]
            if missing or extra:
                raise ValueError(f"ingress {ingress.name}: rtt_ms must name every site exactly "
                                 f"(missing {missing}, unknown {extra})")
        if self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be shorter than duration_s")
        return self

    def expanded_ingresses(self) -> tuple[Ingress, ...]:
        """The ingresses with ``count`` unrolled (each copy has count 1 and its own name)."""
        out: list[Ingress] = []
        for ingress in self.ingresses:
            if ingress.count == 1:
                out.append(ingress)
            else:
                out.extend(ingress.model_copy(update={"name": f"{ingress.name}-{n + 1}", "count": 1})
                           for n in range(ingress.count))
        return tuple(out)

    def with_changes(self, *, duration_s: float | None = None, propagation_s: float | None = None,
                     seed: int | None = None) -> Scenario:
        """A copy with the command line's overrides applied (validated again)."""
        data = self.model_dump()
        if duration_s is not None:
            data["duration_s"] = duration_s
            data["warmup_s"] = min(self.warmup_s, duration_s / 2)
        if propagation_s is not None:
            data["information"]["propagation_s"] = propagation_s
        if seed is not None:
            data["seed"] = seed
        return Scenario.model_validate(data)


class ScenarioError(Exception):
    """Every problem of one scenario file, each as ``origin: location: message``."""

    def __init__(self, origin: str, problems: list[str]) -> None:
        self.origin = origin
        self.problems = problems
        super().__init__("\n".join(f"{origin}: {problem}" for problem in problems))


def parse(text: str, origin: str = "<scenario>") -> Scenario:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(origin, [f"invalid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ScenarioError(origin, ["the file must hold a mapping"])
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(origin, [f"{_where(error['loc'])}: {error['msg']}" for error in exc.errors()]) from None


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "<top>"


def builtin_names() -> tuple[str, ...]:
    return tuple(sorted(path.stem for path in BUILTIN_DIR.glob("*.yaml")))


def load(name_or_path: str | Path) -> Scenario:
    """A scenario file, or a built-in scenario by name (``skewed``)."""
    path = Path(name_or_path)
    if not path.exists() and (BUILTIN_DIR / f"{name_or_path}.yaml").exists():
        path = BUILTIN_DIR / f"{name_or_path}.yaml"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        known = ", ".join(builtin_names())
        raise ScenarioError(str(name_or_path), [f"cannot read ({exc}); built-in scenarios: {known}"]) from None
    return parse(text, path.name)
