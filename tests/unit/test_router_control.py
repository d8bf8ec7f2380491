"""The router's control socket over a real unix socket, with a RouterRuntime fed ExaBGP lines."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from dyncast_bgp.cli import main
from dyncast_bgp.config.loader import parse
from dyncast_bgp.ctl.client import call
from dyncast_bgp.ctl.protocol import Request, Response
from dyncast_bgp.ctl.render import render
from dyncast_bgp.dataplane.desired import ApplyResult, DataplaneError, DesiredState
from dyncast_bgp.model import InstanceKey
from dyncast_bgp.obs.log import configure
from dyncast_bgp.router.runtime import RouterRuntime
from tests.unit.exabgp_lines import end_of_rib, peer_up, update

SVC, A, B = "203.0.113.10/32", "198.51.100.11", "198.51.100.12"
CONFIG = """
bgp: {router_id: 192.0.2.1, local_as: 65000}
router:
  apply_interval: 0.01
  startup_hold: 0
  probes: {enabled: false}
  defaults: {max_step: 1.0, min_dwell: 0, smoothing: 1.0}
  services: {"203.0.113.10/32": {latency_budget_ms: 50}}
  static_paths: [{binding: 198.51.100.11, rtt_ms: 5, loss: 0.01}, {binding: 198.51.100.12, rtt_ms: 80}]
  control_socket: %(socket)s
"""


class Feed:
    """ExaBGP lines on demand; the router runs until ``close``."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def lines(self) -> AsyncIterator[str]:
        while (line := await self.queue.get()) is not None:
            yield line

    def put(self, *lines: str) -> None:
        for line in lines:
            self.queue.put_nowait(line)

    def close(self) -> None:
        self.queue.put_nowait(None)


class CountingDataplane:
    """Counts 7 flows on every instance it was given; can be told to fail counting."""

    def __init__(self) -> None:
        self.installed: DesiredState | None = None
        self.fail = False

    def apply(self, desired: DesiredState) -> ApplyResult:
        self.installed = desired
        return ApplyResult(changed=True, seconds=0.002)

    def flow_counts(self) -> Mapping[InstanceKey, int]:
        if self.fail:
            raise DataplaneError("conntrack said no")
        if self.installed is None:
            return {}
        return {target.key: 7 for service in self.installed.services for target in service.instances}

    def evict(self, keys: Iterable[InstanceKey]) -> int:
        return 0


Session = Callable[..., Awaitable[Response]]


def with_router(tmp_path: Path, body: Callable[[RouterRuntime, Session, Feed], Awaitable[None]], *,
                dataplane: CountingDataplane | None = None, extra: str = "") -> None:
    socket_path = tmp_path / "router.sock"
    config = parse(CONFIG % {"socket": socket_path} + extra)

    async def go() -> None:
        feed = Feed()
        runtime = RouterRuntime(config, lines=feed.lines(), dataplane=dataplane)
        task = asyncio.create_task(runtime.run())

        async def ask(verb: str, **args: str) -> Response:
            return await asyncio.to_thread(call, socket_path, Request(verb, args), timeout=5.0, role="router")

        try:
            async with asyncio.timeout(10):
                while runtime.control_server is None:
                    await asyncio.sleep(0.01)
                feed.put(peer_up(1, "10.0.0.3"),
                         update(1, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000}),
                         update(1, "10.0.0.3", SVC, B, 2, metrics={"cpu_utilization": 30, "capacity": 1000}),
                         end_of_rib(1, "10.0.0.3"))
                while not (await ask("decisions"))["decisions"]:
                    await asyncio.sleep(0.01)
                await body(runtime, ask, feed)
        finally:
            feed.close()
            await asyncio.wait_for(task, timeout=10)
        assert not socket_path.exists()  # removed on stop

    asyncio.run(go())


def test_show_verbs_describe_services_instances_and_decisions(tmp_path: Path) -> None:
    async def body(runtime: RouterRuntime, ask: Session, feed: Feed) -> None:
        services = await ask("services")
        assert services["ok"] and services["role"] == "router"
        [service] = services["services"]
        assert service["service"] == SVC and service["policy"] == "weighted"
        assert service["fallback_policy"] == "least-cost" and service["fallback"] is None
        assert service["eligible"] == 1 and service["instances"] == 2
        assert service["weights"] == {A: 1.0}  # B is over the 50 ms latency budget

        instances = {view["instance"]: view for view in (await ask("instances"))["instances"]}
        assert instances[A]["paths"] == [{"peer": "10.0.0.3", "path_id": 1, "age": instances[A]["paths"][0]["age"],
                                          "stale": False}]
        assert instances[A]["metrics"] == {"cpu_utilization": 20.0, "capacity": 1000.0}
        assert instances[A]["path"]["rtt_mean_us"] == 5000.0 and instances[A]["path"]["loss_mean"] == 0.01
        assert instances[A]["eligible"] and instances[A]["weight"] == 1.0
        assert not instances[B]["eligible"] and "rtt over the 50 ms budget" in instances[B]["excluded"]
        assert instances[B]["weight"] == 0.0 and instances[B]["state"] == "active"
        only = await ask("instances", service=SVC)
        assert len(only["instances"]) == 2

        [decision] = (await ask("decisions"))["decisions"]
        assert decision["service"] == SVC and decision["weights"] == {A: 1.0}
        assert B in decision["excluded"] and decision["changes"] >= 1 and decision["at"].endswith("Z")

        explain = (await ask("explain", service="203.0.113.10"))["explain"]  # a bare address means /32
        assert explain["service"] == SVC and explain["policy"] == "weighted"
        by = {item["instance"]: item for item in explain["instances"]}
        assert set(by[A]["scores"]) == {"compute", "network", "overall", "source"}
        assert by[B]["excluded"] and by[A]["reason"]

        status = (await ask("status"))["status"]
        assert status["sessions"] == {"10.0.0.3": "up"} and status["paths"] == 2 and status["synced"]

        # a change shows at once: B drains (flag), A stays
        feed.put(update(2, "10.0.0.3", SVC, A, 1, metrics={"cpu_utilization": 20, "capacity": 1000}, flags=1))
        for _ in range(200):
            views = {view["instance"]: view for view in (await ask("instances"))["instances"]}
            if views[A]["state"] == "draining":
                break
            await asyncio.sleep(0.01)
        assert views[A]["flags"] == ["draining"] and not views[A]["eligible"]

    with_router(tmp_path, body)


def test_flows_come_from_the_dataplane_in_a_thread(tmp_path: Path) -> None:
    dataplane = CountingDataplane()

    async def body(runtime: RouterRuntime, ask: Session, feed: Feed) -> None:
        for _ in range(200):
            if dataplane.installed is not None:
                break
            await asyncio.sleep(0.01)
        flows = await ask("flows")
        assert flows["ok"]
        assert {(view["instance"], view["flows"]) for view in flows["flows"]} == {(A, 7), (B, 7)}
        dataplane.fail = True
        refused = await ask("flows")
        assert not refused["ok"] and "conntrack said no" in refused["error"]

    with_router(tmp_path, body, dataplane=dataplane)


def test_bad_requests_get_clear_errors_and_the_router_keeps_answering(tmp_path: Path) -> None:
    async def body(runtime: RouterRuntime, ask: Session, feed: Feed) -> None:
        for verb, args, expected in [
            ("explain", {"service": "198.51.100.0/16"}, "host bits set"),
            ("explain", {"service": "192.0.2.99/32"}, "no service '192.0.2.99/32' (known: 203.0.113.10/32)"),
            ("explain", {}, "request.service: missing"),
            ("services", {"service": SVC}, "unknown field 'service'"),
            ("drain", {"instance": "x"}, "unknown verb 'drain'"),
            ("flows", {}, "no dataplane"),
        ]:
            answer = await ask(verb, **args)
            assert not answer["ok"] and expected in answer["error"], (verb, answer)
        raw = await asyncio.to_thread(exchange_raw, runtime.control_server.path if runtime.control_server else Path(),
                                      b'{"verb": "explain", "service": 5}\n\xff\xfe\n[]\n{"verb":"services"}\n')
        assert [line["ok"] for line in raw] == [False, False, False, True]
        assert "expected a string" in raw[0]["error"]
        assert (await ask("services"))["ok"]
        status = (await ask("status"))["status"]
        assert status["control_rejected"] >= 9

    with_router(tmp_path, body)


def exchange_raw(path: Path, data: bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
    """Send ``data`` as is to the control socket at ``path``; every answer line, decoded."""
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return [json.loads(line) for line in received.splitlines()]


def test_dyncast_ctl_prints_tables_and_json_for_the_router(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    socket_path = str(tmp_path / "router.sock")
    results: dict[str, tuple[int, str]] = {}
    configure("warning", stream=io.StringIO())  # the router's logs must not mix with what ctl prints

    async def body(runtime: RouterRuntime, ask: Session, feed: Feed) -> None:
        capsys.readouterr()
        for name, argv in {"services": ["show", "services"], "instances": ["show", "instances"],
                           "decisions": ["show", "decisions"], "explain": ["explain", SVC],
                           "status": ["show", "status"], "json": ["show", "services", "--json"],
                           "flows": ["flows"], "bad": ["explain", "192.0.2.1"]}.items():
            code = await asyncio.to_thread(main, ["ctl", "--socket", socket_path, *argv])
            out, err = capsys.readouterr()
            results[name] = (code, out + err)

    with_router(tmp_path, body)
    code, text = results["services"]
    assert code == 0 and text.splitlines()[0].split() == ["SERVICE", "POLICY", "FALLBACK", "STATUS", "ELIGIBLE",
                                                          "WEIGHTS"]
    assert f"{A}=1.000" in text and "1/2" in text
    code, text = results["instances"]
    assert code == 0 and "10.0.0.3#1" in text and "excluded:" in text and "5.00" in text
    assert results["decisions"][0] == 0 and SVC in results["decisions"][1]
    code, text = results["explain"]
    assert code == 0 and text.startswith(f"service {SVC}  policy weighted") and "L2 OVERALL" in text
    assert results["status"][0] == 0 and "sessions:" in results["status"][1]
    code, text = results["json"]
    assert code == 0 and json.loads(text)["services"][0]["service"] == SVC
    assert results["flows"][0] == 2 and "no dataplane" in results["flows"][1]
    assert results["bad"][0] == 2 and "error: request.service" in results["bad"][1]


def test_router_verbs_default_to_the_router_socket_and_the_agent_keeps_its_own() -> None:
    import argparse  # noqa: PLC0415

    from dyncast_bgp.ctl.commands import build_request, for_router, register, socket_path  # noqa: PLC0415

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    for argv, path, verb in [(["ctl", "show", "services"], "/run/dyncast/router.sock", "services"),
                             (["ctl", "explain", SVC], "/run/dyncast/router.sock", "explain"),
                             (["ctl", "flows"], "/run/dyncast/router.sock", "flows"),
                             (["ctl", "--router", "status"], "/run/dyncast/router.sock", "status"),
                             (["ctl", "status"], "/run/dyncast/agent.sock", "status"),
                             (["ctl", "instances"], "/run/dyncast/agent.sock", "instances"),
                             (["ctl", "--socket", "/tmp/x.sock", "show", "decisions"], "/tmp/x.sock", "decisions")]:
        args = parser.parse_args(argv)
        assert socket_path(args) == path, argv
        assert build_request(args).verb == verb
    assert for_router(parser.parse_args(["ctl", "show", "instances"]))
    assert build_request(parser.parse_args(["ctl", "show", "instances", "--service", SVC])).args == {"service": SVC}


def test_agent_answers_still_render_as_before() -> None:
    answer = {"ok": True, "instances": [{"service": "web", "instance": "a", "dbid": A, "admin": "active",
                                         "configured_admin": "active", "health": "healthy", "published": True,
                                         "published_flags": [], "flags": [], "metrics": {"capacity": 1000.0}}]}
    assert render("instances", answer).splitlines()[0].split()[:3] == ["INSTANCE", "D-BID", "ADMIN"]
