"""The registration API over a real TCP socket on loopback: AgentRuntime, HTTP, the state file, `dyncast ctl`."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dyncast_bgp.agent.runtime import AgentRuntime
from dyncast_bgp.config.loader import parse
from dyncast_bgp.ctl.apiclient import ApiClient
from tests.unit.test_agent_control import no_replies, until
from tests.unit.test_agent_runtime import RecordingWriter

CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65001, add_path: true}
agent:
  publish: {min_interval: 0.05, refresh_interval: 30}
  api: {listen: "127.0.0.1:0", state_file: %(state)s, pool: "203.0.113.0/28", drain_deadline: 5}
services:
  - name: web
    dsid: 203.0.113.10
    instances:
      - {name: a, binding: 198.51.100.11, static: {cpu_utilization: 40}}
"""


Scenario = Callable[[AgentRuntime, RecordingWriter, ApiClient], Awaitable[None]]


def run_agent(tmp_path: Path, scenario: Scenario) -> None:
    async def main() -> None:
        writer, stop = RecordingWriter(), asyncio.Event()
        runtime = AgentRuntime(parse(CONFIG % {"state": tmp_path / "registrations.json"}), writer=writer,
                               replies=no_replies(stop))
        task = asyncio.create_task(runtime.run())
        try:
            await until(lambda: runtime.api_server is not None and bool(writer.lines))
            assert runtime.api_server is not None
            await scenario(runtime, writer, ApiClient(f"127.0.0.1:{runtime.api_server.port}", timeout=5))
        finally:
            runtime.stopping.set()
            stop.set()
            await asyncio.wait_for(task, 10)

    asyncio.run(main())


async def call(client: ApiClient, method: str, path: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(client.call, method, path, body)


async def raw(port: int, data: bytes) -> tuple[int, dict[str, Any]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    writer.close()
    head, _, payload = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(payload)


def announced(writer: RecordingWriter, dbid: str) -> bool:
    return any(line.startswith("announce") and f"next-hop {dbid} " in line for line in writer.lines)


def withdrawn(writer: RecordingWriter, dbid: str) -> bool:
    return any(line.startswith("withdraw") and f"next-hop {dbid}" in line for line in writer.lines)


def test_register_update_deregister_over_http_and_restart(tmp_path: Path) -> None:
    async def first(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        status, answer = await call(client, "POST", "/v1/instances",
                                    {"service": "web", "name": "b", "binding": "198.51.100.12", "capacity": 100})
        assert status == 201, answer
        assert announced(writer, "198.51.100.12"), "written before the answer"
        status, answer = await call(client, "POST", "/v1/instances",
                                    {"service": "video", "name": "v", "binding": "198.51.100.13"})
        assert status == 201 and answer["instance"]["dsid"].startswith("203.0.113.")
        status, answer = await call(client, "PUT", "/v1/instances/web/b", {"binding": "198.51.100.12",
                                                                          "capacity": 200})
        assert status == 200 and answer["instance"]["metrics"]["capacity"] == 200.0

    run_agent(tmp_path, first)
    saved = json.loads((tmp_path / "registrations.json").read_text())
    assert [r["name"] for r in saved["registrations"]] == ["v", "b"]

    async def second(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        await until(lambda: announced(writer, "198.51.100.12") and announced(writer, "198.51.100.13"))
        status, answer = await call(client, "GET", "/v1/instances/web/b")
        assert status == 200 and answer["instance"]["metrics"]["capacity"] == 200.0
        status, answer = await call(client, "DELETE", "/v1/instances/video/v?immediate=true")
        assert status == 200 and withdrawn(writer, "198.51.100.13")
        status, answer = await call(client, "DELETE", "/v1/instances/web/b?deadline=0.2")
        assert status == 202 and answer["instance"]["admin"] == "draining"
        await until(lambda: withdrawn(writer, "198.51.100.12"))  # the deadline wakes the owner by itself
        status, answer = await call(client, "GET", "/v1/instances")
        assert [i["instance"] for i in answer["instances"]] == ["a"]

    run_agent(tmp_path, second)
    assert json.loads((tmp_path / "registrations.json").read_text())["registrations"] == []


def test_openapi_and_malformed_requests(tmp_path: Path) -> None:
    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        assert runtime.api_server is not None
        port = runtime.api_server.port
        status, spec = await call(client, "GET", "/openapi.json")
        assert status == 200 and spec["openapi"].startswith("3.") and "/v1/instances" in spec["paths"]
        status, answer = await raw(port, b"POST /v1/instances HTTP/1.1\r\nContent-Length: 5\r\n\r\n{nope")
        assert status == 400 and "invalid JSON" in answer["error"]
        status, answer = await raw(port, b"GARBAGE\r\n\r\n")
        assert status == 400
        status, answer = await raw(port, b"POST /v1/instances HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n")
        assert status == 413
        status, answer = await raw(port, b"POST /v1/instances HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert status == 411
        status, answer = await raw(port, b"GET /v1/instances HTTP/1.1\r\nX: " + b"y" * 20000 + b"\r\n\r\n")
        assert status == 431
        body = b"[" * 100000
        status, answer = await raw(port, b"POST /v1/instances HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body)
                                   + body)
        assert status == 400
        status, answer = await call(client, "POST", "/v1/instances", {"service": "web", "name": "b",
                                                                      "binding": "198.51.100.12", "health": {}})
        assert status == 422 and answer["fields"][0]["loc"] == "health"
        status, _ = await call(client, "GET", "/v1/instances")
        assert status == 200  # still serving

    run_agent(tmp_path, scenario)


def test_ctl_register_and_deregister(tmp_path: Path) -> None:
    registration = tmp_path / "b.yaml"
    registration.write_text("service: web\nname: b\nbinding: 198.51.100.12\ncapacity: 100\n")

    def ctl(address: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dyncast_bgp.cli", "ctl", "--api", address, *args],
                              capture_output=True, text=True, timeout=30, check=False)

    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        assert runtime.api_server is not None
        address = f"127.0.0.1:{runtime.api_server.port}"
        done = await asyncio.to_thread(ctl, address, "register", str(registration))
        assert done.returncode == 0, done.stderr
        assert "web/b" in done.stdout and "D-SID 203.0.113.10/32" in done.stdout
        registration.write_text("service: web\nname: b\nbinding: 198.51.100.12\ncapacity: 300\n")
        done = await asyncio.to_thread(ctl, address, "register", str(registration))  # exists: an update
        assert done.returncode == 0, done.stderr
        registration.write_text("service: web\nname: c\nbinding: 198.51.100.12\n")
        done = await asyncio.to_thread(ctl, address, "register", str(registration))
        assert done.returncode == 2 and "duplicate D-BID" in done.stderr
        done = await asyncio.to_thread(ctl, address, "deregister", "b", "--immediate")
        assert done.returncode == 0 and "removed" in done.stdout, done.stderr
        assert withdrawn(writer, "198.51.100.12")

    run_agent(tmp_path, scenario)
