"""The demo's pure parts: router status rows, the live view, the verdict, the events tail."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from dyncast_bgp.lab.demo.kernel import live_flows
from dyncast_bgp.lab.demo.routers import RouterSampler, instance_rows
from dyncast_bgp.lab.demo.story import three_site_story
from dyncast_bgp.lab.demo.tail import EventTail
from dyncast_bgp.lab.demo.verdict import checks, markdown
from dyncast_bgp.lab.demo.view import Traffic, ViewState, render
from dyncast_bgp.lab.loadgen import RequestEvent
from dyncast_bgp.router.status import write_status

DSID = "203.0.113.10/32"
NAMES = {"10.1.1.2": "s1a", "10.2.1.2": "s2a", "10.3.1.2": "s3a", "10.3.2.2": "s3b"}


def _instance(binding: str, weight: float, *, eligible: bool = True, reason: str = "") -> dict[str, object]:
    return {"instance": binding, "weight": weight, "eligible": eligible, "state": "active",
            "metrics": {"cpu_utilization": 40.0, "active_sessions": 3.0, "service_delay": 120000.0},
            "path": {"rtt_mean_us": 12500.0, "loss_mean": 0.0}, "excluded": None if eligible else reason,
            "reason": reason or f"weighted: free capacity 24 x score 6.5; target {weight:.3f}"}


def _document(time: float, weights: dict[str, float], *, applies: int = 1) -> dict[str, object]:
    return {"version": 1, "time": time, "synced": True, "counters": {"applies": applies},
            "services": {DSID: {"status": "", "fallback": None, "weights": weights,
                                "instances": [_instance(b, w) for b, w in weights.items()]}}}


def test_instance_rows_convert_units_and_names() -> None:
    rows = instance_rows(_document(1.0, {"10.1.1.2": 0.25, "10.2.1.2": 0.75}), NAMES)
    assert [(r.instance, r.weight, r.rtt_ms, r.delay_ms) for r in rows] == [
        ("s1a", 0.25, 12.5, 120.0), ("s2a", 0.75, 12.5, 120.0)]
    assert instance_rows({"services": {}}, NAMES) == []


def test_sampler_ignores_a_previous_runs_file_and_waits_for_programming(tmp_path: Path) -> None:
    files = {"ingress1": str(tmp_path / "i1.json"), "ingress2": str(tmp_path / "i2.json")}
    full = dict.fromkeys(NAMES, 0.25)
    write_status(Path(files["ingress1"]), _document(5.0, full))
    write_status(Path(files["ingress2"]), _document(5.0, full, applies=0))
    sampler = RouterSampler(files, NAMES, since=10.0)
    sampler.sample(11.0)
    assert sampler.latest == {} and not sampler.ready(4)  # written before `since`: a previous run's
    sampler.since = 0.0
    sampler.sample(11.0)
    assert not sampler.ready(4)  # ingress2 has not programmed its kernel yet
    write_status(Path(files["ingress2"]), _document(12.0, full))
    sampler.sample(12.0)
    assert sampler.ready(4)
    assert [point[1] for point in sampler.series["weight ingress1"]["s1a"]] == [0.25, 0.25]


def test_view_fits_an_80_column_terminal() -> None:
    rows = instance_rows(_document(1.0, dict.fromkeys(NAMES, 0.25)), NAMES)
    story = three_site_story()
    sites = {i: s.name for s in story.sites for i in s.instances}
    state = ViewState(phase="Load spike at site1", phase_index=2, phases=6, elapsed=3.0, remaining=22.0,
                      expect="expected: site1's share falls", site_share={"site1": 0.2, "site2": 0.3, "site3": 0.5},
                      instance_site=sites, rows={"ingress1": rows, "ingress2": rows},
                      traffic=Traffic(80.0, 140.0, 300.0, 2, 0, 100), events=["12:00:00 Steady state"])
    console = Console(width=80, record=True, color_system=None)
    console.print(render(state))
    text = console.export_text()
    for name in NAMES.values():
        assert sum(1 for line in text.splitlines() if f" {name} " in line) == 1, text
    assert "free 24 x 6.5" in text
    assert "failed 2" in text and "moved 0" in text


def _session(client: str, session: int, instance: str | None, start: float, *, ok: bool = True,
             requests: int = 3) -> list[RequestEvent]:
    return [RequestEvent(start + 0.2 * i, session, i, instance, 100.0, ok, None if ok else "status 503", client)
            for i in range(requests)]


def test_verdict_passes_a_good_run_and_names_the_numbers_of_a_bad_one() -> None:
    story = three_site_story(scale=1.0)
    starts: dict[str, float] = {}
    t = 1000.0
    for each in story.phases:
        starts[each.name] = t
        t += each.seconds
    end = t
    plan = {"steady": ["s1a", "s2a", "s3a", "s3b"], "spike": ["s2a", "s3a", "s3b", "s3a"],
            "failure": ["s1a", "s2a", "s3a", "s2a"], "degraded": ["s1a", "s3a", "s3b", "s1a"],
            "drain": ["s1a", "s2a", "s3b", "s2a"], "recovery": ["s1a", "s2a", "s3a", "s3b"]}
    good: list[RequestEvent] = []
    number = 0
    for phase, instances in plan.items():
        for k in range(12):
            number += 1
            good += _session("c1", number, instances[k % 4], starts[phase] + 6.0 + k)
    results = checks(good, story, starts, end)
    assert all(check.ok for check in results), markdown(results)

    bad = [*good, *_session("c1", 9999, "s3b", starts["failure"] + 8.0, ok=False),
           *_session("c1", 9998, "s3a", starts["drain"] + 9.0)]
    failed = {check.name: check.detail for check in checks(bad, story, starts, end) if not check.ok}
    assert failed == {"no new session to the failed instance after 1 s":
                      "1 new sessions to s3b from 1 s after the failure to the phase end",
                      "a drained instance takes no new session": "1 new sessions to s3a from 1 s after the drain"}


def test_event_tail_reads_whole_lines_once_and_counts_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    tail = EventTail(path, "client1")
    assert tail.read() == []
    first = RequestEvent(1.0, 1, 0, "s1a", 10.0, True).to_json()
    with path.open("w") as out:
        out.write(first + "\n" + '{"t": 2.0, "session": 1')  # the second line is not finished yet
    events = tail.read()
    assert [(e.session, e.client) for e in events] == [(1, "client1")]
    with path.open("a") as out:
        out.write(', "index": 1, "instance": "s1a", "latency_ms": 5, "ok": true}\nnot json\n'
                  + json.dumps({"summary": {"requests": 2}}) + "\n")
    assert [e.index for e in tail.read()] == [1]
    assert tail.skipped == 1 and tail.problem is not None and ":3:" in tail.problem
    assert tail.summary == {"requests": 2}
    assert tail.read() == []


# ---------------------------------------------------------------- live flows per instance (conntrack)

_CT = """\
tcp      6 119 SYN_SENT src=10.100.2.2 dst=203.0.113.10 sport=40000 dport=8080 [UNREPLIED] src=203.0.113.10 \
dst=10.100.2.2 sport=8080 dport=40000 mark=1145241601 use=1
tcp      6 431999 ESTABLISHED src=10.100.2.2 dst=203.0.113.10 sport=40002 dport=8080 src=203.0.113.10 \
dst=10.100.2.2 sport=8080 dport=40002 [ASSURED] mark=1145241602 use=1
tcp      6 100 TIME_WAIT src=10.100.2.2 dst=203.0.113.10 sport=40004 dport=8080 src=203.0.113.10 \
dst=10.100.2.2 sport=8080 dport=40004 [ASSURED] mark=1145241601 use=1
"""


def test_live_flows_count_a_session_from_its_syn_and_not_after_it_ended() -> None:
    registry = {1: "203.0.113.10/32@10.1.1.2 s1a", 2: "203.0.113.10/32@10.2.1.2", 3: "203.0.113.10/32@10.3.1.2"}
    flows = live_flows(registry, _CT)
    # the SYN_SENT entry is a session whose first request has not even been sent: the client has no event for it
    # yet, so only the kernel can say that s1a still has a session (the rolling maintenance test waits for 0)
    assert flows == {"10.1.1.2": 1, "10.2.1.2": 1, "10.3.1.2": 0}
    assert live_flows(registry, "") == {"10.1.1.2": 0, "10.2.1.2": 0, "10.3.1.2": 0}
