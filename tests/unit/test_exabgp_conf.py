"""Rendered ExaBGP configurations are accepted by ExaBGP 5.0's and 4.2's own validation."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.exabgp.render import Role, render

ROOT = Path(__file__).resolve().parents[2]
EXABGP5 = Path(sys.executable).with_name("exabgp")
DYNCAST = Path(sys.executable).with_name("dyncast")  # ExaBGP checks that a process executable exists
EXABGP42 = Path(os.environ.get("DYNCAST_EXABGP42", ROOT / ".venv-exabgp42" / "bin" / "exabgp"))

CONFIG = """
bgp:
  router_id: 192.0.2.1
  local_as: 65001
  add_path: true
  graceful_restart: 120
  neighbors:
    - {address: 10.0.0.1, peer_as: 65000, local_address: 10.0.0.2, md5_password: "s3cret", hold_time: 9}
    - {address: "fd00::1", peer_as: 65000, local_address: "fd00::2", passive: true, families: [ipv6 unicast]}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11}
"""


def validate(exabgp: Path, conf: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "exabgp_api_cli": "false", "exabgp_daemon_user": "root"}
    argv = [str(exabgp), "validate", str(conf)] if exabgp == EXABGP5 else [str(exabgp), "--test", str(conf)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize("role", ["agent", "router"])
@pytest.mark.parametrize("exabgp", [EXABGP5, EXABGP42], ids=["exabgp-5.0", "exabgp-4.2"])
def test_rendered_config_validates(tmp_path: Path, role: Role, exabgp: Path) -> None:
    if not exabgp.exists():
        pytest.fail(f"{exabgp} is missing: run scripts/setup.sh (it installs ExaBGP 4.2 in .venv-exabgp42)")
    text = render(parse(CONFIG), role=role, command=[str(DYNCAST)],
                  config_path="/etc/dyncast.yml")
    assert "md5-password \"s3cret\";" in text and "graceful-restart 120;" in text
    assert f"add-path {'send' if role == 'agent' else 'receive'};" in text
    # the agent sends End-of-RIB itself (agent/eor.py): told when sessions come up, reading no updates
    assert ("manual-eor true;" in text) == (role == "agent") and "neighbor-changes;" in text
    assert ("receive {" in text) == (role == "router")
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    result = validate(exabgp, conf)
    assert result.returncode == 0, result.stdout + result.stderr
    # the same validator refuses a broken file, so a pass above means something
    conf.write_text(text.replace("hold-time 9;", "hold-time 1;"))
    assert validate(exabgp, conf).returncode != 0


def test_quotes_and_semicolons_cannot_break_out_of_a_string() -> None:
    with pytest.raises(ConfigError, match=r"bgp.neighbors\[0\].md5_password: string should match pattern"):
        parse(CONFIG.replace('"s3cret"', "'a\";b'"))
    config = parse(CONFIG)  # the renderer refuses too (defence in depth, e.g. for configs built in code)
    unsafe = config.model_copy(update={"bgp": config.bgp.model_copy(update={
        "neighbors": (config.bgp.neighbors[0].model_copy(update={"md5_password": 'a";b'}),)})})
    with pytest.raises(ValueError, match="cannot be written into an ExaBGP config"):
        render(unsafe, role="agent", command=["dyncast"], config_path="x")


@pytest.mark.parametrize("example", sorted((ROOT / "exabgp_conf").glob("*.conf")), ids=lambda p: p.name)
@pytest.mark.parametrize("exabgp", [EXABGP5, EXABGP42], ids=["exabgp-5.0", "exabgp-4.2"])
def test_shipped_examples_validate(tmp_path: Path, example: Path, exabgp: Path) -> None:
    if not exabgp.exists():
        pytest.fail(f"{exabgp} is missing: run scripts/setup.sh (it installs ExaBGP 4.2 in .venv-exabgp42)")
    conf = tmp_path / example.name
    conf.write_text(example.read_text().replace("/usr/local/bin/dyncast", str(DYNCAST)))
    result = validate(exabgp, conf)
    assert result.returncode == 0, result.stdout + result.stderr
