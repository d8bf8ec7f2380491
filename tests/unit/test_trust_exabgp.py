"""Hardening in the rendered ExaBGP config: rate-limit and TCP-MD5 validate with ExaBGP 5.0 and 4.2."""

from __future__ import annotations

from pathlib import Path

import pytest

from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.exabgp.render import render
from tests.unit.test_exabgp_conf import DYNCAST, EXABGP5, EXABGP42, validate

CONFIG = """
bgp:
  router_id: 192.0.2.1
  local_as: 65001
  neighbors:
    - {address: 10.0.0.1, peer_as: 65000, local_address: 10.0.0.2, md5_password: "s3cret", rate_limit: 200,
        families: [ipv4 unicast]}
    - {address: 10.0.0.5, peer_as: 65000, local_address: 10.0.0.6}
router:
  trust:
    peers: [{peer: 10.0.0.1, dsids: [203.0.113.0/24], max_prefixes: 100}]
"""


@pytest.mark.parametrize("exabgp", [EXABGP5, EXABGP42], ids=["exabgp-5.0", "exabgp-4.2"])
def test_rate_limit_renders_and_validates(tmp_path: Path, exabgp: Path) -> None:
    if not exabgp.exists():
        pytest.skip(f"{exabgp} is missing: run scripts/setup.sh")
    text = render(parse(CONFIG), role="router", command=[str(DYNCAST)], config_path="/etc/dyncast.yml")
    assert text.count("rate-limit 200;") == 1 and 'md5-password "s3cret";' in text
    assert "family {\n        ipv4 unicast;\n    }" in text
    conf = tmp_path / "exabgp.conf"
    conf.write_text(text)
    result = validate(exabgp, conf)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rate_limit_must_be_positive() -> None:
    with pytest.raises(ConfigError, match=r"bgp.neighbors\[0\].rate_limit"):
        parse(CONFIG.replace("rate_limit: 200", "rate_limit: 0"))
