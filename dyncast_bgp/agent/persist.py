"""The registrations' state file: written atomically (temp file, fsync, rename, fsync of the directory).

A reader sees the old file or the new one, never half of one, whatever the
moment the agent or the host dies. The document is JSON:
``{"format": 1, "registrations": [{...}, ...]}`` with each registration as the
API took it (the request body, normalised). Formats 1 to :data:`FORMAT` are
read; fields of an entry this version does not know (a newer version wrote them)
are dropped with a warning (``agent.api.validate_saved``), so a downgrade keeps
every registration. A file that cannot be read or
parsed is moved aside to ``<path>.bad`` (so the next write does not destroy
what an operator may want to look at) and the agent starts without it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dyncast_bgp.fileio import write_atomically

FORMAT = 1


class StateFileError(Exception):
    """The state file exists but is not a registrations document (it was moved aside)."""


def save(path: str | Path, registrations: Sequence[dict[str, Any]]) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({"format": FORMAT, "registrations": list(registrations)}, indent=1, sort_keys=True) + "\n"
    write_atomically(target, data)


def load(path: str | Path) -> list[dict[str, Any]]:
    """The registrations in the file ([] when there is none); StateFileError when it is unreadable."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise StateFileError(f"{target}: cannot read: {exc}") from None
    try:
        document = json.loads(text)
        if not isinstance(document, dict) or not isinstance(document.get("format"), int) \
                or not 1 <= document["format"] <= FORMAT:
            raise ValueError(f"not a registrations document of a format this version reads (1-{FORMAT})")
        registrations = document.get("registrations")
        if not isinstance(registrations, list) or not all(isinstance(r, dict) for r in registrations):
            raise ValueError("`registrations` must be a list of objects")
    except ValueError as exc:
        aside = target.with_name(target.name + ".bad")
        with contextlib.suppress(OSError):
            os.replace(target, aside)
        raise StateFileError(f"{target}: {exc}; moved aside to {aside}") from None
    return registrations
