"""`dyncast router --replay`: deterministic, follows metric changes, withdrawals and peer loss."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

from dyncast_bgp.config.schema import RouterConfig, ServicePolicy
from dyncast_bgp.router.replay import replay
from tests.unit.exabgp_lines import peer_down, update, withdraw

SVC = "203.0.113.10/32"
A, B = "198.51.100.11", "198.51.100.12"
FAST = RouterConfig(defaults=ServicePolicy(max_step=1.0, min_dwell=0.0, smoothing=1.0))


def run(lines: list[str], config: RouterConfig = FAST) -> list[dict[str, object]]:
    out = io.StringIO()
    report = replay(lines, config, out)
    assert report.rejected == 0, report.problems
    return [json.loads(line) for line in out.getvalue().splitlines()]


def story() -> list[str]:
    return [
        update(100.0, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000}),
        update(100.1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 20, "capacity": 1000}),
        update(110.0, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 90, "capacity": 1000}),
        withdraw(120.0, "10.0.0.3", SVC, 2),
        peer_down(130.0, "10.0.0.3"),
    ]


def test_decisions_follow_load_withdraw_and_peer_down() -> None:
    decisions = [d for d in run(story()) if d["service"] == SVC]
    weights = [d["weights"] for d in decisions]
    balanced = next(w for w in weights if isinstance(w, dict) and len(w) == 2 and w[A] == w[B])
    assert balanced == {A: 0.5, B: 0.5}
    after_load = next(w for w in weights if isinstance(w, dict) and len(w) == 2 and w[A] < w[B])
    assert after_load[A] < 0.2  # 90 % busy: far less than half of the new flows
    assert weights[-1] == {}  # the peer went away: nothing left to send flows to


def test_same_input_same_output_and_cli_matches(tmp_path: Path) -> None:
    capture = tmp_path / "exabgp.jsonl"
    capture.write_text("\n".join(story()) + "\nnot json at all\n")
    first = run(story(), RouterConfig())
    assert first == run(story(), RouterConfig())
    command = [sys.executable, "-m", "dyncast_bgp.cli", "router", "--replay", str(capture), "--print-decisions"]
    proc = subprocess.run(command, capture_output=True, text=True, check=True)
    assert [json.loads(line) for line in proc.stdout.splitlines()] == first
    assert "1 skipped" in proc.stderr and "line 6" in proc.stderr  # the bad line is reported, not fatal
