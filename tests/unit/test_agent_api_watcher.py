"""examples/k8s_endpoints_watcher.py: pure planning, and whole runs against an in-process agent's API."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from dyncast_bgp.agent.runtime import AgentRuntime
from dyncast_bgp.ctl.apiclient import ApiClient
from tests.unit.test_agent_api_socket import announced, run_agent, withdrawn
from tests.unit.test_agent_control import until
from tests.unit.test_agent_runtime import RecordingWriter

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "k8s_endpoints_watcher.py"


def load_watcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k8s_endpoints_watcher", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


watcher = load_watcher()


def short(service: str, *endpoints: tuple[str, str, bool]) -> dict[str, Any]:
    return {"service": service, "endpoints": [{"name": n, "address": a, "ready": r} for n, a, r in endpoints]}


def test_plan_registers_new_updates_changed_and_deregisters_gone() -> None:
    services, wanted = watcher.desired(short("web", ("b", "198.51.100.12", True), ("c", "198.51.100.13", False),
                                             ("d", "198.51.100.14", True)), {"capacity": 10})
    current = {("web", "b"): {"service": "web", "name": "b", "binding": "198.51.100.12", "capacity": 10.0},
               ("web", "c"): {"service": "web", "name": "c", "binding": "198.51.100.13"},
               ("web", "x"): {"service": "web", "name": "x", "binding": "198.51.100.19"},
               ("dns", "y"): {"service": "dns", "name": "y", "binding": "198.51.100.29"}}
    actions = [(a.verb, a.key) for a in watcher.plan(current, services, wanted)]
    assert actions == [("register", ("web", "d")), ("deregister", ("web", "c")), ("deregister", ("web", "x"))]


def test_endpointslice_form_and_template_filling() -> None:
    slice_ = {"kind": "List", "items": [{"kind": "EndpointSlice",
                                         "metadata": {"labels": {"kubernetes.io/service-name": "web"}},
                                         "endpoints": [{"addresses": ["198.51.100.12"],
                                                        "conditions": {"ready": True},
                                                        "targetRef": {"name": "web-1"}}]}]}
    template = {"health": {"type": "http", "url": "http://{address}:8080/health"}}
    _, wanted = watcher.desired(slice_, template)
    assert wanted[("web", "web-1")]["health"]["url"] == "http://198.51.100.12:8080/health"


def test_sync_against_the_agent_api(tmp_path: Path) -> None:
    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        agent = watcher.Agent(f"{client.host}:{client.port}")
        first = short("web", ("b", "198.51.100.12", True), ("c", "198.51.100.13", True))
        report = await asyncio.to_thread(watcher.sync, agent, first, {"capacity": 50}, 0)
        assert report == ["register web/b: ok", "register web/c: ok"]
        assert announced(writer, "198.51.100.12") and announced(writer, "198.51.100.13")
        again = await asyncio.to_thread(watcher.sync, agent, first, {"capacity": 50}, 0)
        assert again == [], "a snapshot already applied changes nothing"
        second = short("web", ("b", "198.51.100.12", True), ("c", "198.51.100.13", False))
        report = await asyncio.to_thread(watcher.sync, agent, second, {"capacity": 50}, 0)
        assert report == ["deregister web/c: ok"]
        await until(lambda: withdrawn(writer, "198.51.100.13"))
        clash = short("web", ("e", "198.51.100.11", True))  # the config's instance a has that D-BID
        report = await asyncio.to_thread(watcher.sync, agent, clash, {}, 0)
        assert report[0].startswith("register web/e: refused 409")

    run_agent(tmp_path, scenario)


def test_the_script_reads_snapshots_on_stdin(tmp_path: Path) -> None:
    async def scenario(runtime: AgentRuntime, writer: RecordingWriter, client: ApiClient) -> None:
        lines = "\n".join(json.dumps(s) for s in (short("video", ("v1", "198.51.100.31", True)),
                                                  short("video", ("v2", "198.51.100.32", True)))) + "\n"
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(SCRIPT), "--api", f"{client.host}:{client.port}", "--deadline", "0"],
            input=lines, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == ["register video/v1: ok", "register video/v2: ok",
                                            "deregister video/v1: ok"]
        await until(lambda: withdrawn(writer, "198.51.100.31"))
        assert announced(writer, "198.51.100.32")

    run_agent(tmp_path, scenario)
