"""The agent's control socket: verbs on AgentState (pure), and the real server over a real unix socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.agent import control
from dyncast_bgp.agent.instance import Admin
from dyncast_bgp.agent.runtime import AgentRuntime
from dyncast_bgp.agent.state import AgentState, InstanceId
from dyncast_bgp.config.loader import ConfigError, parse
from dyncast_bgp.ctl.client import ClientError, call
from dyncast_bgp.ctl.protocol import MAX_LINE, Request
from dyncast_bgp.ctl.server import ControlSocketError, serve_control
from dyncast_bgp.model import StateFlag
from dyncast_bgp.wire.community import decode
from dyncast_bgp.wire.metrics import decode_metrics
from tests.unit.test_agent_runtime import RecordingWriter

CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent:
  publish: {min_interval: 1, refresh_interval: 30}
  %(control)s
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11, capacity: 1000, static: {cpu_utilization: 40}}
      - {name: b, binding: 198.51.100.12, state: canary, static: {cpu_utilization: 10}}
  - name: dns
    dsid: 203.0.113.53
    instances:
      - {name: a, binding: 198.51.100.21, static: {cpu_utilization: 5}}
"""

WEB_A, WEB_B, DNS_A = InstanceId("web", "a"), InstanceId("web", "b"), InstanceId("dns", "a")


def make_state() -> AgentState:
    return AgentState(parse(CONFIG % {"control": ""}))


def request(verb: str, instance: str | None = None, service: str | None = None) -> Request:
    args = {name: value for name, value in (("instance", instance), ("service", service)) if value is not None}
    return Request(verb, args)


# ------------------------------------------------------------ naming


def test_names_resolve_qualified_or_bare_when_unique() -> None:
    state = make_state()
    assert control.resolve(state, "web/a", None) == WEB_A
    assert control.resolve(state, "b", None) == WEB_B
    assert control.resolve(state, "a", "dns") == DNS_A


def test_ambiguous_bare_name_lists_the_candidates() -> None:
    message = control.resolve(make_state(), "a", None)
    assert isinstance(message, str)
    assert "ambiguous" in message and "dns/a, web/a" in message


def test_unknown_instance_lists_what_is_known_and_service_given_twice_is_refused() -> None:
    state = make_state()
    unknown = control.resolve(state, "web/zz", None)
    assert isinstance(unknown, str) and "'web/zz'" in unknown and "web/a" in unknown
    twice = control.resolve(state, "web/a", "web")
    assert isinstance(twice, str) and "request.service" in twice


# ------------------------------------------------------------ transitions


def test_drain_undrain_withdraw_restore_go_through_set_admin() -> None:
    state = make_state()
    applied = control.apply(state, request("drain", "web/a"))
    assert applied.transition == control.Transition(WEB_A, Admin.ACTIVE, Admin.DRAINING)
    assert state.status(WEB_A).admin is Admin.DRAINING
    again = control.apply(state, request("drain", "web/a"))
    assert again.transition is not None and not again.transition.changed
    control.apply(state, request("undrain", "web/a"))
    assert state.status(WEB_A).admin is Admin.ACTIVE
    control.apply(state, request("withdraw", "web/a"))
    assert state.status(WEB_A).admin is Admin.WITHDRAWN
    control.apply(state, request("restore", "web/a"))
    assert state.status(WEB_A).admin is Admin.ACTIVE


def test_undrain_and_restore_return_a_configured_canary_to_canary() -> None:
    state = make_state()
    control.apply(state, request("drain", "b"))
    assert state.status(WEB_B).admin is Admin.DRAINING
    control.apply(state, request("undrain", "b"))
    assert state.status(WEB_B).admin is Admin.CANARY
    control.apply(state, request("withdraw", "b"))
    control.apply(state, request("restore", "b"))
    assert state.status(WEB_B).admin is Admin.CANARY


@pytest.mark.parametrize(("setup", "verb", "hint"), [
    ("withdraw", "drain", "restore"), ("withdraw", "undrain", "restore"), ("drain", "restore", "undrain")])
def test_a_verb_that_does_not_apply_says_which_one_does_and_changes_nothing(setup: str, verb: str,
                                                                            hint: str) -> None:
    state = make_state()
    control.apply(state, request(setup, "web/a"))
    before = state.status(WEB_A)
    applied = control.apply(state, request(verb, "web/a"))
    assert applied.error is not None and f"`{hint}`" in applied.error
    assert state.status(WEB_A) == before


def test_drained_instance_is_planned_with_the_draining_flag_and_undrain_clears_it() -> None:
    state = make_state()
    state.plan(0.0)
    control.apply(state, request("drain", "web/a"))
    drained = [c for c in state.plan(5.0) if str(c.next_hop) == "198.51.100.11"]
    assert len(drained) == 1 and flags_of_command(drained[0]) == StateFlag.DRAINING
    control.apply(state, request("undrain", "web/a"))
    back = [c for c in state.plan(10.0) if str(c.next_hop) == "198.51.100.11"]
    assert len(back) == 1 and flags_of_command(back[0]) == StateFlag.NONE


def flags_of_command(command: Any) -> StateFlag:
    return decode_metrics([decode(c.pack()) for c in command.communities]).metrics.flags


def test_instances_view_shows_admin_health_published_and_metrics() -> None:
    state = make_state()
    state.plan(0.0)
    views = {f"{v['service']}/{v['instance']}": v for v in
             control.answer(state, request("instances"), control.Applied(), 0.0, {})["instances"]}
    assert set(views) == {"web/a", "web/b", "dns/a"}
    assert views["web/a"] == {
        "service": "web", "instance": "a", "dbid": "198.51.100.11", "path_id": 1, "admin": "active",
        "configured_admin": "active", "health": "healthy", "health_detail": "no health check", "withheld": None,
        "published": True, "published_flags": [], "flags": [],
        "metrics": {"capacity": 1000.0, "cpu_utilization": 40.0}}
    assert views["web/b"]["flags"] == ["canary"] and views["web/b"]["path_id"] == 2


# ------------------------------------------------------------ config


def test_config_control_socket_is_off_by_default_and_mode_reads_octal() -> None:
    assert make_state() is not None
    config = parse(CONFIG % {"control": ""})
    assert config.agent.control_socket is None and config.agent.control_socket_mode == 0o660
    for written, mode in (("0600", 0o600), ('"0640"', 0o640), ("0o600", 0o600)):
        text = CONFIG % {"control": f"control_socket: /run/x.sock\n  control_socket_mode: {written}"}
        assert parse(text).agent.control_socket_mode == mode, written


@pytest.mark.parametrize("line", ["control_socket: run/x.sock", "control_socket: /run/" + "x" * 120,
                                  "control_socket_mode: 0o1777", "control_socket_mode: rw"])
def test_config_rejects_bad_control_socket_settings(line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(CONFIG % {"control": line})
    assert "agent.control_socket" in str(caught.value)


# ------------------------------------------------------------ the server, over a real socket


async def no_replies(stop: asyncio.Event) -> AsyncIterator[str]:
    await stop.wait()
    return
    yield ""  # pragma: no cover  (makes this an async generator)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


Scenario = Callable[[AgentRuntime, RecordingWriter, FakeClock, Path], Awaitable[None]]


def run_agent(tmp_path: Path, scenario: Scenario) -> None:
    sock = tmp_path / "agent.sock"

    async def main() -> None:
        writer, clock, stop = RecordingWriter(), FakeClock(), asyncio.Event()
        config = parse(CONFIG % {"control": f"control_socket: {sock}\n  control_socket_mode: 0o600"})
        runtime = AgentRuntime(config, writer=writer, replies=no_replies(stop), clock=clock)
        task = asyncio.create_task(runtime.run())
        try:
            await until(lambda: sock.exists() and len(writer.lines) >= 3)
            await scenario(runtime, writer, clock, sock)
        finally:
            runtime.stopping.set()
            stop.set()
            await asyncio.wait_for(task, 10)
        assert not sock.exists(), "the socket file is removed on exit"

    asyncio.run(main())


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def ctl(sock: Path, verb: str, instance: str | None = None) -> dict[str, Any]:
    return await asyncio.to_thread(call, sock, request(verb, instance), timeout=5.0)


async def raw_exchange(sock: Path, payload: bytes) -> list[dict[str, Any]]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    answers = [json.loads(line) for line in (await reader.read()).splitlines()]
    writer.close()
    await writer.wait_closed()
    return answers


def announces_for(writer: RecordingWriter, dbid: str) -> list[str]:
    return [line for line in writer.lines if line.startswith("announce") and f"next-hop {dbid} " in line]


def flags_of_line(line: str) -> StateFlag:
    hexes = line.split("extended-community [ ")[1].split(" ]", maxsplit=1)[0].split()
    return decode_metrics([decode(bytes.fromhex(h[2:])) for h in hexes]).metrics.flags


def test_drain_over_the_socket_is_written_before_the_answer_and_undrain_clears_it(tmp_path: Path) -> None:
    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, clock: FakeClock, sock: Path) -> None:
        assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600
        assert flags_of_line(announces_for(writer, "198.51.100.11")[-1]) == StateFlag.NONE
        clock.now += 10  # past min_interval: nothing holds the change back
        answer = await ctl(sock, "drain", "web/a")
        assert answer["ok"] and answer["changed"] and (answer["from"], answer["to"]) == ("active", "draining")
        assert answer["instance"]["published_flags"] == ["draining"]
        assert flags_of_line(announces_for(writer, "198.51.100.11")[-1]) == StateFlag.DRAINING  # already written
        clock.now += 10
        answer = await ctl(sock, "undrain", "web/a")
        assert answer["ok"] and answer["to"] == "active" and answer["instance"]["published_flags"] == []
        assert flags_of_line(announces_for(writer, "198.51.100.11")[-1]) == StateFlag.NONE
        clock.now += 10
        assert (await ctl(sock, "withdraw", "dns/a"))["instance"]["published"] is False
        assert any(line.startswith("withdraw route 203.0.113.53/32") for line in writer.lines)
        status = (await ctl(sock, "status"))["status"]
        assert status["admin_changes"] == 3 and status["instances"]["withdrawn"] == 1
        assert runtime.counters.admin_changes == 3

    run_agent(tmp_path, scenario)


def test_malformed_requests_get_errors_and_the_connection_and_server_keep_going(tmp_path: Path) -> None:
    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, clock: FakeClock, sock: Path) -> None:
        before = list(writer.lines)
        payload = (b"not json\n" + b"[1,2]\n" + b'{"verb": "dran", "instance": "web/a"}\n'
                   + b'{"verb": "drain"}\n' + b'{"verb": "drain", "instance": 7}\n'
                   + b'{"verb": "drain", "instance": "web/a", "force": true}\n'
                   + b"x" * (MAX_LINE + 10) + b"\n" + b"\xff\xfe\n" + b'{"verb": "drain", "instance": "a"}\n'
                   + b'{"verb": "status"}')  # the last one without its newline: still answered at end of input
        answers = await raw_exchange(sock, payload)
        assert [a["ok"] for a in answers] == [False] * 9 + [True]
        errors = [a["error"] for a in answers[:9]]
        assert "invalid JSON at column 1" in errors[0]
        assert "must be a JSON object, not an array" in errors[1]
        assert "unknown verb 'dran'" in errors[2]
        assert "request.instance: missing" in errors[3]
        assert "request.instance: expected a string, got an integer" in errors[4]
        assert "unknown field 'force'" in errors[5]
        assert f"longer than the limit of {MAX_LINE}" in errors[6]
        assert "not UTF-8 at byte 0" in errors[7]
        assert "ambiguous" in errors[8] and "dns/a, web/a" in errors[8]
        assert answers[9]["status"]["control_rejected"] == 9
        assert writer.lines == before and runtime.state.status(WEB_A).admin is Admin.ACTIVE
        assert (await ctl(sock, "instances"))["ok"]  # the server is still there

    run_agent(tmp_path, scenario)


def test_stale_socket_is_replaced_and_a_live_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening, then closed: what a killed agent leaves behind
    stale.close()

    async def handle(req: Request) -> dict[str, Any]:
        return {"ok": True, "verb": req.verb}

    async def main() -> None:
        server = await serve_control(path, mode=0o660, verbs=control.VERBS, handle=handle)
        try:
            assert (await asyncio.to_thread(call, path, Request("status")))["verb"] == "status"
            with pytest.raises(ControlSocketError, match="another process is listening"):
                await serve_control(path, mode=0o660, verbs=control.VERBS, handle=handle)
            assert (await asyncio.to_thread(call, path, Request("status")))["ok"]  # the live one is untouched
        finally:
            await server.close()
        assert not path.exists()

    asyncio.run(main())
    path.write_text("not a socket")
    with pytest.raises(ControlSocketError, match="not a socket"):
        asyncio.run(serve_control(path, mode=0o660, verbs=control.VERBS, handle=handle))
    assert path.read_text() == "not a socket"


def test_handler_exception_is_answered_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "ctl.sock"

    async def handle(req: Request) -> dict[str, Any]:
        if req.verb == "status":
            raise RuntimeError("boom")
        return {"ok": True}

    async def main() -> None:
        server = await serve_control(path, mode=0o660, verbs=control.VERBS, handle=handle)
        try:
            answers = await raw_exchange(path, b'{"verb":"status"}\n{"verb":"instances"}\n')
            assert answers[0] == {"ok": False, "error": "internal error handling 'status': RuntimeError: boom"}
            assert answers[1] == {"ok": True}
        finally:
            await server.close()

    asyncio.run(main())


def test_client_says_when_there_is_no_socket(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="no control socket"):
        call(tmp_path / "missing.sock", Request("status"))


def test_agent_without_control_socket_opens_none(tmp_path: Path) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        runtime = AgentRuntime(parse(CONFIG % {"control": ""}), writer=RecordingWriter(), replies=no_replies(stop))
        task = asyncio.create_task(runtime.run())
        await asyncio.sleep(0)
        runtime.stopping.set()
        stop.set()
        await asyncio.wait_for(task, 10)
        assert runtime.control_server is None

    asyncio.run(main())
    assert list(tmp_path.iterdir()) == []
