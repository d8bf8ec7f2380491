"""Read a load generator's events file while it is being written (complete lines only)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from dyncast_bgp.lab.loadgen import RequestEvent


class EventTail:
    """New :class:`RequestEvent` lines of ``path`` since the last :meth:`read`.

    A half-written last line waits for its end; a line that is not an event
    (the summary, or something malformed) is counted in ``skipped`` with the
    last problem kept in ``problem``, never silently lost.
    """

    def __init__(self, path: Path, client: str) -> None:
        self.path = path
        self.client = client
        self.skipped = 0
        self.problem: str | None = None
        self.summary: dict[str, object] | None = None
        self._offset = 0
        self._line_number = 0

    def read(self) -> list[RequestEvent]:
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._offset)
                data = stream.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self._offset += end + 1
        events = []
        for raw in data[:end].splitlines():
            self._line_number += 1
            try:
                record = json.loads(raw)
                if isinstance(record, dict) and "summary" in record:
                    self.summary = record["summary"]
                    continue
                event = RequestEvent.from_dict(record)
            except (ValueError, TypeError, KeyError) as exc:
                self.skipped += 1
                self.problem = f"{self.path}:{self._line_number}: {exc}"
                continue
            events.append(event if event.client else replace(event, client=self.client))
        return events
