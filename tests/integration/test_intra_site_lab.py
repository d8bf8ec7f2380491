"""labs/intra-site (ETSI GR NFV-EVE 020 clause 5.2) end to end: one PoP, a server-access D-Router in front
of three instances of one service, an agent announcing them over iBGP straight to the router.

The lab is brought up in network namespaces (:class:`LabRun`, torn down on every exit path). Then:

1. the router's status file shows a decision over all three instances, and one HTTP request from the
   client to the D-SID is answered by one of them;
2. a short client load (``dyncast lab load`` in the client's namespace) spreads its new sessions over
   all three instances roughly in proportion to their free capacity. The paths are equal, so the
   weighted policy settles where every instance is equally utilised: free capacity in the ratio of
   the nominal capacities, 1 : 2 : 4. The counts are checked against that ratio (chi-square,
   p >= 0.001); the router's own mean free-capacity shares and weights over the same seconds are
   printed beside them;
3. one instance, vnf-b, fails (``POST /admin/fail``): from one second later no new session goes to
   it, while every request to the other two still succeeds and no open session changes instance; the
   survivors' new sessions are not implausibly few for the router's mean weights over those seconds
   (binomial lower tail, p >= 0.001).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.lab.clab import load_topology
from dyncast_bgp.lab.loadgen import RequestEvent, SessionFacts, read_events, session_facts
from dyncast_bgp.lab.poll import expect
from dyncast_bgp.lab.process import Process
from dyncast_bgp.lab.runner import LabRun
from dyncast_bgp.router.status import read_status

pytestmark = [pytest.mark.netns, pytest.mark.lab, pytest.mark.slow, pytest.mark.timing]

LAB = Path(__file__).resolve().parents[2] / "labs" / "intra-site" / "intra-site.clab.yml"
STATUS = Path("/run/dyncast-lab/intra-site/access.status.json")  # router.status_file in access.yml
DSID = "203.0.113.10"
PORT = 8080
INSTANCES = {"vnf-a": "10.10.1.2", "vnf-b": "10.10.2.2", "vnf-c": "10.10.3.2"}  # name -> D-BID
CAPACITY = {"vnf-a": 20.0, "vnf-b": 40.0, "vnf-c": 80.0}  # requests/s, as the agent announces them
FAILED = "vnf-b"  # the survivors then have 100 req/s for the ~57 req/s offered: no overload

RATE = 15.0  # new sessions per second: 4 requests each, about 40 % of the three instances' capacity
STEADY = 7.0  # seconds of load before the failure
AFTER = 3.5  # seconds of load after it
WARMUP = 1.0  # first seconds of load left out of the shares
REACT = 1.0  # no new session to the failed instance from this long after the failure
SPREAD_P_MIN = 0.001  # the chi-square test's p-value below which the spread is judged not to follow capacity


def skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (run as root, e.g. in CI)"
    missing = [tool for tool in ("ip", "nft", "curl") if shutil.which(tool) is None]
    missing += [tool for tool in ("exabgp", "dyncast") if not Path(sys.executable).with_name(tool).exists()]
    return f"missing {', '.join(missing)}" if missing else None


# ------------------------------------------------------------------ reading the router and the events


def decision(document: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Instance name -> the router's explanation of it (weight, free capacity, eligibility...)."""
    if document is None:
        return {}
    names = {address: name for name, address in INSTANCES.items()}
    entry = document.get("services", {}).get(f"{DSID}/32") or {}
    return {names.get(str(item.get("instance")), str(item.get("instance"))): item
            for item in entry.get("instances", [])}


def settled(document: Mapping[str, Any] | None, since: float) -> bool:
    """Programmed, every instance eligible, weights within 0.05 of the capacity shares."""
    if document is None or float(document.get("time", 0.0)) < since or not document.get("synced"):
        return False
    if int((document.get("counters") or {}).get("applies", 0)) == 0:
        return False
    rows = decision(document)
    total = sum(CAPACITY.values())
    return set(rows) == set(INSTANCES) and all(
        row.get("eligible") and abs(float(row.get("weight") or 0.0) - CAPACITY[name] / total) < 0.05
        for name, row in rows.items())


def mean_shares(samples: Sequence[Mapping[str, dict[str, Any]]], field: str) -> dict[str, float]:
    """The mean over samples of each instance's share of ``field`` (``free``, ``weight``) in the router's view."""
    shares = dict.fromkeys(INSTANCES, 0.0)
    for rows in samples:
        total = sum(float(row.get(field) or 0.0) for row in rows.values())
        for name, row in rows.items():
            shares[name] += float(row.get(field) or 0.0) / total / len(samples) if total > 0 else 0.0
    return shares


def new_sessions(facts: Mapping[Any, SessionFacts], start: float, end: float) -> Counter[str]:
    return Counter(fact.instance for fact in facts.values() if start <= fact.start < end)


def failures(events: Sequence[RequestEvent], start: float, *, excluding: str) -> list[RequestEvent]:
    return [e for e in events if e.t >= start and not e.ok and e.instance != excluding]


# ------------------------------------------------------------------ driving the lab


def spawn_load(run: LabRun, out: Path) -> Process:
    """``dyncast lab load`` in the client's namespace for STEADY + AFTER seconds, events to ``out``."""
    return run.spawn("client", "load", [
        str(Path(sys.executable).with_name("dyncast")), "lab", "load", "--target", f"{DSID}:{PORT}",
        "--rate", f"{RATE:g}", "--requests-per-session", "4", "--think-ms", "100", "--timeout", "3",
        "--seed", "7", "--duration", f"{STEADY + AFTER:g}", "--client", "client", "--out", str(out),
        "--log-level", "warning"])


def first_request_time(load: Process, out: Path) -> float:
    """When the load generator sent its first request (its Python may take seconds to start here)."""
    def first() -> float | None:
        if not load.alive() and not out.exists():
            raise AssertionError(f"the load generator exited: {load.describe()}\n{load.log_tail()}")
        try:
            line, newline, _ = out.read_text().partition("\n")
        except FileNotFoundError:
            return None
        return RequestEvent.from_dict(json.loads(line)).t if newline else None  # a whole line only

    found = expect(first, lambda t: t is not None, timeout=30.0, wait=0.1, what="the first request",
                   diagnose=load.log_tail)
    assert found is not None
    return found


def fail_instance(run: LabRun, name: str) -> float:
    """``POST /admin/fail`` from the agent's node (it reaches the instances through the D-Router)."""
    failed_at = time.time()
    done = run.exec("agent", ["curl", "-sS", "-m", "2", "-X", "POST", "-o", "/dev/null", "-w", "%{http_code}",
                              f"http://{INSTANCES[name]}:{PORT}/admin/fail"], check=False)
    assert done.stdout.strip().startswith("2"), (done.stdout, done.stderr)
    return failed_at


# ------------------------------------------------------------------ the test


def test_intra_site_spreads_by_free_capacity_and_avoids_a_failed_instance() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    began = time.time()
    progress: list[str] = []
    samples: list[dict[str, dict[str, Any]]] = []
    with LabRun(load_topology(LAB), progress=progress.append, stop_grace=2.0) as run:
        def diagnose() -> str:
            dead = "; ".join(p.describe() for p in run.dead()) or "none"
            return f"lab progress: {'; '.join(progress)}\ndead processes: {dead}\nlab logs: {run.workdir}"

        document = expect(lambda: read_status(STATUS), lambda d: settled(d, began), timeout=60.0, wait=0.25,
                          what="the D-Router's decision over all three instances", diagnose=diagnose)
        print(f"\nlab up and decided in {time.time() - began:.1f} s: "
              + ", ".join(f"{n} {float(r['weight']):.3f}" for n, r in sorted(decision(document).items())))

        answer = run.exec("client", ["curl", "-sS", "-m", "3", "-D", "-", f"http://{DSID}:{PORT}/"], check=False)
        assert answer.returncode == 0 and " 200 " in answer.stdout.splitlines()[0], (answer.stdout, answer.stderr)
        assert any(f"x-instance: {name}" in answer.stdout.lower() for name in INSTANCES), answer.stdout

        out = run.workdir / "load-events.jsonl"
        load = spawn_load(run, out)
        start = first_request_time(load, out)
        while time.time() < start + STEADY:
            samples.append(decision(read_status(STATUS)))
            time.sleep(0.25)
        failed_at = fail_instance(run, FAILED)
        later: list[dict[str, dict[str, Any]]] = []  # the router's view from REACT after the failure on
        while load.alive():
            assert time.time() < failed_at + AFTER + 15.0, f"the load did not end\n{load.log_tail()}"
            if time.time() >= failed_at + REACT:
                later.append(decision(read_status(STATUS)))
            time.sleep(0.2)
        events, summary = read_events(out)
        after = decision(read_status(STATUS))
    assert summary is not None, "the load generator wrote no summary"
    print(f"lab torn down; {time.time() - began:.1f} s in all; load summary: {summary}")

    facts = session_facts(events)
    steady = new_sessions(facts, start + WARMUP, failed_at)
    total = sum(steady.values())
    expected = {name: CAPACITY[name] / sum(CAPACITY.values()) for name in INSTANCES}
    complete = [rows for rows in samples if set(rows) == set(INSTANCES)]
    free, weights = mean_shares(complete, "free"), mean_shares(complete, "weight")
    shares = {name: steady[name] / total for name in INSTANCES} if total else {}
    print("new sessions before the failure: " + ", ".join(
        f"{name} {steady[name]} ({shares.get(name, 0.0):.1%}; capacity share {expected[name]:.1%}, router: free "
        f"capacity share {free[name]:.1%}, weight {weights[name]:.1%})" for name in INSTANCES))
    assert total >= 50, f"too few sessions to judge the spread: {dict(steady)}"
    assert set(steady) <= set(INSTANCES), f"sessions without an instance before the failure: {dict(steady)}"
    # Pearson's chi-square test of the counts against the capacity shares; with three instances (2 degrees of
    # freedom) its p-value is exactly exp(-chi2 / 2). A fixed tolerance per share (10 % was used) is 2 standard
    # errors at ~100 sessions, and CI once failed a correct spread on it (44 % against 57 %, 2.5 sigma); an
    # unweighted split of the same sessions gives p < 1e-7.
    assert len(INSTANCES) == 3
    chi2 = sum((steady[name] - total * expected[name]) ** 2 / (total * expected[name]) for name in INSTANCES)
    fit = math.exp(-chi2 / 2)
    print(f"chi-square {chi2:.2f}, p = {fit:.3g} (fails below {SPREAD_P_MIN:g})")
    assert fit >= SPREAD_P_MIN, (f"sessions {dict(steady)} do not follow the capacity shares "
                                 f"{ {name: round(share, 3) for name, share in expected.items()} }: p = {fit:.2g}")

    late = new_sessions(facts, failed_at + REACT, float("inf"))
    broken = failures(events, failed_at, excluding=FAILED)
    print(f"new sessions from {REACT:g} s after {FAILED} failed: {dict(late)}; failed requests to the others: "
          f"{len(broken)}; router afterwards: "
          + ", ".join(f"{n} {float(r.get('weight') or 0):.3f}" for n, r in sorted(after.items())))
    assert late[FAILED] == 0, f"{late[FAILED]} new sessions went to the failed {FAILED}: {dict(late)}"
    assert sum(late.values()) >= 10 and set(late) <= set(INSTANCES) - {FAILED}, dict(late)
    # Each survivor takes new sessions as the router weighs it meanwhile: its count is not implausibly low for
    # its mean weight over the window (binomial lower tail). Requiring at least one each failed CI once: after
    # the failure the small vnf-a carries more load and its weight swings (0.01-0.32 at the end of passing runs).
    survivors = [name for name in INSTANCES if name != FAILED]
    seen = [rows for rows in later if set(survivors) <= set(rows)]
    assert seen, f"no router decision over the survivors after the failure: {later[-1:] or 'none read'}"
    shares = mean_shares(seen, "weight")
    total_late = sum(late.values())
    for name in survivors:
        tail = sum(math.comb(total_late, k) * shares[name] ** k * (1 - shares[name]) ** (total_late - k)
                   for k in range(late[name] + 1))
        print(f"  {name}: {late[name]} of {total_late} new sessions, mean router weight {shares[name]:.3f}, "
              f"P(as few or fewer) = {tail:.3g}")
        assert tail >= SPREAD_P_MIN, (f"{name} took {late[name]} of {total_late} new sessions after the failure "
                                      f"where the router gave it {shares[name]:.3f} on average: p = {tail:.2g}")
    assert not broken, f"{len(broken)} failed requests to other instances, e.g. {broken[:3]}"
    moved = [key for key, fact in facts.items() if fact.moved_at is not None]
    assert not moved, f"{len(moved)} open sessions changed instance: {moved[:5]}"
