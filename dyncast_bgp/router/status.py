"""The router's status document: what it believes and decided, per service, as JSON.

Written atomically (a temporary file renamed over the old one) to
``router.status_file`` every ``router.status_interval`` seconds while that is
set, so a terminal view, a lab or a monitoring script can read a consistent
picture without talking to the process. The document is built by a pure
function from the engine's outcomes; only :func:`write_status` does I/O.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.model import ServiceId

VERSION = 1


def status_document(outcomes: Iterable[Outcome], *, now: float, counters: Mapping[str, float | int],
                    synced: bool) -> dict[str, Any]:
    """Per service: status, fallback in force, weights and every instance's explanation."""
    return assemble([service_entry(outcome) for outcome in outcomes], now=now, counters=counters, synced=synced)


def service_entry(outcome: Outcome) -> tuple[str, dict[str, Any]]:
    """One service's part of the document (what costs: the explanation of every instance)."""
    decision = outcome.decision
    return str(decision.service), {
        "status": outcome.status,
        "fallback": outcome.fallback,
        "weights": {str(key.binding): round(weight, 6) for key, weight in sorted(decision.weights.items())},
        "instances": [item.to_dict() for item in outcome.explain],
    }


def assemble(entries: Iterable[tuple[str, dict[str, Any]]], *, now: float, counters: Mapping[str, float | int],
             synced: bool) -> dict[str, Any]:
    """The document around the services' parts (:func:`service_entry`, made a slice at a time by the router)."""
    return {"version": VERSION, "time": round(now, 3), "pid": os.getpid(), "synced": synced,
            "counters": dict(counters), "services": dict(entries)}


def service_part(outcome: Outcome) -> bytes:
    """:func:`service_entry` as the document's file holds it (``"SERVICE":{...}``), in UTF-8: the form it is written
    in, so that a part kept for the next documents (:class:`StatusParts`) is not encoded again at every write
    (``json.dumps`` escapes every non-ASCII character, so the text is ASCII)."""
    name, entry = service_entry(outcome)
    return f"{json.dumps(name)}:{json.dumps(entry, separators=(',', ':'))}".encode()


class StatusParts:
    """:func:`service_part` of each outcome, made again only for the services whose outcome is a new object.

    A service's part is a function of its :class:`Outcome` alone (the explanation's metrics age is the one its
    decision saw), and the engine keeps an outcome until it decides that service again. So between recomputes
    the status writer renders nothing again: at 1,000 services of 16 instances a document costs about 2 s of
    CPU made anew (the explanations), and a lookup per service made from these. Each round of reads
    (:meth:`part` for every current outcome, then :meth:`done`) keeps the parts of that round only, so a
    replaced outcome is held one round at most.
    """

    __slots__ = ("_kept", "_next", "made")

    def __init__(self) -> None:
        self._kept: dict[ServiceId, tuple[Outcome, bytes]] = {}
        self._next: dict[ServiceId, tuple[Outcome, bytes]] = {}
        self.made = 0  # parts rendered (not found) so far

    def part(self, outcome: Outcome) -> bytes:
        service = outcome.decision.service
        kept = self._kept.get(service)
        if kept is not None and kept[0] is outcome:
            text = kept[1]
        else:
            text = service_part(outcome)
            self.made += 1
        self._next[service] = (outcome, text)
        return text

    def done(self) -> None:
        """The round is over: keep its parts, forget the others (services gone, outcomes replaced)."""
        self._kept, self._next = self._next, {}


def status_frame(*, now: float, counters: Mapping[str, float | int], synced: bool) -> tuple[bytes, bytes]:
    """The document's JSON before and after its services' parts (:func:`service_part`, joined by commas), in UTF-8."""
    head = json.dumps(assemble((), now=now, counters=counters, synced=synced), separators=(",", ":"))
    assert head.endswith(',"services":{}}')
    return head[:-2].encode(), b"}}\n"


def status_text(parts: Iterable[bytes], *, now: float, counters: Mapping[str, float | int], synced: bool) -> str:
    """The document's JSON text from its services' parts (:func:`service_part`): what :func:`write_status` writes
    for :func:`status_document`, the services rendered one by one (the router renders them a slice at a time;
    rendering the whole document in one call held the loop as long as building it)."""
    head, tail = status_frame(now=now, counters=counters, synced=synced)
    return (head + b",".join(parts) + tail).decode()


def write_status(path: Path, document: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``document`` in one rename (readers never see half a file)."""
    write_text(path, json.dumps(document, separators=(",", ":")) + "\n")


def write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename (readers never see half a file)."""
    write_parts(path, text.encode(), (), b"")


WRITE_BUFFER = 1 << 20
"""Bytes gathered before each write to the file (the default, 8 KiB, took twice the CPU for a 120 MB document)."""


def write_parts(path: Path, head: bytes, parts: Sequence[bytes], tail: bytes) -> None:
    """Replace ``path`` with ``head``, ``parts`` joined by commas and ``tail``, in one rename, written part by part:
    the whole document is never one string. At 10,000 services it is about 120 MB, and joining it took about
    0.3 s (mostly the memory's page faults, twice: the join and the concatenation), in one piece; the router
    calls this in a worker thread, so its loop only renders the parts (:class:`StatusParts`). The parts are
    bytes already: writing kept parts encodes nothing (as text, the encoding cost about as much as the write)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb", buffering=WRITE_BUFFER) as handle:
            handle.write(head)
            for index, part in enumerate(parts):
                if index:
                    handle.write(b",")
                handle.write(part)
            handle.write(tail)
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk, say: no half-written file left behind
        raise


def read_status(path: Path) -> dict[str, Any] | None:
    """The last document written to ``path``; None when there is none (yet) or it is not a status document."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None
