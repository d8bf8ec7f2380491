"""Timestamp every nftables transaction that changes the dataplane's weights (benchmarks, labs).

Run inside a namespace::

    python -m dyncast_bgp.lab.nftwatch [--family inet] [--table dyncast]

It seeds its view from ``nft -a list table``, then follows ``nft -a monitor``
(event driven: the kernel sends the notification at commit, so there is no
polling interval). ``nft`` ends each transaction with ``# new generation N``;
at that line one JSON line is printed per transaction that touched a chain of
the table::

    {"t": 1700000000.123456, "t_end": ..., "generation": 42,
     "chains": {"dc_s_203_0_113_10_32": {"0x00f00002": 4000, "0x00f00003": 6000}}}

``t`` is ``time.time()`` (CLOCK_REALTIME, the same in every namespace) when
the transaction's first line was read, ``t_end`` when its generation line
was; ``chains`` holds, per touched chain, the buckets of every ``dc pick``
rule (mark -> bucket count) after the transaction. The parser
(:class:`MonitorParser`) is pure and reads the text forms of ``nft -a monitor``
and ``nft -a list table``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

_ADD_RULE = re.compile(r"^add rule (\S+) (\S+) (\S+) .*# handle (\d+)$")
_DELETE_RULE = re.compile(r"^delete rule (\S+) (\S+) (\S+) handle (\d+)$")
_DELETE_CHAIN = re.compile(r"^delete chain (\S+) (\S+) (\S+)")
_FLUSH_CHAIN = re.compile(r"^flush chain (\S+) (\S+) (\S+)")
_GENERATION = re.compile(r"^# new generation (\d+)")
_PICK = re.compile(r'comment "dc pick (0x[0-9a-f]+) (\d+)-(\d+)"')
_LIST_CHAIN = re.compile(r"^\s*chain (\S+) \{")
_LIST_RULE = re.compile(r"^\s+.*# handle (\d+)$")

Picks = dict[str, int]  # mark (as written in the comment) -> buckets


def picks_of(rule_text: str) -> tuple[str, int] | None:
    """The ``(mark, buckets)`` of a ``dc pick`` rule, else None."""
    match = _PICK.search(rule_text)
    if match is None:
        return None
    return match.group(1), int(match.group(3)) - int(match.group(2)) + 1


@dataclass(frozen=True, slots=True)
class Commit:
    """One nftables transaction that touched chains of the watched table."""

    t: float
    t_end: float
    generation: int
    chains: dict[str, Picks]

    def to_json(self) -> str:
        return json.dumps({"t": self.t, "t_end": self.t_end, "generation": self.generation,
                           "chains": self.chains}, sort_keys=True)


@dataclass
class MonitorParser:
    """Follows one table through ``nft -a monitor`` lines; :meth:`feed` returns a :class:`Commit` per
    transaction that touched it."""

    family: str = "inet"
    table: str = "dyncast"
    rules: dict[str, dict[int, tuple[str, int] | None]] = field(default_factory=dict)  # chain -> handle -> pick
    _touched: set[str] = field(default_factory=set)
    _first: float | None = None

    def seed(self, listing: Iterable[str]) -> None:
        """Start from ``nft -a list table FAMILY TABLE`` text."""
        chain: str | None = None
        for line in listing:
            if (match := _LIST_CHAIN.match(line)) is not None:
                chain = match.group(1)
                self.rules.setdefault(chain, {})
            elif chain is not None and (match := _LIST_RULE.match(line)) is not None:
                self.rules[chain][int(match.group(1))] = picks_of(line)

    def picks(self, chain: str) -> Picks:
        return {mark: buckets for pick in self.rules.get(chain, {}).values() if pick is not None
                for mark, buckets in (pick,)}

    def feed(self, line: str, now: float) -> Commit | None:
        line = line.rstrip("\n")
        if (match := _GENERATION.match(line)) is not None:
            first, touched = self._first, self._touched
            self._first, self._touched = None, set()
            if not touched or first is None:
                return None
            return Commit(first, now, int(match.group(1)), {chain: self.picks(chain) for chain in sorted(touched)})
        if self._first is None:
            self._first = now
        if (match := _ADD_RULE.match(line)) is not None and self._ours(match):
            self.rules.setdefault(match.group(3), {})[int(match.group(4))] = picks_of(line)
            self._touched.add(match.group(3))
        elif (match := _DELETE_RULE.match(line)) is not None and self._ours(match):
            self.rules.get(match.group(3), {}).pop(int(match.group(4)), None)
            self._touched.add(match.group(3))
        elif (match := _FLUSH_CHAIN.match(line) or _DELETE_CHAIN.match(line)) is not None and self._ours(match):
            self.rules[match.group(3)] = {}
            self._touched.add(match.group(3))
        return None

    def _ours(self, match: re.Match[str]) -> bool:
        return match.group(1) == self.family and match.group(2) == self.table


def watch(family: str, table: str) -> int:
    """Follow ``family table`` in this namespace until killed, one JSON line per commit on stdout."""
    parser = MonitorParser(family, table)
    with subprocess.Popen(["nft", "-a", "monitor"], stdout=subprocess.PIPE, text=True, bufsize=1) as monitor:
        assert monitor.stdout is not None
        listing = subprocess.run(["nft", "-a", "list", "table", family, table], capture_output=True, text=True,
                                 check=False)
        parser.seed(listing.stdout.splitlines())
        print(json.dumps({"seeded": {chain: parser.picks(chain) for chain in sorted(parser.rules)},
                          "t": time.time()}), flush=True)
        for line in monitor.stdout:
            commit = parser.feed(line, time.time())
            if commit is not None:
                print(commit.to_json(), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = argparse.ArgumentParser(prog="python -m dyncast_bgp.lab.nftwatch", description=__doc__.split("\n")[0])
    args.add_argument("--family", default="inet")
    args.add_argument("--table", default="dyncast")
    options = args.parse_args(argv)
    try:
        return watch(options.family, options.table)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
