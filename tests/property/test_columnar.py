"""The columnar decoder and screen against the one-path-at-a-time ones they stand in for (the oracles).

- ``decode_columns``: every row it reads carries exactly the metrics, flags and version the general
  decoder finds, with no problem and nothing carried verbatim; every row that is not read (a problem,
  something carried) is one the general decoder reports or carries something for, one no plan reads
  (as the one-path fast decoder leaves it to the general one), or one of more heads than the columns take.
- ``pass_as_announced`` (columns) agrees with ``passes_as_announced`` (one path) row by row.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.engine.trust import Rule, TrustPolicy, may_change, pass_as_announced, passes_as_announced
from dyncast_bgp.model import ComputeMetrics, MetricsView, StateFlag
from dyncast_bgp.wire.columnar import DISTINCT_LIMIT, NO_VERSION, decode_columns
from dyncast_bgp.wire.community import EXPERIMENTAL_TYPES, split_communities
from dyncast_bgp.wire.fastdecode import decode_raw, kinds_of
from dyncast_bgp.wire.metrics import encode_metrics
from tests.property.test_fastdecode import any_raw, metric_raw

agent_path = st.builds(
    lambda values, flags, version: tuple(c.pack() for c in encode_metrics(values, flags=flags, version=version)),
    st.dictionaries(st.sampled_from(["cpu_utilization", "capacity", "active_sessions", "service_delay",
                                     "memory_utilization", "overall_score"]),
                    st.integers(0, 10), max_size=5),
    st.sampled_from(list(StateFlag)), st.one_of(st.none(), st.integers(0, 1000)))
"""What an agent sends: the columns' common case."""
paths = st.lists(st.one_of(agent_path, agent_path, st.lists(any_raw, max_size=7).map(tuple),
                           st.lists(st.one_of(any_raw, st.binary(max_size=12)), max_size=3).map(tuple)),
                 max_size=24)


def check(paths: list[tuple[bytes, ...]], metric_types: range | frozenset[int] = EXPERIMENTAL_TYPES) -> None:
    """``paths`` as routes carry them (``Route.ext_raw``: each path's octets one after the other; a path of
    pieces not 8 octets each may still add up to a multiple of 8, and then is read as those octets)."""
    raws = [b"".join(path) for path in paths]
    columns = decode_columns(raws, metric_types=metric_types)
    assert len(columns.read) == len(raws)
    heads = {tuple(raw[:4] for raw in split_communities(blob)) for blob in raws if len(blob) % 8 == 0}
    for row, blob in enumerate(raws):
        try:
            expected = decode_raw(blob, metric_types=metric_types)
        except (TypeError, ValueError):
            assert not columns.read[row], f"row {row} read, but the general decoder raises"
            continue
        path = split_communities(blob)
        if not columns.read[row]:
            planned = kinds_of(tuple(int.from_bytes(raw[:4], "big") for raw in path), metric_types)
            assert expected.problems or expected.unknown or planned is None or len(heads) > DISTINCT_LIMIT, \
                f"row {row} not read though a plan reads it and the general decoder finds nothing to word: {path!r}"
            continue
        assert not expected.problems and not expected.unknown, f"row {row} read though it has a problem"
        values = {name: column[row] for name, column in columns.values.items() if not math.isnan(column[row])}
        assert values == dict(expected.metrics.values), row
        assert int(columns.flags[row]) == int(expected.metrics.flags), row
        version = int(columns.version[row])
        assert (None if version == NO_VERSION else version) == expected.metrics.version, row


@settings(max_examples=400)
@given(paths)
def test_read_rows_are_what_the_general_decoder_reads(raws: list[tuple[bytes, ...]]) -> None:
    check(raws)


@given(st.lists(metric_raw(), min_size=1, max_size=6), st.lists(st.lists(st.integers(0, 0xFFFFFFFF), min_size=6,
                                                                          max_size=6), min_size=1, max_size=20))
def test_one_set_of_heads_with_any_values(heads: list[bytes], values: list[list[int]]) -> None:
    """The common case of a full recompute: every path with the same heads, the values anything (NaN,
    infinity, out of range as float32 or uint32)."""
    check([tuple(raw[:4] + value.to_bytes(4, "big") for raw, value in zip(heads, row, strict=False))
           for row in values])


@given(paths, st.one_of(st.just(range(0x80, 0x84)), st.frozensets(st.integers(0, 0xFF))))
def test_other_metric_types(raws: list[tuple[bytes, ...]], metric_types: range | frozenset[int]) -> None:
    check(raws, metric_types)


def test_agent_paths_are_read() -> None:
    raws = [b"".join(c.pack() for c in encode_metrics({"cpu_utilization": 10.0 + row, "capacity": 100},
                                                     flags=StateFlag.NONE, version=3)) for row in range(50)]
    columns = decode_columns(raws)
    assert columns.read.all()
    assert columns.values["cpu_utilization"].tolist() == [10.0 + row for row in range(50)]


values = st.dictionaries(st.sampled_from(["cpu_utilization", "capacity", "active_sessions", "overall_score",
                                          "memory_utilization"]),
                         st.one_of(st.floats(0, 1e12), st.sampled_from([0.0, 100.0, 1e6, 4.2e9])), max_size=4)


@given(st.lists(st.tuples(values, st.sampled_from(["trusted", "ignored", "clamped"])),
                max_size=20))
def test_the_column_screen_is_the_path_screen(rows: list[tuple[dict[str, float], str]]) -> None:
    names = {name for metrics, _ in rows for name in metrics}
    columns = {name: np.array([metrics.get(name, np.nan) for metrics, _ in rows], np.float64) for name in names}
    rules = [_rule(mode) for _, mode in rows]
    passed = pass_as_announced(columns, len(rows), np.array([may_change(rule) for rule in rules], np.bool_))
    for row, ((metrics, _), rule) in enumerate(zip(rows, rules, strict=True)):
        expected = passes_as_announced(ComputeMetrics(MetricsView(metrics)), rule)
        assert bool(passed[row]) == expected, (metrics, rule.metrics)


def _rule(mode: str) -> Rule:
    return replace(TrustPolicy().default, metrics=mode, min_utilization=5.0, max_capacity=1e6)
