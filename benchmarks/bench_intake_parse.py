#!/usr/bin/env python3
"""How fast the router's intake reads ExaBGP JSON: parse_line against bare json.loads.

The captured golden lines (tests/golden/exabgp_json/*.jsonl, real ExaBGP 5.0 and
4.2 output) are replicated to about ``--lines`` lines and timed in this process,
each measurement the best of ``--rounds`` (json.loads and parse_line alternate):

- ``json.loads`` alone, then ``parse_line``, over every line and over the UPDATE
  lines only (announce/withdraw, the bulk of a real feed);
- the same UPDATE lines with every IPv4 prefix rewritten to be distinct per line,
  so that the parser's memo of parsed prefixes never hits (the worst case: a
  table of many distinct prefixes seen once each).

    .venv/bin/python benchmarks/bench_intake_parse.py [--lines 200000] [--rounds 5] [--json out.json]

The RIB part of the intake comes later; this measures the parser only.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dyncast_bgp.wire.exabgp_json import ExabgpJsonError, parse_line

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "golden" / "exabgp_json"


def load(directory: Path) -> list[str]:
    lines = [line for path in sorted(directory.glob("*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"no captured lines in {directory}")
    return lines


def replicate(lines: Sequence[str], total: int) -> list[str]:
    copies = max(1, total // len(lines))
    return list(lines) * copies


def distinct_prefixes(lines: Sequence[str]) -> list[str]:
    """Line i gets its IPv4 service prefixes moved from 203.0.113.0/24 to a /24 of its own."""
    out = []
    for index, line in enumerate(lines):
        base = ipaddress.IPv4Address(0x0A000000 + (index << 8))
        out.append(line.replace("203.0.113.", str(base).rsplit(".", 1)[0] + "."))
    return out


def json_loads_all(lines: Sequence[str]) -> None:
    loads = json.loads
    for line in lines:
        try:  # noqa: SIM105 - contextlib.suppress would slow the baseline down
            loads(line)
        except ValueError:  # the 4.2 route-refresh line is not valid JSON
            pass


def parse_all(lines: Sequence[str]) -> None:
    for line in lines:
        parse_line(line)


def timed(func: Callable[[Sequence[str]], None], lines: Sequence[str]) -> float:
    started = time.perf_counter()
    func(lines)
    return time.perf_counter() - started


def measure(name: str, lines: Sequence[str], rounds: int) -> dict[str, float | str | int]:
    """Best of ``rounds`` for each, the two alternating so that both see the same machine load."""
    loads_s = parse_s = float("inf")
    for _ in range(rounds):
        loads_s = min(loads_s, timed(json_loads_all, lines))
        parse_s = min(parse_s, timed(parse_all, lines))
    result: dict[str, float | str | int] = {
        "set": name, "lines": len(lines),
        "json_loads_lines_per_s": len(lines) / loads_s, "parse_line_lines_per_s": len(lines) / parse_s,
        "parse_line_us_per_line": parse_s / len(lines) * 1e6, "ratio": parse_s / loads_s,
    }
    print(f"{name:<34} {len(lines):>8,} lines  json.loads {result['json_loads_lines_per_s']:>10,.0f}/s  "
          f"parse_line {result['parse_line_lines_per_s']:>10,.0f}/s ({result['parse_line_us_per_line']:.1f} us)  "
          f"ratio {result['ratio']:.2f}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--golden", type=Path, default=GOLDEN)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    captured = load(args.golden)
    for line in captured:  # every captured line must parse, or the timing means nothing
        try:
            parse_line(line)
        except ExabgpJsonError as exc:
            raise SystemExit(f"captured line does not parse: {exc}") from None
    updates = [line for line in captured if '"announce"' in line or '"withdraw"' in line]
    print(f"python {platform.python_version()} on {platform.machine()}; {len(captured)} captured lines, "
          f"{len(updates)} of them UPDATEs; best of {args.rounds} rounds")
    results = [
        measure("all captured lines", replicate(captured, args.lines), args.rounds),
        measure("UPDATE lines, recurring prefixes", replicate(updates, args.lines), args.rounds),
        measure("UPDATE lines, distinct prefixes", distinct_prefixes(replicate(updates, args.lines)), args.rounds),
    ]
    if args.json:
        args.json.write_text(json.dumps({"python": platform.python_version(), "results": results}, indent=2) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
