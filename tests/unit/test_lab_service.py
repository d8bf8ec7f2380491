"""The lab service instance (dyncast_bgp.lab.service): pure parts, then the real server on loopback."""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import pytest

from dyncast_bgp.agent.sources import select_metrics
from dyncast_bgp.lab.service import (
    BadRequest,
    BusyWindow,
    Service,
    ServiceConfig,
    ServiceConfigError,
    ServiceTimes,
    WorkerPool,
    config_from_args,
    estimated_delay_us,
    parse_request_head,
    render_response,
    run_service,
)
from dyncast_bgp.lab.service_cli import add_commands

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


async def eventually(check: Callable[[], Awaitable[T]], ok: Callable[[T], bool], *, timeout: float = 5.0) -> T:
    """Bounded polling: the last observation goes into the failure."""
    deadline = time.monotonic() + timeout
    seen = await check()
    while not ok(seen):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s; last seen {seen!r}")
        await asyncio.sleep(0.02)
        seen = await check()
    return seen


class Client:
    """One keep-alive HTTP/1.1 connection, reading responses by Content-Length."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def call(self, method: str, path: str, *, extra: str = "") -> tuple[int, dict[str, str], bytes]:
        self.writer.write(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        await self.writer.drain()
        return await self.response()

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode()
        lines = head.split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await self.reader.readexactly(int(headers["content-length"]))
        return int(lines[0].split()[1]), headers, body

    async def close(self) -> None:
        self.writer.close()


async def call(port: int, method: str, path: str) -> tuple[int, dict[str, str], bytes]:
    client = await Client.open(port)
    try:
        return await client.call(method, path)
    finally:
        await client.close()


async def metrics(port: int) -> dict[str, Any]:
    status, _, body = await call(port, "GET", "/metrics")
    assert status == 200
    document: dict[str, Any] = json.loads(body)
    return document


async def started(**overrides: Any) -> Service:
    settings: dict[str, Any] = {"name": "web-a", "port": 0, "capacity": 2, "service_ms": 20.0} | overrides
    service = Service(ServiceConfig(**settings))
    await service.start()
    return service


# ---------------------------------------------------------------- pure parts


def test_parse_request_head() -> None:
    request = parse_request_head(b"POST /admin/load?busy=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
    assert (request.method, request.path, request.query, request.version) == ("POST", "/admin/load",
                                                                             {"busy": ["3"]}, "HTTP/1.1")
    assert request.headers["host"] == "x"
    assert request.content_length == 4
    assert request.keep_alive


@pytest.mark.parametrize(("head", "keep"), [
    (b"GET / HTTP/1.1\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", True),
])
def test_keep_alive_follows_version_and_connection_header(head: bytes, keep: bool) -> None:
    assert parse_request_head(head).keep_alive is keep


@pytest.mark.parametrize(("head", "status", "words"), [
    (b"GET /\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/2\r\n\r\n", 400, "request line"),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400, "header line"),
])
def test_bad_heads_are_refused_with_a_status(head: bytes, status: int, words: str) -> None:
    with pytest.raises(BadRequest, match=words) as caught:
        parse_request_head(head)
    assert caught.value.status == status


@pytest.mark.parametrize(("header", "status"), [
    ("Content-Length: x", 400), ("Content-Length: 99999999", 413), ("Transfer-Encoding: chunked", 501)])
def test_bodies_we_cannot_read_are_refused(header: str, status: int) -> None:
    request = parse_request_head(f"POST / HTTP/1.1\r\n{header}\r\n\r\n".encode())
    with pytest.raises(BadRequest) as caught:
        _ = request.content_length
    assert caught.value.status == status


def test_render_response_names_the_instance_and_length() -> None:
    data = render_response(503, b"{}", instance="web-b", keep_alive=False)
    assert data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"X-Instance: web-b\r\n" in data and b"Content-Length: 2\r\n" in data and b"Connection: close" in data
    assert data.endswith(b"\r\n\r\n{}")


def test_busy_window_is_the_time_weighted_mean_of_the_last_window() -> None:
    window = BusyWindow(1.0, now=100.0)
    assert window.mean(100.0) == 0.0
    window.set(100.0, 2)
    assert window.mean(100.5) == pytest.approx(1.0)  # 2 workers for half of the window
    window.set(100.5, 1)
    assert window.mean(101.0) == pytest.approx(1.5)  # 2 for 0.5 s, 1 for 0.5 s
    assert window.mean(101.5) == pytest.approx(1.0)
    assert window.mean(200.0) == pytest.approx(1.0)  # old steps pruned, the level holds
    with pytest.raises(ValueError, match="backwards"):
        window.set(150.0, 0)


def test_delay_estimate_counts_waiting_requests_as_at_least_their_age() -> None:
    assert estimated_delay_us([], [], 50.0) == 50_000
    assert estimated_delay_us([10.0, 30.0], [], 50.0) == 20_000
    assert estimated_delay_us([10.0], [950.0], 50.0) == 505_000  # (10 + 950 + 50) / 2


def test_service_times_fixed_and_seeded_exponential() -> None:
    assert {ServiceTimes(40.0, "fixed", None).draw() for _ in range(5)} == {40.0}
    a = ServiceTimes(40.0, "exponential", 7)
    b = ServiceTimes(40.0, "exponential", 7)
    draws = [a.draw() for _ in range(4000)]
    assert draws[:50] == [b.draw() for _ in range(50)]
    assert 36.0 < sum(draws) / len(draws) < 44.0


@pytest.mark.parametrize(("settings", "words"), [
    ({"capacity": 0}, "capacity"), ({"service_ms": 0.0}, "service_ms"), ({"port": 70000}, "port"),
    ({"distribution": "normal"}, "distribution"), ({"name": ""}, "name")])
def test_config_errors_name_the_parameter(settings: dict[str, Any], words: str) -> None:
    with pytest.raises(ServiceConfigError, match=words):
        ServiceConfig(**({"name": "x"} | settings))


def test_nominal_rate() -> None:
    assert ServiceConfig(name="x", capacity=4, service_ms=50.0).nominal_rate == 80


def test_worker_pool_queues_in_order_and_reservations_take_workers() -> None:
    async def scenario() -> None:
        changes: list[int] = []
        pool = WorkerPool(2, lambda: changes.append(pool.busy))
        await pool.acquire()
        await pool.acquire()
        order: list[str] = []

        async def waiter(name: str) -> None:
            await pool.acquire()
            order.append(name)

        tasks = [asyncio.create_task(waiter(n)) for n in ("first", "second")]
        await asyncio.sleep(0)
        assert (pool.busy, pool.queued) == (2, 2)
        pool.reserve(1)  # over-committed: nobody is pre-empted
        pool.release()
        await asyncio.sleep(0)
        assert order == [] and pool.queued == 2  # the freed worker went to the reservation
        pool.reserve(0)
        await asyncio.sleep(0)
        assert order == ["first"]
        pool.release()
        await asyncio.gather(*tasks)
        assert order == ["first", "second"] and pool.running == 2
        with pytest.raises(ValueError, match=r"0\.\.2"):
            pool.reserve(3)
        assert changes and max(changes) <= 2

    run(scenario())


def test_a_cancelled_waiter_leaves_the_queue_and_holds_nothing() -> None:
    async def scenario() -> None:
        pool = WorkerPool(1, lambda: None)
        await pool.acquire()
        task = asyncio.create_task(pool.acquire())
        await asyncio.sleep(0)
        assert pool.queued == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert pool.queued == 0
        pool.release()
        assert pool.running == 0
        with pytest.raises(RuntimeError, match="without a matching"):
            pool.release()

    run(scenario())


# ---------------------------------------------------------------- over loopback


def test_requests_on_one_keep_alive_connection_name_the_instance() -> None:
    async def scenario() -> None:
        service = await started()
        try:
            client = await Client.open(service.port)
            for path in ("/", "/anything/else?x=1"):
                status, headers, body = await client.call("GET", path)
                assert status == 200 and headers["x-instance"] == "web-a"
                document = json.loads(body)
                assert document["instance"] == "web-a" and document["service_ms"] == 20.0
                assert document["queue_ms"] >= 0
            await client.close()
        finally:
            await service.stop()

    run(scenario())


def test_metrics_use_the_project_metric_names_and_pass_the_agent_checks() -> None:
    async def scenario() -> None:
        service = await started(capacity=4, service_ms=50.0)
        try:
            await call(service.port, "GET", "/")
            document = await metrics(service.port)
            taken = select_metrics(document, {})  # what the agent's http collector would take
            assert set(taken) == {"cpu_utilization", "active_sessions", "queued_requests", "service_delay",
                                  "error_rate", "capacity"}
            assert taken["error_rate"] == 0.0
            assert taken["capacity"] == 80
            assert taken["active_sessions"] == 0  # the /metrics connection is a scrape, not a session
            assert 50_000 <= taken["service_delay"] < 200_000
            assert document["requests_total"] == 1 and document["errors_total"] == 0
        finally:
            await service.stop()

    run(scenario())


def test_fail_and_recover() -> None:
    async def scenario() -> None:
        service = await started()
        port = service.port
        try:
            assert (await call(port, "GET", "/health"))[0] == 200
            assert (await call(port, "POST", "/admin/fail"))[0] == 200
            status, headers, _ = await call(port, "GET", "/")
            assert status == 503 and headers["x-instance"] == "web-a"
            assert (await call(port, "GET", "/health"))[0] == 503
            assert (await metrics(port))["errors_total"] == 1
            assert (await call(port, "POST", "/admin/recover"))[0] == 200
            assert (await call(port, "GET", "/"))[0] == 200
            assert (await call(port, "GET", "/health"))[0] == 200
        finally:
            await service.stop()

    run(scenario())


def test_injected_errors_show_in_error_rate_while_health_stays_ok() -> None:
    async def scenario() -> None:
        service = await started(service_ms=1.0)
        port = service.port
        try:
            for bad in ("", "?share=2", "?share=x", "?share=0.5&share=0.1"):
                assert (await call(port, "POST", f"/admin/errors{bad}"))[0] == 400, bad
            assert (await call(port, "POST", "/admin/errors?share=0.25"))[0] == 200
            statuses = [(await call(port, "GET", "/"))[0] for _ in range(8)]
            assert statuses.count(500) == 2 and statuses.count(200) == 6  # evenly spread: 1 in 4
            assert (await call(port, "GET", "/health"))[0] == 200
            document = await metrics(port)
            assert document["error_rate"] == 25.0 and document["errors_total"] == 2
            assert (await call(port, "POST", "/admin/errors?share=0"))[0] == 200
            assert [(await call(port, "GET", "/"))[0] for _ in range(4)] == [200] * 4
        finally:
            await service.stop()

    run(scenario())


def test_synthetic_load_raises_utilisation_and_makes_requests_queue() -> None:
    async def scenario() -> None:
        service = await started(capacity=2, service_ms=20.0)
        port = service.port
        try:
            assert (await call(port, "POST", "/admin/load?busy=2"))[0] == 200
            pending = asyncio.create_task(call(port, "GET", "/"))
            seen = await eventually(lambda: metrics(port), lambda m: m["queued_requests"] == 1)
            assert seen["synthetic_busy"] == 2
            await eventually(lambda: metrics(port), lambda m: m["cpu_utilization"] > 90.0 and
                             m["service_delay"] > 100_000)
            assert not pending.done()
            assert (await call(port, "POST", "/admin/load?busy=0"))[0] == 200
            status, _, body = await pending
            assert status == 200 and json.loads(body)["queue_ms"] > 50.0
            await eventually(lambda: metrics(port), lambda m: m["cpu_utilization"] < 10.0, timeout=3.0)
        finally:
            await service.stop()

    run(scenario())


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/admin/fail", 405), ("POST", "/admin/load?busy=3", 400), ("POST", "/admin/load?busy=x", 400),
    ("POST", "/admin/load", 400), ("POST", "/admin/nothing", 404)])
def test_admin_mistakes_get_a_clear_status(method: str, path: str, status: int) -> None:
    async def scenario() -> None:
        service = await started()
        try:
            got, _, body = await call(service.port, method, path)
            assert got == status and json.loads(body)["error"]
        finally:
            await service.stop()

    run(scenario())


def test_a_bad_request_gets_400_and_the_connection_closes() -> None:
    async def scenario() -> None:
        service = await started()
        try:
            client = await Client.open(service.port)
            client.writer.write(b"NONSENSE\r\n\r\n")
            status, headers, _ = await client.response()
            assert status == 400 and headers["connection"] == "close"
            assert await client.reader.read() == b""
            assert (await metrics(service.port))["errors_total"] == 1
        finally:
            await service.stop()

    run(scenario())


def test_active_sessions_count_open_connections_and_stop_closes_them() -> None:
    async def scenario() -> None:
        service = await started()
        port = service.port
        clients = [await Client.open(port) for _ in range(3)]
        for client in clients:
            await client.call("GET", "/")
        # three idle keep-alive sessions; the scrape's own connection is none (counted, a drain waiting for 0
        # sessions could never end: the agent's own scrape would always be one)
        assert (await metrics(port))["active_sessions"] == 3
        await clients[0].close()
        await eventually(lambda: metrics(port), lambda m: m["active_sessions"] == 2)
        await service.stop()
        assert await clients[1].reader.read() == b""
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario())


def test_cli_arguments_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["service", "--name", "web-a", "--listen", "0.0.0.0", "--port", "9000", "--capacity", "8",
                              "--service-ms", "20", "--distribution", "exponential", "--seed", "5"])
    assert callable(args.handler)
    assert config_from_args(args) == ServiceConfig(name="web-a", host="0.0.0.0", port=9000, capacity=8,
                                                   service_ms=20.0, distribution="exponential", seed=5)
    assert run_service(parser.parse_args(["service", "--name", "x", "--capacity", "0"])) == 2
