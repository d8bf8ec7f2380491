"""Scenario files and `dyncast simulate`: every built-in scenario loads, errors say where, the outputs exist."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dyncast_bgp.cli import main
from dyncast_bgp.sim.scenario import ScenarioError, builtin_names, load, parse

REQUIRED = {"balanced", "skewed", "flash-crowd", "site-failure", "heterogeneous", "many-ingress-herd"}


def test_every_builtin_scenario_loads() -> None:
    assert set(builtin_names()) >= REQUIRED
    for name in builtin_names():
        scenario = load(name)
        assert scenario.name == name
    herd = load("many-ingress-herd")
    assert len(herd.expanded_ingresses()) == 16 and herd.information.propagation_s == 5
    assert [site.servers for site in load("heterogeneous").sites] == [4, 8, 16]


def test_scenario_errors_are_all_reported_with_their_location() -> None:
    text = """
name: bad
duration_s: 10
sites: [{name: a, servers: 0, rate: 5}, {name: b, servers: 1, rate: -1}]
ingresses: [{name: i, rate: 1, rtt_ms: {a: 1}}]
"""
    with pytest.raises(ScenarioError) as caught:
        parse(text, "bad.yaml")
    message = str(caught.value)
    assert "bad.yaml: sites[0].servers" in message
    assert "bad.yaml: sites[1].rate" in message


def test_an_ingress_must_give_an_rtt_to_every_site() -> None:
    text = ("name: x\nduration_s: 10\nsites: [{name: a, servers: 1, rate: 5}]\n"
            "ingresses: [{name: i, rate: 1, rtt_ms: {}}]\n")
    with pytest.raises(ScenarioError, match="missing"):
        parse(text)


def test_simulate_prints_json_keyed_by_policy(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "skewed", "--duration", "40", "--policies", "anycast,weighted", "oracle", "--json",
                 "--no-progress"])
    assert code == 0
    body = json.loads(capsys.readouterr().out)
    assert set(body) == {"_scenario", "_seed", "anycast", "weighted", "oracle"}
    for key in ("p50_ms", "p99_ms", "mean_ms", "over_slo", "peak_utilisation", "oscillation"):
        assert isinstance(body["weighted"][key], float)
    assert body["weighted"]["p99_ms"] < body["anycast"]["p99_ms"]


def test_simulate_table_csv_and_plots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", "balanced", "--duration", "20", "--policies", "anycast", "random", "--seed", "4",
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "p99 ms" in out and "anycast" in out and "random" in out
    for name in ("summary.csv", "timeline.csv", "cdf.csv", "cdf.png", "shares.png"):
        assert (tmp_path / name).stat().st_size > 0


def test_simulate_rejects_unknown_policies_and_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "balanced", "--policies", "magic"]) == 2
    assert main(["simulate", "no-such-scenario"]) == 2
    assert "built-in scenarios" in capsys.readouterr().err
