"""Replay the saved corpus of nasty inputs (tests/corpus/<target>/) against the documented outcomes.

Every file is one input for the target named by its folder (``targets.TARGETS``):
the target asserts the contract (an event or a typed error that says what and
where, invariants intact), and the outcome it returns must equal the one
recorded in that folder's ``EXPECTED.json``. A new file, or a changed outcome,
is written there with ``pytest tests/fuzz/test_corpus.py --update-golden``;
review the diff. Each input must finish within :data:`BUDGET` seconds (a hang
is a finding too).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).resolve().parent.parent / "corpus"
EXPECTED = "EXPECTED.json"
BUDGET = 10.0
CASES = sorted((target, path) for target in TARGETS for path in (CORPUS / target).glob("*")
               if path.is_file() and path.name != EXPECTED)


def _expected(target: str) -> dict[str, Any]:
    path = CORPUS / target / EXPECTED
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _normal(outcome: Any) -> Any:
    """The outcome as the JSON file holds it (tuples as lists, no NaN)."""
    return json.loads(json.dumps(outcome, allow_nan=False, ensure_ascii=False))


def test_every_target_has_a_corpus() -> None:
    for target in TARGETS:
        assert any(case[0] == target for case in CASES), f"tests/corpus/{target}/ is empty"


@pytest.mark.parametrize(("target", "path"), CASES, ids=[f"{target}/{path.name}" for target, path in CASES])
def test_corpus_input(target: str, path: Path, update_golden: bool) -> None:
    started = time.monotonic()
    outcome = _normal(TARGETS[target](path.read_bytes()))
    elapsed = time.monotonic() - started
    assert elapsed < BUDGET, f"{target}/{path.name} took {elapsed:.1f}s"
    expected = _expected(target)
    if update_golden:
        expected[path.name] = outcome
        text = json.dumps(dict(sorted(expected.items())), indent=1) + "\n"
        (CORPUS / target / EXPECTED).write_text(text, encoding="utf-8")
        return
    assert path.name in expected, f"no recorded outcome for {target}/{path.name}: run with --update-golden"
    assert outcome == expected[path.name]


def test_no_outcome_without_its_input(update_golden: bool) -> None:
    for target in TARGETS:
        names = {path.name for t, path in CASES if t == target}
        expected = _expected(target)
        stray = set(expected) - names
        if update_golden and stray:
            kept = {name: outcome for name, outcome in sorted(expected.items()) if name in names}
            (CORPUS / target / EXPECTED).write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
            continue
        assert not stray, f"tests/corpus/{target}/{EXPECTED} records inputs that are gone: {sorted(stray)}"
