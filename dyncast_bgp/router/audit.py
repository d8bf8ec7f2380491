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

import collections
import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from dyncast_bgp.deferred import Deferred
from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.views import KeyedValues
from dyncast_bgp.model import InstanceKey, ServiceId

log = structlog.get_logger(__name__)

VERSION = 1
QUEUE_LIMIT = 10_000
"""Audit records at most waiting to be built (DecisionBook), and lines at most waiting to be written (AuditWriter)."""
AUDIT_SLICE = 0.05
"""Seconds of audit records the router builds per turn of its loop (about as long as a slice of a recompute)."""
INPUTS = ("state", "flags", "metrics", "path")


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _weights(outcome: Outcome | None) -> dict[str, float]:
    if outcome is None:
        return {}
    return {str(key.binding): round(weight, 6) for key, weight in sorted(outcome.decision.weights.items())}


def _instances(outcome: Outcome) -> dict[str, dict[str, Any]]:
    return {item["instance"]: item for item in (entry.outline() for entry in outcome.explain)}


def _inputs(outcome: Outcome | None) -> dict[str, dict[str, Any]]:
    """The inputs of each instance of the previous decision (its weights, reasons and exclusions are not read)."""
    if outcome is None:
        return {}
    return {str(entry.key.binding): entry.inputs() for entry in outcome.explain}


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


def audit_record(old: Outcome | None, new: Outcome, now: float, *, skipped: int = 0) -> dict[str, Any]:
    """One audit line: what changed for ``new.decision.service`` since ``old``, and why (pure). ``skipped``: the
    service's changes not written since its last record (``router.audit_min_change``: not material, or dropped
    with the queue full), as ``"skipped"``."""
    before, after = _inputs(old), _instances(new)
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
    record = {
        "v": VERSION, "time": iso(now), "ts": round(now, 3), "service": str(new.decision.service),
        "status": new.status, "fallback": new.fallback,
        "old": old_weights, "new": _weights(new),
        "instances": instances,
        "removed": sorted(set(before) - set(after)),
    }
    if skipped:
        record["skipped"] = skipped
    return record


class Written(NamedTuple):
    """What the materiality test compares of the last decision written for a service: the decision's own
    weights and exclusions (the outcome would hold its explanation, made to write the record)."""

    weights: Mapping[InstanceKey, float]
    excluded: Mapping[InstanceKey, str]
    fallback: str | None


def written(outcome: Outcome) -> Written:
    decision = outcome.decision
    return Written(decision.weights, decision.excluded, outcome.fallback)


def material(last: Written, outcome: Outcome, min_change: float) -> bool:
    """Whether ``outcome`` differs from the last decision written enough to be written (``router.audit_min_change``):
    another set of weighted or of excluded instances, another fallback, or a weight that moved by at least
    ``min_change`` since. A reason text alone (an excluded instance's utilisation, say) is not material.

    The usual case, the same instances in the same order, compares key sequences (in C); only then are the
    weights' differences taken. An InstanceKey hashes in Python, so keys are hashed only when the layouts
    differ or there are exclusions."""
    decision = outcome.decision
    weights, before = decision.weights, last.weights
    if outcome.fallback != last.fallback or len(weights) != len(before) \
            or len(decision.excluded) != len(last.excluded):
        return True
    if decision.excluded and decision.excluded.keys() != last.excluded.keys():
        return True
    keys = list(weights)
    old = before.aligned(keys) if type(before) is KeyedValues else None
    if old is None:
        if set(keys) != set(before):
            return True
        old = [before[key] for key in keys]
    return any(abs(new - was) >= min_change for new, was in zip(weights.values(), old, strict=True))


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


class Entry(NamedTuple):
    """A service's last decision (a NamedTuple: made for every changed decision, 10,000 in a full recompute)."""

    outcome: Outcome
    at: float  # wall-clock time of the change (epoch seconds)
    changes: int  # decision changes of this service since the router started


class DecisionBook:
    """Each service's last decision and when it changed; writes the audit log when given a writer.

    :meth:`record` keeps the decisions (cheap) and queues their audit records; :meth:`write_pending` builds the
    queued records for at most a given time. Building one means reading both decisions' explanations, which
    for a decision of the batch path is a per-service decision more (``engine/batch.py``): about a millisecond,
    so the 10,000 records of a full recompute would hold the event loop for seconds. The router builds them a
    slice of :data:`AUDIT_SLICE` seconds per turn of its loop instead, between its other tasks, as it decides a
    large recompute (decision 0013). At most :data:`QUEUE_LIMIT` records wait; more are dropped and counted
    in the writer's ``dropped``.

    With ``min_change`` (``router.audit_min_change``) above 0, a change is written only when it is
    :func:`material` against the last decision queued for writing for its service; the others are counted in
    :attr:`skipped`, and the next record of that service says how many of its changes were not written since
    its previous one (skipped, or dropped here with the queue full). A line the writer drops afterwards (its
    own queue full, a failed write) is not taken back as the baseline. Every change is still kept here
    (``dyncast ctl show decisions``).
    """

    def __init__(self, writer: AuditWriter | None = None, *, min_change: float = 0.0,
                 deferred: Deferred | None = None) -> None:
        """``deferred``: where each replaced entry is held for a later release (:mod:`dyncast_bgp.deferred`);
        None frees it where it is replaced."""
        self.writer = writer
        self._deferred = deferred
        self.min_change = min_change  # router.audit_min_change: 0 writes every change
        self.skipped = 0  # changes not written, not material (see material)
        self._entries: dict[ServiceId, Entry] = {}
        self._backlog: collections.deque[tuple[Outcome | None, Outcome, float, int]] = collections.deque()
        self._written: dict[ServiceId, Written] = {}  # with min_change: the last decision written, per service
        self._unwritten: dict[ServiceId, int] = {}  # with min_change: changes skipped since, per service

    def record(self, outcomes: Iterable[Outcome], now: float) -> None:
        writer, backlog, min_change = self.writer, self._backlog, self.min_change
        hold = self._deferred.hold if self._deferred is not None else None
        for outcome in outcomes:
            service = outcome.decision.service
            previous = self._entries.get(service)
            self._entries[service] = Entry(outcome, now, (previous.changes if previous else 0) + 1)
            if previous is not None and hold is not None:
                hold(previous)  # the last reference to the outcome it replaces: freed after the recompute
            if writer is None:
                continue
            if min_change > 0.0:
                last = self._written.get(service)
                if last is not None and not material(last, outcome, min_change):
                    self.skipped += 1
                    self._not_written(service)
                    continue
            if len(backlog) >= QUEUE_LIMIT:
                writer.dropped += 1
                if min_change > 0.0:  # not the new baseline: the log never has it
                    self._not_written(service)
                continue
            skipped = 0
            if min_change > 0.0:
                self._written[service] = written(outcome)
                skipped = self._unwritten.pop(service, 0)
            backlog.append((previous.outcome if previous else None, outcome, now, skipped))

    def _not_written(self, service: ServiceId) -> None:
        """One more change of ``service`` that its next record counts as ``skipped``."""
        self._unwritten[service] = self._unwritten.get(service, 0) + 1

    @property
    def backlog(self) -> int:
        """Audit records waiting to be built (see :meth:`write_pending`)."""
        return len(self._backlog)

    def forget_pending(self) -> int:
        """Drop the queued records (the router is stopping); return how many."""
        count = len(self._backlog)
        self._backlog.clear()
        return count

    def write_pending(self, seconds: float, clock: Callable[[], float] = time.perf_counter) -> int:
        """Build queued audit records, oldest first, and hand them to the writer, until ``seconds`` have passed
        (at least one record is built when any waits); return how many."""
        backlog, writer = self._backlog, self.writer
        if writer is None:
            backlog.clear()
            return 0
        done = 0
        until = clock() + seconds
        while backlog:
            old, new, at, skipped = backlog.popleft()
            writer.write(audit_record(old, new, at, skipped=skipped))
            done += 1
            if clock() >= until:
                break
        return done

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
