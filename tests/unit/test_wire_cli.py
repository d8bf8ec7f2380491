"""`dyncast wire encode|decode` through the real entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dyncast_bgp.cli import main

EXAMPLE = ["cpu_utilization=37.5", "active_sessions=120", "state=draining,canary", "version=7"]
# Worked out by hand in tests/golden/wire_vectors.json.
EXAMPLE_LINE = ("extended-community [ 0x8301228042160000 0x8304048000000078 0x8330000000000003 "
                "0x8331000000000007 ]\n")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["wire", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_encode_prints_the_exabgp_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "encode", *EXAMPLE) == (0, EXAMPLE_LINE, "")


def test_encode_with_type_link_bandwidth_and_sources_in_any_order(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "encode", "cpu_utilization=37.5", "--source", "estimated",
                         "--source", "capacity=nominal", "capacity=1000", "--type", "0x84",
                         "--link-bandwidth", "65001:1250000")
    assert (code, err) == (0, "")
    # cpu: source estimated (1) -> header 00|1|0001|001|00|0000 = 0x2240; capacity stays nominal (0x0600);
    # state with no flags; link bandwidth 65001 (0xfde9) at 1250000 bytes/s (0x49989680) comes last.
    assert out == ("extended-community [ 0x8401224042160000 0x84060600000003e8 0x8430000000000000 "
                   "0x4004fde949989680 ]\n")


def test_encode_state_none_and_no_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "encode", "state=none") == (0, "extended-community [ 0x8330000000000000 ]\n", "")


@pytest.mark.parametrize(("tokens", "named", "reason"), [
    (["cpu_utilization=abc"], "cpu_utilization=abc", "not a number"),
    (["cpu_utilization=nan"], "cpu_utilization=nan", "not a finite number"),
    (["cpu_utilization=101"], "cpu_utilization=101", "out of range"),
    (["active_sessions=-1"], "active_sessions=-1", "out of range"),
    (["bogus=1"], "bogus=1", "unknown metric"),
    (["cpu_utilization"], "cpu_utilization", "expected NAME=VALUE"),
    (["state=draining,sleepy"], "state=draining,sleepy", "unknown state flag 'sleepy'"),
    (["version=7.5"], "version=7.5", "not an integer"),
    (["version=4294967296"], "version=4294967296", "32 bits"),
    (["cpu_utilization=1", "cpu_utilization=2"], "cpu_utilization=2", "given twice"),
    (["--type", "0x100"], "0x100", "one octet"),
    (["--type", "eighty"], "eighty", "not an integer"),
    (["--source", "guessed"], "guessed", "unknown source"),
    (["--source", "bogus=measured"], "bogus=measured", "unknown metric"),
    (["--link-bandwidth", "65001"], "65001", "AS:BYTES_PER_S"),
    (["--link-bandwidth", "70000:1"], "70000:1", "0-65535"),
    (["--link-bandwidth", "65001:fast"], "65001:fast", "not a number"),
])
def test_encode_bad_tokens_exit_2_naming_the_token(capsys: pytest.CaptureFixture[str], tokens: list[str],
                                                   named: str, reason: str) -> None:
    code, out, err = run(capsys, "encode", "queued_requests=3", *tokens)
    assert (code, out) == (2, "")
    assert err.startswith(f"dyncast wire encode: {named}: ")
    assert reason in err


def test_encode_reports_every_bad_token(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "encode", "cpu_utilization=abc", "bogus=1", "state=x")
    assert (code, out) == (2, "")
    assert [line.split(": ")[1] for line in err.splitlines()] == ["cpu_utilization=abc", "bogus=1", "state=x"]


def test_decode_prints_one_json_object_per_community(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "decode", "0x8301228042160000", "0x4004fde949989680", "0x0002fde900000064")
    assert (code, err) == (0, "")
    cpu, bandwidth, opaque = (json.loads(line) for line in out.splitlines())
    assert cpu == {"kind": "metric", "hex": "0x8301228042160000", "type": "0x83", "subtype": "0x01",
                   "metric": "cpu_utilization", "level": "raw", "format": "float32", "unit": "percent",
                   "source": "measured", "statistic": "current", "value": 37.5, "problems": []}
    assert (bandwidth["kind"], bandwidth["asn"], bandwidth["bytes_per_second"]) == ("link-bandwidth", 65001,
                                                                                     1250000.0)
    assert (opaque["kind"], opaque["type"], opaque["subtype"]) == ("opaque", "0x00", "0x02")


def test_decode_accepts_exabgp_json_decimal(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "9453055617850671107")  # = 0x8330000000000003
    assert code == 0
    assert json.loads(out)["hex"] == "0x8330000000000003"
    assert json.loads(out)["value"] == 3


def test_decode_type_option_selects_metric_types(capsys: pytest.CaptureFixture[str]) -> None:
    _, default, _ = run(capsys, "decode", "0x9004048000000078")
    _, chosen, _ = run(capsys, "decode", "--type", "0x90", "0x9004048000000078")
    assert json.loads(default)["kind"] == "opaque"
    assert json.loads(chosen)["metric"] == "active_sessions"


def test_decode_summary_is_what_a_router_reads(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "decode", "--summary", "0x8301228042160000", "0x8301028000000026",
                       "0x8330000000000003", "0x4004fde949989680")
    assert code == 0
    summary = json.loads(out.splitlines()[-1])
    assert summary["metrics"] == {"cpu_utilization": 37.5}
    assert summary["flags"] == ["draining", "canary"]
    assert summary["link_bandwidth"] == 1250000.0
    assert summary["unknown"] == ["0x4004fde949989680"]
    assert len(summary["problems"]) == 1 and "duplicate" in summary["problems"][0]


@pytest.mark.parametrize(("token", "reason"), [
    ("0x83", "expected 16 hex digits, got 2"),
    ("0x83010000000000zz", "not hexadecimal"),
    ("0x8301 00000000000", "not hexadecimal"),
    ("hello", "expected 0x"),
    ("-1", "expected 0x"),
    ("18446744073709551616", "64-bit"),
])
def test_decode_bad_tokens_exit_2_naming_the_token(capsys: pytest.CaptureFixture[str], token: str,
                                                   reason: str) -> None:
    code, out, err = run(capsys, "decode", "0x8301228042160000", token)
    assert (code, out) == (2, "")
    assert err.startswith(f"dyncast wire decode: {token}: ")
    assert reason in err


def test_installed_entry_point() -> None:
    dyncast = Path(sys.executable).with_name("dyncast")
    assert dyncast.exists(), f"{dyncast} missing: install the package (pip install -e .)"
    done = subprocess.run([str(dyncast), "wire", "encode", *EXAMPLE], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout, done.stderr) == (0, EXAMPLE_LINE, "")
    bad = subprocess.run([str(dyncast), "wire", "encode", "cpu_utilization=abc"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == "dyncast wire encode: cpu_utilization=abc: not a number\n"
