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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dyncast_bgp.engine.decide import Outcome

VERSION = 1


def status_document(outcomes: Iterable[Outcome], *, now: float, counters: Mapping[str, float | int],
                    synced: bool) -> dict[str, Any]:
    """Per service: status, fallback in force, weights and every instance's explanation."""
    services: dict[str, Any] = {}
    for outcome in outcomes:
        decision = outcome.decision
        services[str(decision.service)] = {
            "status": outcome.status,
            "fallback": outcome.fallback,
            "weights": {str(key.binding): round(weight, 6) for key, weight in sorted(decision.weights.items())},
            "instances": [item.to_dict() for item in outcome.explain],
        }
    return {"version": VERSION, "time": round(now, 3), "pid": os.getpid(), "synced": synced,
            "counters": dict(counters), "services": services}


def write_status(path: Path, document: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``document`` in one rename (readers never see half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(document, separators=(",", ":")) + "\n", encoding="utf-8")
    temporary.replace(path)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last document written to ``path``; None when there is none (yet) or it is not a status document."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == VERSION else None
