"""Fuzz the control protocol: whatever bytes arrive on a connection, every line gets a Request of a
known verb or a RequestError that says where (``request...``), and the answer is one JSON line.

Inputs are request objects with wrong types, extra and duplicate fields, huge
numbers, NaN, deep nesting, unicode and over-long strings, cut into arbitrary
chunks, plus raw bytes (invalid UTF-8, NUL, CR, lines over the 64 KiB limit).
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from dyncast_bgp.ctl.protocol import MAX_LINE, LineFramer, Overlong
from tests.fuzz import strategies as fz
from tests.fuzz.targets import CTL_VERBS, ctl

FIELDS = ["verb", "instance", "service", "force", "Verb", "", "verb\u0000"]
VALUES = [*CTL_VERBS, "web/a", "a", "", "x" * 257, "x" * 256, "\ud800", "é" * 256]

request_objects = st.dictionaries(st.sampled_from(FIELDS), st.sampled_from(VALUES) | fz.json_values, max_size=4)


def _line(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", errors="surrogatepass")


@settings(max_examples=200, deadline=None)
@given(st.lists(request_objects.map(_line) | st.binary(max_size=40), min_size=1, max_size=6),
       st.sampled_from([b"\n", b"\r\n", b"\n\n", b"\r"]))
def test_request_streams(lines: list[bytes], separator: bytes) -> None:
    ctl(separator.join(lines))


@settings(max_examples=200, deadline=None)
@given(request_objects.map(_line), st.integers(0, 200), st.sampled_from(
    [b"", b"\x00", b"\xff", b"\xc3", b'"', b"}", b"{", b'"verb":"drain",', b"NaN", b"1e999", b"9" * 5000]))
def test_damaged_request_lines(line: bytes, at: int, insert: bytes) -> None:
    position = at % (len(line) + 1)
    ctl(line[:position] + insert + line[position:])
    ctl(line[:position])


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 200_000), st.sampled_from(["[", '{"a":']))
def test_deep_nesting(depth: int, opener: str) -> None:
    closer = "]" if opener == "[" else "}"
    ctl(((opener * depth) + ("1" if opener != "[" else "") + closer * depth).encode())


@settings(max_examples=50, deadline=None)
@given(st.integers(MAX_LINE - 2, MAX_LINE + 2), st.lists(st.integers(1, 70_000), min_size=1, max_size=4))
def test_long_lines_any_chunking(length: int, chunks: list[int]) -> None:
    """A line over the limit is one Overlong however the bytes are chunked; the next line is read normally."""
    stream = b'{"verb":"status","x":"' + b"a" * length + b'"}\n{"verb":"status"}\n'
    framer, start = LineFramer(), 0
    items: list[bytes | Overlong] = []
    while start < len(stream):
        size = chunks[len(items) % len(chunks)]
        items += framer.feed(stream[start:start + size])
        start += size
    items += framer.finish()
    assert len(items) == 2 and items[1] == b'{"verb":"status"}'
    assert isinstance(items[0], Overlong) == (len(stream.split(b"\n")[0]) > MAX_LINE)
    ctl(stream)
