"""Shared atheris (libFuzzer) entry for the fuzz/ harnesses: one target of tests/fuzz/targets.py.

Not part of the test suite and not a project dependency; see docs/security.md for
installing atheris and running the harnesses. A crash is any exception that escapes
the target (AssertionError included: the target asserts the documented contract);
libFuzzer then writes the input to ``crash-<sha1>``. Save it under
``tests/corpus/<target>/``, fix the bug, and record the outcome with
``pytest tests/fuzz/test_corpus.py --update-golden``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris  # type: ignore[import-untyped,unused-ignore]  # not a project dependency: see docs/security.md

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests package (the oracles) beside the project

with atheris.instrument_imports(include=["dyncast_bgp", "tests.fuzz"]):
    from tests.fuzz.targets import TARGETS


def main(target: str) -> None:
    run = TARGETS[target]

    def one_input(data: bytes) -> None:
        run(data)

    sys.setrecursionlimit(1000)  # what the router runs with (atheris leaves it alone; keep it explicit)
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
