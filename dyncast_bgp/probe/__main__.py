"""``python -m dyncast_bgp.probe {probe,echo} ...``: the probe tools without the `dyncast` entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dyncast_bgp.probe.commands import register


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dyncast_bgp.probe")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
