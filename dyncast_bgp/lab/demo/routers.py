"""What the ingress routers believe and decided, sampled from their status files (router.status_file).

:func:`instance_rows` turns one status document into one row per instance
(pure); :class:`RouterSampler` reads the files and keeps a time series per
router, instance and quantity for the report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dyncast_bgp.router.status import read_status

DSID = "203.0.113.10/32"


@dataclass(frozen=True, slots=True)
class InstanceRow:
    instance: str  # name in the story (or the D-BID when unknown)
    binding: str
    weight: float
    eligible: bool
    load: float | None  # cpu_utilization the agent announced (%)
    sessions: float | None
    delay_ms: float | None  # service_delay the agent announced
    rtt_ms: float | None  # this router's probes
    loss: float | None
    reason: str
    state: str


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def instance_rows(document: Mapping[str, Any], names: Mapping[str, str], service: str = DSID) -> list[InstanceRow]:
    """One row per instance of ``service`` in a status document; ``names`` maps D-BID -> instance name."""
    entry = document.get("services", {}).get(service)
    if not isinstance(entry, dict):
        return []
    rows = []
    for item in entry.get("instances", []):
        binding = str(item.get("instance"))
        metrics = item.get("metrics") or {}
        path = item.get("path") or {}
        rtt = _number(path.get("rtt_mean_us"))
        delay = _number(metrics.get("service_delay"))
        rows.append(InstanceRow(
            instance=names.get(binding, binding), binding=binding, weight=_number(item.get("weight")) or 0.0,
            eligible=bool(item.get("eligible")), load=_number(metrics.get("cpu_utilization")),
            sessions=_number(metrics.get("active_sessions")), delay_ms=None if delay is None else delay / 1000.0,
            rtt_ms=None if rtt is None else rtt / 1000.0, loss=_number(path.get("loss_mean")),
            reason=str(item.get("excluded") or item.get("reason") or ""), state=str(item.get("state", ""))))
    rows.sort(key=lambda row: row.instance)
    return rows


class RouterSampler:
    """Reads every router's status file; keeps the latest rows and a series per quantity."""

    def __init__(self, status_files: Mapping[str, str], names: Mapping[str, str], *, since: float = 0.0) -> None:
        self._files = {router: Path(path) for router, path in status_files.items()}
        self.since = since  # documents written before this (wall clock) are a previous run's: ignored
        self._names = dict(names)
        self.latest: dict[str, list[InstanceRow]] = {}
        self.programmed: dict[str, bool] = {}  # router -> synced and the kernel programmed at least once
        self.series: dict[str, dict[str, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))

    def sample(self, now: float) -> dict[str, list[InstanceRow]]:
        for router, path in self._files.items():
            document = read_status(path)
            if document is None or float(document.get("time", 0.0)) < self.since:
                continue
            rows = instance_rows(document, self._names)
            counters = document.get("counters") or {}
            self.programmed[router] = bool(document.get("synced")) and int(counters.get("applies", 0)) > 0
            self.latest[router] = rows
            for row in rows:
                self._add(f"weight {router}", row.instance, now, row.weight)
                if row.load is not None and router == next(iter(self._files)):
                    self._add("load", row.instance, now, row.load)  # the same announcement at every router
                if row.rtt_ms is not None:
                    self._add(f"rtt {router}", row.instance, now, row.rtt_ms)
        return self.latest

    def _add(self, group: str, name: str, now: float, value: float) -> None:
        self.series[group][name].append((now, value))

    def ready(self, expected_instances: int) -> bool:
        """Every router has a decision covering ``expected_instances`` instances with some weight."""
        return len(self.latest) == len(self._files) and all(
            self.programmed.get(router, False) and len(rows) >= expected_instances
            and sum(row.weight for row in rows) > 0.99 for router, rows in self.latest.items())
