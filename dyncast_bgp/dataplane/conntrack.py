"""conntrack-tools commands and their output: flows per mark, deletion by mark (pure).

Counting lists only our mark range (``--mark base/0xffff0000``, filtered in
the kernel) once per family; deleting names one exact mark, so no command
here can flush the conntrack table or touch another mark.
"""

from __future__ import annotations

import re
from collections import Counter

from dyncast_bgp.dataplane.layout import MARK_MASK, Layout

FAMILIES = {4: "ipv4", 6: "ipv6"}
_MARK = re.compile(r"\bmark=(\d+)\b")
_ENDED = frozenset({"TIME_WAIT", "CLOSE"})
_DELETED = re.compile(r"(\d+) flow entries have been deleted")


def list_argv(family: int, layout: Layout) -> list[str]:
    return ["conntrack", "-L", "-f", FAMILIES[family], "--mark", f"{layout.mark_base:#x}/{MARK_MASK:#x}"]


def delete_argv(family: int, mark: int) -> list[str]:
    return ["conntrack", "-D", "-f", FAMILIES[family], "--mark", f"{mark:#x}"]


def count_marks(listing: str) -> Counter[int]:
    """Live entries per mark in ``conntrack -L`` output.

    TCP entries in TIME_WAIT or CLOSE belong to connections that have ended
    (conntrack keeps them for up to two minutes) and are not counted, so a
    drained instance reaches 0 when its last connection closes.
    """
    counts: Counter[int] = Counter()
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) > 3 and fields[0] == "tcp" and fields[3] in _ENDED:
            continue
        match = _MARK.search(line)
        if match is not None:
            counts[int(match.group(1))] += 1
    return counts


def deleted(returncode: int, stderr: str) -> int | None:
    """How many entries ``conntrack -D`` deleted, or None when it failed (it exits 1 when there were none)."""
    match = _DELETED.search(stderr)
    if match is None:
        return None
    count = int(match.group(1))
    return count if returncode == 0 or count == 0 else None
