"""Fuzz the router's intake: ExaBGP JSON lines -> parse_line -> RouterEngine (RIB, decisions).

Whatever arrives, parse_line gives a well-typed event or ExabgpJsonError, and
after every line the RIB and the decisions keep their invariants (see
``targets.RouterHarness``). Feeds mix valid lines over a few peers and prefixes
(so state accumulates) with damaged ones.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import strategies as fz
from tests.fuzz.targets import RouterHarness, exabgp_json, replay_lines

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(fz.mutated_trees())
def test_mutated_captured_lines(tree: object) -> None:
    exabgp_json(fz.dumps(tree).encode("utf-8", errors="surrogatepass"))


@SETTINGS
@given(st.sampled_from(fz.CAPTURED).flatmap(fz.text_damage))
def test_damaged_captured_text(line: str) -> None:
    RouterHarness().feed(line)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(fz.feed_lines(), min_size=1, max_size=40), st.sampled_from([0.0, 30.0]),
       st.lists(st.sampled_from([0.0, 0.5, 1.0, 45.0, 400.0]), min_size=40, max_size=40))
def test_feeds_keep_the_rib_and_decisions_consistent(lines: list[str], stale_time: float,
                                                    gaps: list[float]) -> None:
    harness = RouterHarness(stale_time=stale_time)
    for line, gap in zip(lines, gaps, strict=False):
        harness.feed(line, advance=gap)
    harness.finish()


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(["list", "dict"]), st.integers(10, 100_000), st.sampled_from(
    ['{"exabgp": "5.0.0", "type": "update", "neighbor": %s}', '%s', '{"answer": %s}',
     '{"exabgp": "5.0.0", "type": "state", "neighbor": {"address": {"peer": "10.0.0.1"}, "state": %s}}']))
def test_deep_nesting(kind: str, depth: int, frame: str) -> None:
    inner = ("[" * depth + "]" * depth) if kind == "list" else ('{"a":' * depth + "1" + "}" * depth)
    RouterHarness().feed(frame % inner)


@settings(max_examples=25, deadline=None)
@given(st.lists(fz.feed_lines(), max_size=15), st.sampled_from(
    [None, 1e308, float("inf"), float("nan"), -1.0, 10 ** 400, "1.5", True]))
def test_replay_with_odd_times(lines: list[str], time: object) -> None:
    """`dyncast router --replay` reads each line's ``time``: any value, any JSON, never a crash."""
    stamped = []
    for line in lines:
        try:
            tree = json.loads(line)
        except ValueError:
            stamped.append(line)
            continue
        if isinstance(tree, dict):
            tree["time"] = time
        stamped.append(json.dumps(tree))
    replay_lines("\n".join(stamped).encode("utf-8", errors="surrogatepass"))
