"""The lab service's UDP side (lab/udpservice.py) and the one-flow client (lab/udpflow.py).

Pure parts with hypothesis; then the real sockets on loopback: the service answers, stays silent while
failed and counts it; the client's file reads back into the same summary; bad arguments exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import itertools
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dyncast_bgp.lab.service import Service, ServiceConfig
from dyncast_bgp.lab.service_cli import add_commands
from dyncast_bgp.lab.udpflow import Datagram, FlowFileError, read_flow, run_flow, summarise
from dyncast_bgp.lab.udpservice import MAX_REQUEST, REQUEST_SIZE, UdpServiceError, answer_for, serve_udp

datagrams = st.lists(st.builds(Datagram, seq=st.integers(1, 10**6), t=st.floats(0, 1e9),
                               instance=st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))), max_size=60)


@given(st.binary(max_size=MAX_REQUEST + 20))
def test_an_answer_names_the_instance_echoes_the_first_word_and_is_never_larger(payload: bytes) -> None:
    answer = answer_for("vnf-a", payload)
    try:
        text = payload.decode()
    except UnicodeDecodeError:
        assert answer is None
        return
    if len(payload) > MAX_REQUEST:
        assert answer is None
        return
    words = text.split(maxsplit=1)
    expected = json.dumps({"instance": "vnf-a", "request": words[0][:32] if words else ""}, separators=(",", ":"))
    assert answer == (expected.encode() if len(expected.encode()) <= len(payload) else None)
    assert answer is None or len(answer) <= len(payload)  # no amplification


def test_a_padded_request_is_answered_and_a_short_one_is_not() -> None:
    assert json.loads(answer_for("vnf-a", b"17 ".ljust(REQUEST_SIZE, b".")) or b"{}") == {"instance": "vnf-a",
                                                                                          "request": "17"}
    assert answer_for("vnf-a", b"17") is None


@given(datagrams)
def test_summary_counts(items: list[Datagram]) -> None:
    summary = summarise(items)
    answered = [d.instance for d in items if d.instance is not None]
    assert summary.sent == len(items) and summary.answered == len(answered)
    assert set(summary.instances) == set(answered) and len(summary.instances) == len(set(answered))
    assert summary.moves == sum(1 for a, b in itertools.pairwise(answered) if a != b)
    assert summary.moves >= len(summary.instances) - 1 if answered else summary.moves == 0
    assert 0 <= summary.longest_silence <= summary.sent - summary.answered


def test_summary_of_a_flow_that_moved_once() -> None:
    flow = [Datagram(1, 0, "a"), Datagram(2, 0, None, error="timeout"), Datagram(3, 0, None),
            Datagram(4, 0, "b"), Datagram(5, 0, "b")]
    summary = summarise(flow)
    assert (summary.instances, summary.moves, summary.longest_silence, summary.answered) == (("a", "b"), 1, 2, 3)


def test_read_flow_names_the_bad_line_and_ignores_a_partial_last_one() -> None:
    start, items = read_flow(['{"start": {"local": "x"}}\n', '{"seq": 1, "t": 2.0, "instance": "a"}\n',
                              '{"seq": 2, "t"'])
    assert start == {"local": "x"} and items == [Datagram(1, 2.0, "a")]
    with pytest.raises(FlowFileError, match=r"f.jsonl:2: not a udp-flow line"):
        read_flow(['{"start": {}}\n', '{"nope": 1}\n'], origin="f.jsonl")


def test_wildcard_and_garbage_addresses_are_refused_by_name() -> None:
    async def main() -> None:
        for address, match in (("0.0.0.0", "wildcard"), ("::", "wildcard"), ("not-an-ip", "not an IP")):
            with pytest.raises(UdpServiceError, match=match):
                await serve_udp("x", [address], 0, lambda: True)
    asyncio.run(main())


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_service_answers_counts_and_stays_silent_while_failed() -> None:
    async def main() -> None:
        service = Service(ServiceConfig(name="vnf-a", host="127.0.0.1", port=0, capacity=2, service_ms=1))
        port = _free_udp_port()
        udp = await serve_udp("vnf-a", ["127.0.0.1"], port, service.udp_request)
        loop = asyncio.get_running_loop()
        try:
            def flow(count: int) -> str:
                out = io.StringIO()
                run_flow(("127.0.0.1", port), out, interval=0.01, timeout=0.3, duration=0, count=count)
                return out.getvalue()

            text = await loop.run_in_executor(None, flow, 5)
            start, items = read_flow(io.StringIO(text))
            assert start["target"] == f"127.0.0.1:{port}"
            assert [d.instance for d in items] == ["vnf-a"] * 5 and all(d.rtt_ms is not None for d in items)
            assert json.loads(text.splitlines()[-1])["summary"]["answered"] == 5
            service.fail()
            _, silent = read_flow(io.StringIO(await loop.run_in_executor(None, flow, 2)))
            assert [(d.instance, d.error) for d in silent] == [(None, "timeout")] * 2
            metrics = service.metrics()
            assert (metrics["requests_total"], metrics["errors_total"]) == (7, 2)
            assert udp.counters.answered == 5 and udp.counters.dropped["failed"] == 2
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:  # malformed: dropped, not counted
                raw.sendto(b"\xff\xfe", ("127.0.0.1", port))
                await asyncio.sleep(0.1)
            assert udp.counters.dropped["malformed"] == 1 and service.metrics()["requests_total"] == 7
        finally:
            udp.close()
            await udp.wait_closed()
    asyncio.run(asyncio.wait_for(main(), 20))


def test_flow_to_a_closed_port_records_refusals() -> None:
    out = io.StringIO()
    summary = run_flow(("127.0.0.1", _free_udp_port()), out, interval=0.01, timeout=0.2, duration=0, count=3)
    _, items = read_flow(io.StringIO(out.getvalue()))
    assert summary.answered == 0 and {d.error for d in items} <= {"refused", "timeout"} and len(items) == 3


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="lab_command"))
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv, problem", [
    (["--target", "203.0.113.10"], "expected HOST:PORT"),
    (["--target", "203.0.113.10:99999"], "expected HOST:PORT"),
    (["--target", "127.0.0.1:9", "--interval", "0"], "--interval 0.0: must be > 0"),
    (["--target", "127.0.0.1:9", "--count", "-1"], "--count -1: must be >= 0"),
])
def test_bad_udp_flow_arguments_exit_2_with_the_reason(argv: list[str], problem: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["udp-flow", *argv])
    assert args.handler(args) == 2
    assert problem in capsys.readouterr().err


def test_service_command_with_udp_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = _free_udp_port()
    with socket.socket() as tcp:
        tcp.bind(("127.0.0.1", 0))
        http_port = tcp.getsockname()[1]
    service = subprocess.Popen([sys.executable, "-m", "dyncast_bgp.cli", "lab", "service", "--name", "u1",
                                "--listen", "127.0.0.1", "--port", str(http_port), "--udp", "127.0.0.1",
                                "--udp-port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out = tmp_path / "flow.jsonl"
        done = subprocess.run([sys.executable, "-m", "dyncast_bgp.cli", "lab", "udp-flow", "--target",
                               f"127.0.0.1:{port}", "--interval", "0.1", "--timeout", "0.5", "--duration", "5",
                               "--count", "40", "--out", str(out)], capture_output=True, text=True, timeout=30,
                              check=False)
        assert done.returncode == 0, done.stderr
        _, items = read_flow(out.read_text().splitlines(keepends=True))
        assert "u1" in {d.instance for d in items}  # answered once the service had bound
    finally:
        service.terminate()
        try:
            service.wait(10)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()
    assert service.returncode == 0, service.stderr.read().decode() if service.stderr else ""
