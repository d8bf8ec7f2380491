"""An ExaBGP API process that appends every line ExaBGP writes to it to a file.

Usage (in an ExaBGP ``process`` block)::

    run /path/to/python -m dyncast_bgp.lab.exabgp_sink /path/to/events.jsonl;

Each line is flushed as soon as it is read, so a reader polling the file sees
whole lines. It keeps reading until ExaBGP closes its stdin, and never writes
to stdout (it sends no commands).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m dyncast_bgp.lab.exabgp_sink FILE", file=sys.stderr)
        return 2
    with open(args[0], "ab", buffering=0) as out:
        for line in sys.stdin.buffer:
            out.write(line if line.endswith(b"\n") else line + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
