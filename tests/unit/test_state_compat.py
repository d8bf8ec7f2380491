"""State written by one version of dyncast is read by the next and the previous (issue 6 item 6).

The rule (docs/decisions/0005-state-compatibility.md): every state a process leaves for its successor
carries a format number; within one format a newer version only ADDS fields, and a reader ignores the
fields it does not know (naming them in the log where they could matter); a reader takes every format up to
its own. So:

- next reads previous: the golden files under tests/corpus/state/ were written by 0.1.0 and must stay
  readable by every later version (never edit them; add a file per new format);
- previous reads next: the same documents with fields added at every level (what a newer version may
  write) are read by this version with the same result;
- this version still writes the golden shape (a change here means a new format number and a new golden file).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.agent import persist
from dyncast_bgp.agent.api import Registrations, validate_saved
from dyncast_bgp.agent.state import AgentState
from dyncast_bgp.config.loader import parse
from dyncast_bgp.dataplane.readback import ReadbackError, parse_meta
from dyncast_bgp.ops import rollout as machine
from dyncast_bgp.ops.rolloutbook import RolloutBook, read_document
from dyncast_bgp.ops.rolloutplan import plan_from_document

STATE = Path(__file__).resolve().parents[1] / "corpus" / "state"
AGENT_CONFIG = """
bgp:
  router_id: 192.0.2.1
  local_as: 65000
  add_path: true
  neighbors: [{address: 192.0.2.2, peer_as: 65000}]
agent:
  api: {listen: "127.0.0.1:0", names: {web: 203.0.113.10/32}}
services:
  - name: web
    dsid: 203.0.113.10/32
    instances: [{name: a, binding: 198.51.100.11}]
"""
PLAN = {"name": "web-v2", "service": "203.0.113.10/32", "version": 2,
        "stages": [{"share": 10, "hold": 60}, {"share": 30, "hold": 60}, {"share": 100, "hold": 60}],
        "kpis": {"max_rtt_ms": 10, "breach_for": 0}, "rollback": "soft", "auto_commit": False}


DATA_MAPS = ("parameters", "max_metrics")  # objects whose keys are data (names of metrics), not fields


def with_future_fields(document: Any) -> Any:
    """``document`` with an unknown field added to every object in it (what a newer version may write)."""
    if isinstance(document, dict):
        grown = {key: value if key in DATA_MAPS else with_future_fields(value) for key, value in document.items()}
        grown["zz_added_later"] = {"by": "a newer version"}
        return grown
    if isinstance(document, list):
        return [with_future_fields(item) for item in document]
    return document


def golden(name: str) -> Any:
    return json.loads((STATE / name).read_text(encoding="utf-8"))


# ------------------------------------------------------------------ registrations (agent.api.state_file)


def restored(saved: list[dict[str, Any]]) -> tuple[Registrations, list[list[dict[str, Any]]]]:
    config = parse(AGENT_CONFIG)
    writes: list[list[dict[str, Any]]] = []
    api = Registrations(config, AgentState(config), save=writes.append)
    api.restore(saved)
    return api, writes


def test_registrations_of_0_1_0_are_read_and_written_back_the_same(tmp_path: Path) -> None:
    document = golden("registrations-format1.json")
    copy_path = tmp_path / "registrations.json"
    copy_path.write_text(json.dumps(document))
    saved = persist.load(copy_path)
    api, _ = restored(saved)
    assert sorted(str(iid) for iid in api.registered) == ["web/b", "web/c"] and api.conflicts == []
    persist.save(copy_path, [api.registered[iid].document() for iid in sorted(api.registered)])
    assert json.loads(copy_path.read_text()) == document, "the registrations format changed: bump persist.FORMAT"


def test_registrations_with_fields_of_a_newer_version_keep_every_instance(tmp_path: Path) -> None:
    document = with_future_fields(golden("registrations-format1.json"))
    path = tmp_path / "registrations.json"
    path.write_text(json.dumps(document))
    saved = persist.load(path)
    checked, ignored = validate_saved(saved[0])
    assert not isinstance(checked, list) and "zz_added_later" in ignored and "health.zz_added_later" in ignored
    api, _ = restored(saved)
    assert sorted(str(iid) for iid in api.registered) == ["web/b", "web/c"] and api.conflicts == []
    old, _ = restored(golden("registrations-format1.json")["registrations"])
    assert {str(i): r.document() for i, r in api.registered.items()} == \
        {str(i): r.document() for i, r in old.registered.items()}


def test_a_registration_that_is_wrong_apart_from_new_fields_is_still_refused() -> None:
    entry = copy.deepcopy(golden("registrations-format1.json")["registrations"][0])
    entry["capacity"] = -1
    entry["zz_added_later"] = 1
    checked, ignored = validate_saved(entry)
    assert isinstance(checked, list) and ignored == []
    api, _ = restored([entry])
    assert not api.registered and "invalid" in api.conflicts[0].reason


@pytest.mark.parametrize("fmt", [0, 2, "1", None])
def test_registrations_of_an_unknown_format_are_moved_aside_not_lost(tmp_path: Path, fmt: Any) -> None:
    path = tmp_path / "registrations.json"
    path.write_text(json.dumps({"format": fmt, "registrations": []}))
    with pytest.raises(persist.StateFileError, match="format this version reads"):
        persist.load(path)
    assert (tmp_path / "registrations.json.bad").exists()


# ------------------------------------------------------------------ rollouts (router.rollout_state)


def test_rollouts_of_0_1_0_are_read_and_written_back_the_same(tmp_path: Path) -> None:
    document = golden("rollouts-format1.json")
    rollouts, problems = read_document(document, now=1000.0)
    assert problems == [] and [str(s) for s in rollouts] == ["203.0.113.10/32"]
    book = RolloutBook(tmp_path / "rollouts.json")
    book.rollouts.update(rollouts)
    again = book.document()
    assert {k: v for k, v in again.items() if k != "written"} == {k: v for k, v in document.items()
                                                                   if k != "written"}, \
        "the rollout state format changed: bump ops.rollout.FORMAT"


def test_rollouts_with_fields_of_a_newer_version_read_the_same() -> None:
    document = golden("rollouts-format1.json")
    plain, _ = read_document(document, now=1000.0)
    grown, problems = read_document(with_future_fields(document), now=1000.0)
    assert problems == [] and grown == plain


def test_rollouts_of_a_newer_format_are_refused_with_the_reason() -> None:
    document = dict(golden("rollouts-format1.json"), format=machine.FORMAT + 1)
    rollouts, problems = read_document(document, now=1000.0)
    assert rollouts == {} and "is not one this version reads" in problems[0]


# ------------------------------------------------------------------ the kernel (nftables bookkeeping element)


def test_kernel_bookkeeping_with_a_newer_field_is_read_and_a_newer_schema_refused() -> None:
    assert parse_meta("dyncast-bgp schema=1 src_valid_mark=0").saved_src_valid_mark == 0
    assert parse_meta("dyncast-bgp schema=1 src_valid_mark=- zz_added_later=3").saved_src_valid_mark is None
    with pytest.raises(ReadbackError, match="schema 2, this version reads 1"):
        parse_meta("dyncast-bgp schema=2 src_valid_mark=0")


# ------------------------------------------------------------------ how the golden files were made


def write_golden() -> None:  # pragma: no cover - run by hand once per new format, never to overwrite
    """``python -c 'from tests.unit.test_state_compat import write_golden; write_golden()'``."""
    api, writes = restored([])
    from dyncast_bgp.agent.api import ApiRequest  # noqa: PLC0415
    tasks = None
    for body in ({"service": "web", "name": "b", "binding": "198.51.100.12", "capacity": 500, "version": 2,
                  "monitoring": ["cpu_utilization"],
                  "health": {"type": "tcp", "host": "198.51.100.12", "port": 8080, "interval": 1.0, "timeout": 0.5}},
                 {"service": "web", "name": "c", "binding": "198.51.100.13", "parameters": {"cpu_utilization": 40}}):
        applied = api.apply(ApiRequest.of("POST", "/v1/instances", body), tasks, 100.0)  # type: ignore[arg-type]
        assert applied.status == 201, applied
        api.tick(tasks, 100.0)  # type: ignore[arg-type]
    (STATE / "registrations-format1.json").write_text(json.dumps(
        {"format": persist.FORMAT, "registrations": writes[-1]}, indent=1, sort_keys=True) + "\n")
    rollout = machine.start(plan_from_document(PLAN), 100.0)
    rollout = machine.observe(rollout, None, 130.0)
    book = RolloutBook(None)
    book.rollouts[rollout.plan.service] = rollout
    (STATE / "rollouts-format1.json").write_text(json.dumps(book.document(), indent=1, sort_keys=True) + "\n")
