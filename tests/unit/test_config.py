"""Config loading: every problem reported with its location; `dyncast config check` exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dyncast_bgp.cli import main
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.config.schema import RouterConfig

GOOD = """\
bgp:
  router_id: 192.0.2.1
  local_as: 65001
  add_path: true
  neighbors:
    - {address: 10.0.0.1, peer_as: 65000}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11}
      - {name: b, binding: 198.51.100.12, health: {type: tcp, host: 198.51.100.12, port: 80}}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse(text, "c.yml")
    return str(info.value).splitlines()


def test_good_config_parses_with_defaults() -> None:
    config = parse(GOOD)
    assert str(config.services[0].service_id) == "203.0.113.10/32"
    assert config.agent.publish.min_interval == 1.0


def test_every_schema_error_is_reported_with_path_and_line() -> None:
    text = GOOD.replace("port: 80}", "port: 80, interval: 0}").replace("peer_as: 65000", "peer_as: 0, colour: red")
    found = problems(text)
    assert "c.yml:6: bgp.neighbors[0].peer_as: must be >= 1" in found
    assert "c.yml:6: bgp.neighbors[0].colour: unknown field (not in the schema)" in found
    assert "c.yml:12: services[0].instances[1].health.interval: must be > 0" in found
    assert len(found) == 3


def test_cross_field_rules_are_reported_with_location() -> None:
    text = GOOD.replace("add_path: true", "add_path: false").replace("name: b, binding: 198.51.100.12",
                                                                      "name: a, binding: 2001:db8::1")
    found = problems(text)
    assert any("services[0].instances: 2 instances of one D-SID in per-instance mode need bgp.add_path" in p
               for p in found)
    assert any(p.startswith("c.yml:12: services[0].instances[1].name: duplicate instance name") for p in found)
    assert any("services[0].instances[1].binding: IPv6 D-BID for an IPv4 D-SID" in p for p in found)


@pytest.mark.parametrize(("text", "expected"), [
    ("bgp: [1, 2", "invalid YAML"),
    ("- just a list", "the file must hold a mapping"),
    (GOOD.replace("203.0.113.10", "203.0.113.10/24"), "services[0].dsid: not a service prefix"),
    (GOOD.replace("{name: a, binding: 198.51.100.11}", "{name: a, binding: 198.51.100.11, "
                  "metrics: [{type: snmp}]}"), "unknown type 'snmp'"),
    (GOOD.replace("{name: a, binding: 198.51.100.11}", "{name: a, binding: 198.51.100.11, "
                  "static: {load: 3}}"), "unknown metric 'load'"),
])
def test_bad_files_name_the_problem(text: str, expected: str) -> None:
    assert any(expected in line for line in problems(text))


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.yml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.yml"
    bad.write_text(GOOD.replace("local_as: 65001", "local_as: -1"))
    assert main(["config", "check", str(good)]) == 0
    assert "ok (1 services, 2 instances, 1 neighbors)" in capsys.readouterr().out
    assert main(["config", "check", str(bad)]) == 2
    assert "bgp.local_as: must be >= 1" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.yml")]) == 2
    proc = subprocess.run([sys.executable, "-m", "dyncast_bgp.cli", "config", "check", str(bad)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "bad.yml:3: bgp.local_as" in proc.stderr


def test_stale_time_rule_is_one_for_live_router_and_replay() -> None:
    assert RouterConfig().stale_time(120) == 120.0  # default: the graceful-restart time
    assert RouterConfig().stale_time(None) == 0.0
    assert RouterConfig(stale_routes_time=0).stale_time(120) == 0.0  # an explicit 0 is honoured
    assert RouterConfig(stale_routes_time=30).stale_time(120) == 30.0


def test_a_service_policy_is_made_once_and_one_service_named_twice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from dyncast_bgp.model import ServiceId  # noqa: PLC0415

    text = ("bgp: {router_id: 192.0.2.1, local_as: 65000}\nrouter:\n  defaults: {smoothing: 0.5}\n  services:\n"
            + "".join(f"    203.0.113.{n}: {{max_step: 0.{n % 9 + 1}}}\n" for n in range(1, 201)))
    router = parse(text).router
    first = router.policy_for(ServiceId.parse("203.0.113.7/32"))
    assert first.max_step == 0.8 and first.smoothing == 0.5  # the override on top of the defaults
    parsed: list[str] = []
    real = ServiceId.parse
    def counted(text: str) -> ServiceId:
        parsed.append(text)
        return real(text)

    monkeypatch.setattr(ServiceId, "parse", staticmethod(counted))
    for n in range(1, 201):  # the router asks for every service it decides: a lookup, nothing parsed again
        assert router.policy_for(real(f"203.0.113.{n}/32")).max_step == float(f"0.{n % 9 + 1}")
    assert router.policy_for(real("203.0.113.7/32")) is first and parsed == []
    assert router.policy_for(real("198.51.100.1/32")) is router.defaults
    monkeypatch.undo()
    # a copy with other services or defaults does not answer from the original's policies
    copy = router.model_copy(update={"services": {}})
    assert copy.policy_for(real("203.0.113.7/32")) is copy.defaults
    other = router.model_copy(update={"defaults": router.defaults.model_copy(update={"smoothing": 0.9})})
    assert other.policy_for(real("203.0.113.7/32")).smoothing == 0.9

    policies = router.policies()  # every policy in force (the runtime asks whether any shifts on failure)
    assert policies[0] is router.defaults and len(policies) == 201 and first in policies
    shifting = parse("bgp: {router_id: 192.0.2.1, local_as: 65000}\n"
                     "router: {services: {203.0.113.7: {shift_on_failure: true}}}\n").router
    assert [p.shift_on_failure for p in shifting.policies()] == [False, True]
    assert not any(p.shift_on_failure for p in router.policies())

    with pytest.raises(ConfigError, match=r"'203.0.113.7' and '203.0.113.7/32' name the same service"):
        parse("bgp: {router_id: 192.0.2.1, local_as: 65000}\n"
              "router: {services: {203.0.113.7: {max_step: 0.5}, 203.0.113.7/32: {smoothing: 0.5}}}\n")
