"""The decision audit log: records (pure), the writer (rotation), the router writing it, `dyncast audit` reading it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dyncast_bgp.cli import main
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import ServicePolicy
from dyncast_bgp.deferred import Deferred
from dyncast_bgp.engine.candidate import Candidate
from dyncast_bgp.engine.decide import decide
from dyncast_bgp.model import ComputeMetrics, InstanceKey, InstanceState, MetricsView, PathMetrics, ServiceId
from dyncast_bgp.obs.commands import in_force, parse_time, select
from dyncast_bgp.router.audit import AuditWriter, DecisionBook, audit_files, audit_record, read_records
from dyncast_bgp.router.runtime import RouterRuntime
from tests.unit.exabgp_lines import update, withdraw

SVC = ServiceId.parse("203.0.113.10/32")
A, B = "198.51.100.11", "198.51.100.12"
POLICY = ServicePolicy(max_step=1.0, min_dwell=0, smoothing=1.0)


def candidate(dbid: str, cpu: float, *, rtt_ms: float = 5.0, reachable: bool = True) -> Candidate:
    import ipaddress  # noqa: PLC0415

    metrics = ComputeMetrics(values=MetricsView({"cpu_utilization": cpu, "capacity": 1000.0}))
    return Candidate(InstanceKey(SVC, ipaddress.ip_address(dbid)), InstanceState.ACTIVE, metrics,
                     PathMetrics(rtt_mean_us=rtt_ms * 1000, reachable=reachable))


def test_a_record_says_what_changed_and_why() -> None:
    first = decide(SVC, [candidate(A, 20), candidate(B, 20)], POLICY, None, 0.0)
    second = decide(SVC, [candidate(A, 20), candidate(B, 20, reachable=False)], POLICY, first.memory, 1.0)
    record = audit_record(first, second, 1_700_000_000.5)
    assert record["v"] == 1 and record["service"] == str(SVC)
    assert record["time"] == "2023-11-14T22:13:20.500Z" and record["ts"] == 1_700_000_000.5
    assert record["old"] == {A: 0.5, B: 0.5} and record["new"] == {A: 1.0}
    b = record["instances"][B]
    assert b["old_weight"] == 0.5 and b["weight"] == 0.0 and b["excluded"]
    assert b["changed"] == {"path": {"reachable": [True, False]}}
    assert "changed" not in record["instances"][A] and record["removed"] == []
    json.dumps(record, allow_nan=False)  # a JSON line

    third = decide(SVC, [candidate(A, 90)], POLICY, second.memory, 2.0)
    record = audit_record(second, third, 2.0)
    assert record["removed"] == [B]
    assert record["instances"][A]["changed"] == {"metrics": {"cpu_utilization": [20.0, 90.0]}}
    assert audit_record(None, first, 0.0)["instances"][A]["added"] is True


def test_the_writer_appends_from_a_thread_and_rotates_by_size(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "decisions.jsonl"
    writer = AuditWriter(path, max_bytes=4096, keep=2)
    for index in range(200):
        writer.write({"v": 1, "ts": float(index), "service": "s", "pad": "x" * 60})
    writer.close(timeout=30)
    files = audit_files(path)
    assert [f.name for f in files] == ["decisions.jsonl.2", "decisions.jsonl.1", "decisions.jsonl"]
    assert all(f.stat().st_size <= 4096 for f in files)
    records = [item for _, _, item in read_records(files)]
    assert all(isinstance(item, dict) for item in records)
    stamps = [item["ts"] for item in records if isinstance(item, dict)]
    assert stamps == sorted(stamps) and stamps[-1] == 199.0  # the newest kept, in order, older ones rotated away
    assert writer.written == 200 and writer.dropped == 0

    capped = AuditWriter(tmp_path / "capped.jsonl", max_bytes=4096, keep=0)
    for index in range(200):
        capped.write({"v": 1, "ts": float(index), "service": "s", "pad": "x" * 60})
    capped.close(timeout=30)
    assert audit_files(tmp_path / "capped.jsonl") == [tmp_path / "capped.jsonl"]
    assert (tmp_path / "capped.jsonl").stat().st_size <= 4096


def test_an_unwritable_log_drops_and_counts_without_raising(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    writer = AuditWriter(tmp_path / "file" / "audit.jsonl", max_bytes=4096, keep=1)
    writer.write({"v": 1})
    writer.close(timeout=30)
    assert writer.dropped == 1 and writer.written == 0


def test_the_book_keeps_the_last_decision_per_service() -> None:
    book = DecisionBook()
    first = decide(SVC, [candidate(A, 20)], POLICY, None, 0.0)
    book.record([first], 10.0)
    second = decide(SVC, [candidate(A, 20), candidate(B, 20)], POLICY, first.memory, 1.0)
    book.record([second], 11.0)
    entry = book.get(SVC)
    assert entry is not None and entry.outcome is second and entry.at == 11.0 and entry.changes == 2



def test_the_book_holds_the_entry_it_replaces_for_a_deferred_release() -> None:
    deferred = Deferred()
    book = DecisionBook(deferred=deferred)
    first = decide(SVC, [candidate(A, 20)], POLICY, None, 0.0)
    book.record([first], 10.0)
    assert not deferred  # nothing replaced
    replaced = book.get(SVC)
    second = decide(SVC, [candidate(A, 20), candidate(B, 20)], POLICY, first.memory, 1.0)
    book.record([second], 11.0)
    assert deferred._held == [replaced] and replaced is not None and replaced.outcome is first


CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.01
  startup_hold: 0
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
  audit_log: %(path)s
"""


def test_the_router_writes_one_line_per_decision_change_and_dyncast_audit_explains_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    svc = str(SVC)
    lines = [update(1, "10.0.0.3", svc, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000}),
             update(1, "10.0.0.3", svc, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000}),
             update(2, "10.0.0.3", svc, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000}, flags=1),
             withdraw(3, "10.0.0.3", svc, 2)]

    async def go() -> None:
        async def feed() -> AsyncIterator[str]:
            for line in lines:
                yield line
                await asyncio.sleep(0.05)

        await asyncio.wait_for(RouterRuntime(parse(CONFIG % {"path": path}), lines=feed(), dataplane=None).run(), 10)

    asyncio.run(go())
    records = [item for _, _, item in read_records([path])]
    assert all(isinstance(item, dict) for item in records)
    assert len(records) >= 3
    drained = next(r for r in records if isinstance(r, dict) and r["instances"].get(B, {}).get("changed"))
    assert drained["instances"][B]["changed"]["state"] == ["active", "draining"]
    assert drained["instances"][B]["changed"]["flags"] == [[], ["draining"]]
    assert drained["new"] == {A: 1.0}

    capsys.readouterr()
    assert main(["audit", str(path), "--service", "203.0.113.10"]) == 0
    text = capsys.readouterr().out
    assert "because state active -> draining; flags - -> draining" in text
    assert f"{B:<20} gone from BGP" in text
    assert main(["audit", str(path), "--instance", B, "--json"]) == 0
    chosen = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert chosen and all(B in r["instances"] or B in r["removed"] for r in chosen)
    last = records[-1]
    assert isinstance(last, dict)
    assert main(["audit", str(path), "--at", str(last["ts"] + 1), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["new"] == {A: 1.0}
    assert main(["audit", str(tmp_path / "missing.jsonl")]) == 1


def test_times_and_selection() -> None:
    assert parse_time("2023-11-14T22:13:20Z", now=0) == 1_700_000_000
    assert parse_time("2023-11-14T22:13:20", now=0) == 1_700_000_000  # no zone: UTC
    assert parse_time("1700000000.5", now=0) == 1_700_000_000.5
    assert parse_time("15m", now=1000.0) == 100.0
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday", now=0)
    records = [{"ts": 1.0, "service": "203.0.113.10/32"}, {"ts": 2.0, "service": "203.0.113.11/32"},
               {"ts": 3.0, "service": "203.0.113.10/32"}]
    assert [r["ts"] for r in select(records, service="203.0.113.10", since=2.0)] == [3.0]
    assert {k: v["ts"] for k, v in in_force(records, 2.5).items()} == {"203.0.113.10/32": 1.0,
                                                                        "203.0.113.11/32": 2.0}


def test_the_audit_outline_is_to_dict_without_the_scores() -> None:
    first = decide(SVC, [candidate(A, 20), candidate(B, 95, rtt_ms=40)], POLICY, None, 0.0)
    second = decide(SVC, [candidate(A, 20), candidate(B, 20, reachable=False)], POLICY, first.memory, 1.0)
    for outcome in (first, second):
        for item in outcome.explain:
            whole = item.to_dict()
            assert item.outline() == {name: whole[name] for name in item.outline()}
            assert set(item.outline()) == {"instance", "state", "flags", "metrics", "path", "weight", "excluded",
                                           "reason"}


def test_the_book_queues_audit_records_and_builds_them_a_slice_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "audit.jsonl"
    book = DecisionBook(AuditWriter(path, max_bytes=1 << 20, keep=1))
    outcomes, memory = [], None
    for step in range(5):
        outcome = decide(SVC, [candidate(A, 20 + step), candidate(B, 30)], POLICY, memory, float(step))
        outcomes.append(outcome)
        memory = outcome.memory
        book.record([outcome], 100.0 + step)
    assert book.backlog == 5 and book.get(SVC) is not None and book.get(SVC).outcome is outcomes[-1]  # type: ignore[union-attr]
    ticks = iter(range(100))
    assert book.write_pending(2.5, clock=lambda: float(next(ticks))) == 3  # until, then 1, 2, 3 >= 2.5
    assert book.backlog == 2
    assert book.write_pending(0.0) == 1, "at least one record per call"
    assert book.write_pending(60.0) == 1 and book.backlog == 0 and book.write_pending(60.0) == 0
    assert book.writer is not None
    book.writer.close(timeout=30)
    records = [item for _, _, item in read_records([path])]
    assert [r["ts"] for r in records if isinstance(r, dict)] == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert records[1] == audit_record(outcomes[0], outcomes[1], 101.0), "each against the decision before it"

    monkeypatch.setattr("dyncast_bgp.router.audit.QUEUE_LIMIT", 2)
    full = DecisionBook(AuditWriter(tmp_path / "full.jsonl", max_bytes=1 << 20, keep=1))
    full.record(outcomes, 0.0)
    assert full.backlog == 2 and full.writer is not None and full.writer.dropped == 3
    assert full.forget_pending() == 2 and full.backlog == 0
    full.writer.close(timeout=30)
    quiet = DecisionBook()  # no audit log: nothing queued
    quiet.record(outcomes, 0.0)
    assert quiet.backlog == 0 and quiet.write_pending(1.0) == 0


def test_the_router_writes_a_large_recompute_s_records_over_several_turns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dyncast_bgp.router.runtime.AUDIT_SLICE", 0.0)  # one record per turn of the loop
    path = tmp_path / "audit.jsonl"
    services = [f"203.0.113.{n}/32" for n in range(1, 41)]
    lines = [update(1, "10.0.0.3", svc, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})
             for svc in services]
    seen: list[int] = []
    runtimes: list[RouterRuntime] = []

    async def feed() -> AsyncIterator[str]:
        for line in lines:  # one burst: one step decides every service
            yield line
        book = runtimes[0].book
        for _ in range(500):  # then watch the records being built; closing the input stops the router
            await asyncio.sleep(0.01)
            seen.append(book.backlog)
            if book.get(ServiceId.parse(services[-1])) is not None and not book.backlog:
                seen.append(-1)  # built while the router runs (stopping writes what is left, 2 s at most)
                break

    async def go() -> None:
        runtimes.append(RouterRuntime(parse(CONFIG % {"path": path}), lines=feed(), dataplane=None))
        await asyncio.wait_for(runtimes[0].run(), 10)

    asyncio.run(go())
    records = [item for _, _, item in read_records([path])]
    assert sorted(r["service"] for r in records if isinstance(r, dict)) == sorted(services)
    assert max(seen) > 0, "the records waited and were built over several turns"
    assert seen[-1] == -1, f"the queued records were not built while the router ran: {seen[-5:]}"


def test_with_a_minimum_change_only_material_changes_are_written_and_the_next_record_counts_the_rest(
        tmp_path: Path) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", max_bytes=1 << 20, keep=1)
    book = DecisionBook(writer, min_change=0.05)
    outcomes = [decide(SVC, [candidate(A, 20), candidate(B, 20)], POLICY, None, 0.0)]  # 0.5 / 0.5: written
    for step, cpu in enumerate((21.0, 22.0, 23.0, 40.0), 1):  # B a little busier each time, then much busier
        outcomes.append(decide(SVC, [candidate(A, 20), candidate(B, cpu)], POLICY, outcomes[-1].memory, step))
    drift = [max(o.decision.weights.values()) - 0.5 for o in outcomes[1:]]  # from the one written
    assert max(drift[:-1]) < 0.05 <= drift[-1], drift  # the first steps below the minimum, the last above it
    for at, outcome in enumerate(outcomes):
        book.record([outcome], 100.0 + at)
    assert book.write_pending(5.0) == 2
    writer.close(timeout=30)
    records = [item for _, _, item in read_records([tmp_path / "audit.jsonl"])]
    assert [isinstance(r, dict) and r.get("skipped") for r in records] == [None, len(outcomes) - 2]
    assert book.skipped == len(outcomes) - 2 and writer.dropped == 0
    entry = book.get(SVC)  # every change is still the book's
    assert entry is not None and entry.outcome is outcomes[-1] and entry.changes == len(outcomes)
    excluded = decide(SVC, [candidate(A, 20), candidate(B, 40, reachable=False)], POLICY, outcomes[-1].memory, 9.0)
    book.record([excluded], 200.0)  # another set of excluded instances: written whatever the weights did
    assert book.backlog == 1 and book.skipped == len(outcomes) - 2


def test_the_router_s_audit_min_change_is_applied_to_its_log(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    svc = str(SVC)
    cpus = (20, 21, 22, 23, 60)  # B: small moves (not written), then a large one
    lines = [update(1, "10.0.0.3", svc, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000})]
    lines += [update(n, "10.0.0.3", svc, B, 2, metrics={"cpu_utilization": cpu, "capacity": 1000})
              for n, cpu in enumerate(cpus, 2)]
    runtimes: list[RouterRuntime] = []

    async def go() -> None:
        async def feed() -> AsyncIterator[str]:
            for line in lines:
                yield line
                await asyncio.sleep(0.05)

        runtimes.append(RouterRuntime(parse(CONFIG % {"path": path} + "  audit_min_change: 0.05\n"), lines=feed(),
                                      dataplane=None))
        await asyncio.wait_for(runtimes[0].run(), 10)

    asyncio.run(go())
    records = [item for _, _, item in read_records([path])]
    book = runtimes[0].book
    entry = book.get(SVC)
    assert entry is not None and entry.changes == len(records) + book.skipped
    assert book.skipped >= 2 and records and isinstance(records[-1], dict)
    assert records[-1]["skipped"] >= 1 and records[-1]["new"][B] < 0.45, records[-1]
    audit = runtimes[0].status()["audit"]
    assert isinstance(audit, dict) and audit["skipped"] == book.skipped
    with pytest.raises(ConfigError, match=r"router\.audit_min_change"):
        parse(CONFIG % {"path": path} + "  audit_min_change: 2\n")


def test_a_record_dropped_with_the_queue_full_is_not_the_baseline_and_is_counted_on_the_next(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = AuditWriter(tmp_path / "audit.jsonl", max_bytes=1 << 20, keep=1)  # its own queue as usual
    monkeypatch.setattr("dyncast_bgp.router.audit.QUEUE_LIMIT", 1)  # the book's backlog: one record
    book = DecisionBook(writer, min_change=0.05)
    first = decide(SVC, [candidate(A, 20), candidate(B, 20)], POLICY, None, 0.0)  # queued: the backlog is full
    moved = decide(SVC, [candidate(A, 20), candidate(B, 80)], POLICY, first.memory, 1.0)  # dropped
    again = decide(SVC, [candidate(A, 20), candidate(B, 81)], POLICY, moved.memory, 2.0)  # near the dropped one
    book.record([first], 100.0)
    book.record([moved], 101.0)
    assert writer.dropped == 1 and book.write_pending(5.0) == 1
    book.record([again], 102.0)  # material against the last written (first), not against the dropped one
    assert book.write_pending(5.0) == 1 and book.skipped == 0
    writer.close(timeout=30)
    records = [item for _, _, item in read_records([tmp_path / "audit.jsonl"])]
    assert [isinstance(r, dict) and r.get("skipped") for r in records] == [None, 1]


def test_audit_min_change_needs_the_audit_log_and_a_finite_value(tmp_path: Path) -> None:
    bare = CONFIG.replace("  audit_log: %(path)s\n", "")
    with pytest.raises(ConfigError, match=r"audit_min_change is set but audit_log is not"):
        parse(bare + "  audit_min_change: 0.05\n")
    assert parse(bare + "  audit_min_change: 0\n").router.audit_min_change == 0
    with pytest.raises(ConfigError, match=r"router\.audit_min_change: input should be a finite number"):
        parse(CONFIG % {"path": tmp_path / "a.jsonl"} + "  audit_min_change: .nan\n")
