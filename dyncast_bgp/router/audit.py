"""The decision audit log: one JSON line per decision change, to explain a past incident.

``router.audit_log: PATH`` turns it on. For every service whose decision
changed, :func:`audit_record` (pure) builds a record of what changed and why:
old and new weights, every instance's reason or exclusion, and the inputs
(metrics, path, state) that differ from those the previous decision of that
service saw. :class:`AuditWriter` appends the lines from a worker thread (the
event loop only puts a string on a bounded queue; when the queue is full the
record is dropped and counted), and rotates the file when it would grow past
``router.audit_max_bytes``: ``PATH`` -> ``PATH.1`` -> ... -> ``PATH.N``
(``router.audit_keep``; 0 keeps none, so the file is simply cut).

:class:`DecisionBook` remembers each service's last decision and when it was
made (``dyncast ctl show decisions``) and feeds the writer. Reading back is
:mod:`dyncast_bgp.obs.commands` (`dyncast audit`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.model import ServiceId

log = structlog.get_logger(__name__)

VERSION = 1
QUEUE_LIMIT = 10_000
INPUTS = ("state", "flags", "metrics", "path")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _weights(outcome: Outcome | None) -> dict[str, float]:
    if outcome is None:
        return {}
    return {str(key.binding): round(weight, 6) for key, weight in sorted(outcome.decision.weights.items())}


def _instances(outcome: Outcome | None) -> dict[str, dict[str, Any]]:
    if outcome is None:
        return {}
    return {item["instance"]: item for item in (entry.to_dict() for entry in outcome.explain)}


def input_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """What the decision's inputs for one instance changed: ``{input: [old, new]}``, per metric for dicts."""
    changes: dict[str, Any] = {}
    for name in INPUTS:
        before, after = old.get(name), new.get(name)
        if before == after:
            continue
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            changes[name] = {field: [before.get(field), after.get(field)]
                             for field in sorted(before.keys() | after.keys()) if before.get(field) != after.get(field)}
        else:
            changes[name] = [before, after]
    return changes


def audit_record(old: Outcome | None, new: Outcome, now: float) -> dict[str, Any]:
    """One audit line: what changed for ``new.decision.service`` since ``old``, and why (pure)."""
    before, after = _instances(old), _instances(new)
    old_weights = _weights(old)
    instances: dict[str, Any] = {}
    for dbid, item in after.items():
        entry: dict[str, Any] = {"weight": item["weight"], "old_weight": old_weights.get(dbid, 0.0),
                                 "state": item["state"], "excluded": item["excluded"], "reason": item["reason"]}
        if dbid in before:
            changed = input_changes(before[dbid], item)
            if changed:
                entry["changed"] = changed
        else:
            entry["added"] = True
        instances[dbid] = entry
    return {
        "v": VERSION, "time": iso(now), "ts": round(now, 3), "service": str(new.decision.service),
        "status": new.status, "fallback": new.fallback,
        "old": old_weights, "new": _weights(new),
        "instances": instances,
        "removed": sorted(set(before) - set(after)),
    }


# ---------------------------------------------------------------- the writer


class AuditWriter:
    """Appends lines to ``path`` from a worker thread, rotating by size; never blocks the caller."""

    def __init__(self, path: str | Path, *, max_bytes: int, keep: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.written = 0
        self.dropped = 0
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=QUEUE_LIMIT)
        self._thread = threading.Thread(target=self._run, name="audit-writer", daemon=True)
        self._thread.start()

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), allow_nan=False, default=str) + "\n"
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the thread."""
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        self._thread.join(timeout=timeout)

    def _run(self) -> None:
        failed: str | None = None
        while True:
            line = self._queue.get()
            if line is None:
                return
            batch = [line]
            while len(batch) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._append(batch, failed)
                    return
                batch.append(more)
            failed = self._append(batch, failed)

    def _append(self, lines: list[str], failed: str | None) -> str | None:
        """Append ``lines``, rotating between lines so no file grows past ``max_bytes``.

        Returns the kind of error (logged once per kind), None on success.
        """
        done = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            chunk: list[bytes] = []
            for line in lines:
                data = line.encode()
                if size + len(data) > self.max_bytes and (size or chunk):
                    done += self._flush(chunk)
                    chunk = []
                    if self.path.exists():
                        self._rotate()
                    size = 0
                chunk.append(data)
                size += len(data)
            done += self._flush(chunk)
        except OSError as exc:
            self.written += done
            self.dropped += len(lines) - done
            if failed != type(exc).__name__:
                log.error("audit_write_failed", path=str(self.path), error=str(exc))
            return type(exc).__name__
        self.written += done
        return None

    def _flush(self, chunk: list[bytes]) -> int:
        if chunk:
            with open(self.path, "ab") as handle:
                handle.write(b"".join(chunk))
        return len(chunk)

    def _rotate(self) -> None:
        if self.keep <= 0:
            os.truncate(self.path, 0)
            return
        for index in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        log.info("audit_log_rotated", path=str(self.path))


# ---------------------------------------------------------------- the book of last decisions


@dataclass(frozen=True, slots=True)
class Entry:
    outcome: Outcome
    at: float  # wall-clock time of the change (epoch seconds)
    changes: int  # decision changes of this service since the router started


class DecisionBook:
    """Each service's last decision and when it changed; writes the audit log when given a writer."""

    def __init__(self, writer: AuditWriter | None = None) -> None:
        self.writer = writer
        self._entries: dict[ServiceId, Entry] = {}

    def record(self, outcomes: Iterable[Outcome], now: float) -> None:
        for outcome in outcomes:
            service = outcome.decision.service
            previous = self._entries.get(service)
            if self.writer is not None:
                self.writer.write(audit_record(previous.outcome if previous else None, outcome, now))
            self._entries[service] = Entry(outcome, now, (previous.changes if previous else 0) + 1)

    def entries(self) -> Iterator[tuple[ServiceId, Entry]]:
        return iter(sorted(self._entries.items()))

    def get(self, service: ServiceId) -> Entry | None:
        return self._entries.get(service)


# ---------------------------------------------------------------- reading back


def audit_files(path: str | Path) -> list[Path]:
    """``PATH.N`` ... ``PATH.1``, ``PATH``: the rotated files that exist, oldest first."""
    base = Path(path)
    rotated = []
    for candidate in base.parent.glob(f"{base.name}.*"):
        suffix = candidate.name[len(base.name) + 1:]
        if suffix.isdigit():
            rotated.append((int(suffix), candidate))
    files = [candidate for _, candidate in sorted(rotated, reverse=True)]
    return [*files, base] if base.exists() else files


def read_records(paths: Iterable[Path]) -> Iterator[tuple[Path, int, dict[str, Any] | str]]:
    """Every line of ``paths``: (file, line number, record) or (file, line number, problem)."""
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as exc:
                    yield path, number, f"not JSON: {exc}"
                    continue
                if not isinstance(record, dict) or record.get("v") != VERSION or \
                        not isinstance(record.get("ts"), int | float) or not isinstance(record.get("service"), str):
                    yield path, number, "not an audit record"
                    continue
                yield path, number, record
