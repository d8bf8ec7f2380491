"""The ExaBGP configs in exabgp_conf/ are what `dyncast exabgp-conf` renders for examples/.

Regenerate after an intended change: pytest tests/golden --update-golden
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dyncast_bgp.config.loader import load
from dyncast_bgp.exabgp.render import Role, render

ROOT = Path(__file__).resolve().parents[2]
CASES = [("agent", "examples/agent.yml", "exabgp_conf/agent.conf"),
         ("router", "examples/router.yml", "exabgp_conf/router.conf")]


@pytest.mark.parametrize(("role", "source", "golden"), CASES)
def test_rendered_config_matches_golden(role: Role, source: str, golden: str, update_golden: bool) -> None:
    text = render(load(ROOT / source), role=role, command=["/usr/local/bin/dyncast"],
                  config_path=f"/etc/dyncast/{role}.yml")
    target = ROOT / golden
    if update_golden:
        target.write_text(text)
    assert target.read_text() == text, f"{golden} differs from the renderer: rerun with --update-golden"
