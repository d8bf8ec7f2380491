"""Why an instance got its weight: the per-instance record behind `dyncast ctl explain SERVICE`.

A decision computes its numbers as columns (:class:`~dyncast_bgp.engine.assess.Assessment`);
an :class:`InstanceExplain` is a view of one instance's row in them plus the
stability step's result. Its ``key``, ``target`` and ``weight`` are stored;
everything else (the reason text, the factor breakdown) is derived when read,
so that asking whether a service is still converging costs next to nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any, NamedTuple

from dyncast_bgp.engine.assess import Assessment
from dyncast_bgp.engine.params import Params
from dyncast_bgp.engine.scoring import factors
from dyncast_bgp.engine.stability import Step
from dyncast_bgp.model import InstanceKey, InstanceState, MetricsView, PathMetrics, StateFlag


class Basis(NamedTuple):
    """What one decision's explanation reads.

    ``chosen``: the indices (into ``assessment``) that have a weight, aligned
    with ``weights`` and, when the weights were stepped toward one, ``target``
    and ``step``. ``reason(i)``: why instance ``i`` has its weight or none.
    ``shedding``: the indices in ``chosen`` that are under a soft limit and
    shedding their weight (target 0).
    """

    assessment: Assessment
    params: Params
    chosen: Sequence[int]
    weights: Sequence[float]
    target: Sequence[float] | None
    step: Step | None
    reason: Callable[[int], str]
    shedding: Collection[int] = ()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class InstanceExplain:
    """Everything the decision used and produced for one instance.

    ``metrics``/``flags``/``path``: the inputs as received (L0). ``compute``,
    ``network``: the L1 scores, ``overall`` the L2 (``score_source`` says
    whether computed or the agent's); ``factors`` the 0-1 factors behind the
    L1s; ``unknown`` the inputs that were absent and assumed. ``capacity``,
    ``load`` (percent) and ``free`` are what the policies used. ``target`` is
    the raw target the weights were moved toward (None when the instance was
    not in it, or the weights were fixed by a fallback), ``smoothed`` the EWMA
    proposal before the slew limit, ``weight`` the final weight.
    ``excluded``: why the instance gets no weight (None when it has one, as
    in ``Decision.excluded``); ``shedding``: it is under a soft limit
    (utilisation ceiling, overloaded flag), so not eligible for new share
    (target 0), yet still holds a weight that the stability step walks down to
    0; its ``reason`` says so (``utilisation 97.0% >= ceiling 95%: no new
    share, shedding by slew; ...``) and ``excluded`` stays None until the weight
    is 0. ``eligible`` (in :meth:`to_dict`): neither excluded nor shedding.
    ``reason``: why it has its weight (or none).
    """

    __slots__ = ("_basis", "_index", "_position", "key", "target", "weight")

    def __init__(self, basis: Basis, index: int, position: int | None) -> None:
        self._basis = basis
        self._index = index
        self._position = position
        self.key: InstanceKey = basis.assessment.candidates[index].key
        self.weight: float = basis.weights[position] if position is not None else 0.0
        self.target: float | None = (basis.target[position] if position is not None and basis.target is not None
                                     else None)

    @property
    def name(self) -> str | None:
        return self._basis.assessment.candidates[self._index].name

    @property
    def state(self) -> InstanceState:
        return self._basis.assessment.candidates[self._index].state

    @property
    def metrics(self) -> MetricsView:
        return self._basis.assessment.candidates[self._index].metrics.values

    @property
    def flags(self) -> StateFlag:
        return self._basis.assessment.candidates[self._index].metrics.flags

    @property
    def metrics_age(self) -> float | None:
        return self._basis.assessment.candidates[self._index].metrics_age

    @property
    def path(self) -> PathMetrics:
        return self._basis.assessment.candidates[self._index].path

    @property
    def compute(self) -> float:
        return self._basis.assessment.compute[self._index]

    @property
    def network(self) -> float:
        return self._basis.assessment.network[self._index]

    @property
    def overall(self) -> float:
        return self._basis.assessment.overall[self._index]

    @property
    def score_source(self) -> str:
        return self._basis.assessment.source(self._index)

    @property
    def factors(self) -> tuple[tuple[str, float], ...]:
        a = self._basis.assessment
        return factors(self.metrics, self.path, a.fleet, self._basis.params)

    @property
    def unknown(self) -> tuple[str, ...]:
        return self._basis.assessment.unknown.get(self._index, ())

    @property
    def capacity(self) -> float:
        return self._basis.assessment.capacity[self._index]

    @property
    def load(self) -> float:
        return self._basis.assessment.load[self._index]

    @property
    def free(self) -> float:
        return self._basis.assessment.free[self._index]

    @property
    def smoothed(self) -> float | None:
        basis, position = self._basis, self._position
        if position is None or basis.step is None or basis.target is None:
            return None
        return basis.step.smoothed(position, basis.target, basis.params.alpha)

    @property
    def excluded(self) -> str | None:
        exclusion = self._basis.assessment.exclusions[self._index]
        return exclusion.reason if exclusion is not None and not self.shedding else None

    @property
    def shedding(self) -> bool:
        return self._index in self._basis.shedding

    @property
    def eligible(self) -> bool:
        """May take new flows: not excluded and not shedding."""
        return self.excluded is None and not self.shedding

    @property
    def reason(self) -> str:
        return self._basis.reason(self._index)

    def _values(self) -> tuple[object, ...]:
        return (self.key, self.name, self.state, self.metrics, self.flags, self.metrics_age, self.path,
                self.compute, self.network, self.overall, self.score_source, self.factors, self.unknown,
                self.capacity, self.load, self.free, self.target, self.smoothed, self.weight, self.excluded,
                self.reason)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, InstanceExplain):
            return NotImplemented
        return self._values() == other._values()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"InstanceExplain({self.key}, target={self.target!r}, weight={self.weight!r}, reason={self.reason!r})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable view (addresses as strings, floats rounded to 6 places)."""
        return {
            "instance": str(self.key.binding),
            "path_id": self.key.path_id,
            "name": self.name,
            "state": self.state.value,
            "flags": self._flag_names(),
            "metrics": self._metrics_dict(),
            "metrics_age": _round(self.metrics_age),
            "path": self._path_dict(),
            "scores": self._scores_dict(),
            "factors": {name: _round(value) for name, value in self.factors},
            "unknown": list(self.unknown),
            "capacity": _round(self.capacity),
            "load": _round(self.load),
            "free": _round(self.free),
            "eligible": self.eligible,
            "target": _round(self.target),
            "smoothed": _round(self.smoothed),
            "weight": _round(self.weight),
            "excluded": self.excluded,
            "shedding": self.shedding,
            "reason": self.reason,
        }

    def outline(self) -> dict[str, Any]:
        """The entries of :meth:`to_dict` the audit log records (``instance``, ``state``, ``flags``,
        ``metrics``, ``path``, ``weight``, ``excluded``, ``reason``), the same values, without the scores and
        factors that cost most of ``to_dict``."""
        return {"instance": str(self.key.binding), **self.inputs(), "weight": _round(self.weight),
                "excluded": self.excluded, "reason": self.reason}

    def gauges(self) -> dict[str, Any]:
        """The entries of :meth:`to_dict` the router's metrics endpoint exports (``instance``, ``metrics``,
        ``metrics_age``, ``path``, ``scores``, ``weight``, ``eligible``), the same values, without the factors and
        reason texts."""
        return {"instance": str(self.key.binding), "metrics": self._metrics_dict(),
                "metrics_age": _round(self.metrics_age), "path": self._path_dict(),
                "scores": self._scores_dict(), "weight": _round(self.weight), "eligible": self.eligible}

    def inputs(self) -> dict[str, Any]:
        """The entries of :meth:`to_dict` that are the decision's inputs: ``state``, ``flags``, ``metrics`` and
        ``path`` (what the audit log compares with the next decision's)."""
        return {"state": self.state.value, "flags": self._flag_names(), "metrics": self._metrics_dict(),
                "path": self._path_dict()}

    def _scores_dict(self) -> dict[str, Any]:
        return {"compute": _round(self.compute), "network": _round(self.network), "overall": _round(self.overall),
                "source": self.score_source}

    def _flag_names(self) -> list[str]:
        flags = self.flags
        return [flag.name.lower() for flag in StateFlag if flag and flag in flags and flag.name]

    def _metrics_dict(self) -> dict[str, float | None]:
        return {name: _round(value) for name, value in self.metrics.items()}

    def _path_dict(self) -> dict[str, Any]:
        return path_dict(self.path)


def path_dict(path: PathMetrics) -> dict[str, Any]:
    """A path's measurements as the explanation, the status file and the metrics endpoint show them."""
    return {"rtt_mean_us": _round(path.rtt_mean_us), "rtt_peak_us": _round(path.rtt_peak_us),
            "loss_mean": _round(path.loss_mean), "loss_peak": _round(path.loss_peak),
            "throughput_bps": _round(path.throughput_bps), "reachable": path.reachable}


def explain(basis: Basis) -> tuple[InstanceExplain, ...]:
    """One :class:`InstanceExplain` per candidate, in canonical order."""
    position = {index: place for place, index in enumerate(basis.chosen)}
    get = position.get
    return tuple(InstanceExplain(basis, index, get(index)) for index in range(len(basis.assessment.candidates)))
