"""The desired-state file and `dyncast dataplane apply | show | evict | cleanup` (over the fake kernel)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from dyncast_bgp.dataplane import commands
from dyncast_bgp.dataplane.desired import Affinity, Encap
from dyncast_bgp.dataplane.fileformat import FileError, parse
from dyncast_bgp.dataplane.linux import LinuxDataplane
from tests.unit.test_dataplane_fake import FakeKernel

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "dataplane"

GOOD = """
services:
  - dsid: 203.0.113.10
    affinity: client
    affinity_timeout: 30
    instances:
      - {binding: 192.0.2.11, name: a, weight: 0.7}
      - {binding: 192.0.2.12, weight: 0.3, forwarding: {mode: gre, local: 198.51.100.1}}
"""


def test_file_defaults_and_forwarding() -> None:
    desired = parse(GOOD)
    (service,) = desired.services
    assert str(service.service) == "203.0.113.10/32" and service.affinity is Affinity.CLIENT
    first, second = service.instances
    assert first.forwarding.mode is Encap.DIRECT and str(first.forwarding.next_hop) == "192.0.2.11"
    assert second.forwarding.mode is Encap.GRE and str(second.forwarding.remote) == "192.0.2.12"


def test_json_is_accepted_too() -> None:
    text = json.dumps({"services": [{"dsid": "2001:db8::10", "instances": [{"binding": "2001:db8::1", "weight": 1}]}]})
    assert str(parse(text).services[0].service) == "2001:db8::10/128"


@pytest.mark.parametrize(("text", "where"), [
    ("services: [{dsid: 203.0.113.10/33, instances: []}]", "services[0].dsid"),
    ("services: [{dsid: 203.0.113.10, instances: [{binding: 192.0.2.1, weight: -1}]}]",
     "services[0].instances[0].weight"),
    ("services: [{dsid: 203.0.113.10, instances: [{binding: 192.0.2.x, weight: 1}]}]",
     "services[0].instances[0].binding"),
    ("services: [{dsid: 203.0.113.10, affinity: sticky}]", "services[0].affinity"),
    ("services: [{dsid: 203.0.113.10, instances: [{binding: 192.0.2.1, weight: 1, colour: red}]}]",
     "services[0].instances[0].colour"),
    ("services: [{dsid: 203.0.113.10}, {dsid: 203.0.113.10/32}]", "services[1].dsid"),
    ("services: [{dsid: 203.0.113.10, instances: [{binding: 192.0.2.1, weight: 1}, {binding: 192.0.2.1, weight: 1}]}]",
     "services[0]: 203.0.113.10/32: an instance is listed twice"),
    ("services: [{dsid: 203.0.113.10, instances: [{binding: 192.0.2.1, weight: 1, forwarding: {mode: srv6}}]}]",
     "services[0].instances[0]: srv6 forwarding needs an IPv6 SID"),
    ("[1, 2]", "mapping"),
    ("services: [", "invalid YAML"),
])
def test_file_errors_name_the_field(text: str, where: str) -> None:
    with pytest.raises(FileError) as caught:
        parse(text, "f.yml")
    assert where in str(caught.value)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    fake = FakeKernel(allow_force=True)

    def backend(args: argparse.Namespace) -> LinuxDataplane:
        return LinuxDataplane(runner=fake)

    monkeypatch.setattr(commands, "backend", backend)
    return fake


def test_apply_installs_and_reports(kernel: FakeKernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "desired.yml"
    path.write_text(GOOD)
    assert commands.main(["apply", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] and out["details"]["instances_added"] == 2
    assert any("dc_s_203_0_113_10_32" in script for script in kernel.nft_scripts())


def test_apply_refuses_bad_files_with_exit_2(kernel: FakeKernel, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("services: [{dsid: 0.0.0.0/0, instances: [{binding: 192.0.2.1, weight: 1}]}]")
    assert commands.main(["apply", str(path)]) == 2
    assert "default prefix" in capsys.readouterr().err
    assert kernel.writes() == []
    assert commands.main(["apply", str(tmp_path / "missing.yml")]) == 2


def test_show_renders_the_installed_state(kernel: FakeKernel, capsys: pytest.CaptureFixture[str]) -> None:
    kernel.listings.update({"nft table": (GOLDEN / "readback_table.json").read_text(),
                            "rules4": (GOLDEN / "readback_rules4.json").read_text(),
                            "rules6": (GOLDEN / "readback_rules6.json").read_text()})
    assert commands.main(["show", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [s["service"] for s in data["services"]] == ["198.51.100.0/24", "203.0.113.10/32", "203.0.113.20/32",
                                                        "2001:db8:d::10/128"]
    assert data["services"][1]["instances"][0]["share"] == 0.7
    assert commands.main(["show"]) == 0
    text = capsys.readouterr().out
    assert "203.0.113.20/32  affinity client timeout 30s" in text and "mark 0x44430004" in text


def test_evict_and_cleanup(kernel: FakeKernel, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["evict", "not-a-key"]) == 2
    assert commands.main(["evict", "203.0.113.10/32@192.0.2.11"]) == 2  # nothing installed: unknown instance
    assert "unknown instance" in capsys.readouterr().err
    assert commands.main(["cleanup"]) == 0
    assert "table absent" in capsys.readouterr().out


def test_register_adds_the_dataplane_command() -> None:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["dataplane", "--netns", "x", "show", "--json"])
    assert args.netns == "x" and args.json and args.handler is not None
