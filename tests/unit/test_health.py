"""Health checkers against real I/O: a local HTTP server, TCP listeners, real commands."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from dyncast_bgp.agent.health import (
    Checker,
    CheckResult,
    CommandChecker,
    HttpChecker,
    NoChecker,
    TcpChecker,
    build_checker,
)
from dyncast_bgp.config.schema import CommandHealth, HttpHealth, NoHealth, TcpHealth
from tests.unit.netutil import closed_port

# path -> (status, body, delay in seconds)
ROUTES: dict[str, tuple[int, bytes, float]] = {
    "/ok": (200, b"status: OK\n", 0.0),
    "/empty": (204, b"", 0.0),
    "/sick": (503, b"overloaded", 0.0),
    "/moved": (301, b"", 0.0),
    "/slow": (200, b"OK", 5.0),
    "/big": (200, b"READY " + b"x" * 200_000 + b" LATE", 0.0),
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    release = threading.Event()

    def do_GET(self) -> None:
        status, body, delay = ROUTES.get(self.path, (404, b"not found", 0.0))
        if delay:
            self.release.wait(delay)
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    Handler.release.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        Handler.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def run_check(checker: Checker) -> CheckResult:
    result = asyncio.run(checker.check())
    assert isinstance(result, CheckResult)
    return result


def timed_check(checker: Checker) -> tuple[CheckResult, float]:
    started = time.monotonic()
    result = run_check(checker)
    return result, time.monotonic() - started


# ---------------------------------------------------------------- http


def http(url: str, timeout: float = 5.0, **options: object) -> HttpChecker:
    """A checker with room to answer (a 0.3 s timeout failed a status check in CI with the host at 50 % steal);
    the tests of the timeout itself give theirs."""
    checker = build_checker(HttpHealth(type="http", url=url, timeout=timeout, **options))
    assert isinstance(checker, HttpChecker)
    return checker


def test_http_expected_status_is_healthy(base_url: str) -> None:
    assert run_check(http(base_url + "/ok")) == CheckResult(True, "HTTP 200")


def test_http_unexpected_status_is_unhealthy_and_says_what_was_expected(base_url: str) -> None:
    assert run_check(http(base_url + "/sick")) == CheckResult(False, "HTTP 503 (expected 200)")
    assert run_check(http(base_url + "/empty", expect_status=(200, 201))) == CheckResult(
        False, "HTTP 204 (expected 200, 201)")


def test_http_listed_statuses_including_redirects_are_healthy(base_url: str) -> None:
    assert run_check(http(base_url + "/empty", expect_status=(200, 204))).ok
    assert run_check(http(base_url + "/moved", expect_status=(301,))) == CheckResult(True, "HTTP 301")


def test_http_expect_body(base_url: str) -> None:
    assert run_check(http(base_url + "/ok", expect_body="OK")) == CheckResult(True, "HTTP 200")
    assert run_check(http(base_url + "/ok", expect_body="READY")) == CheckResult(
        False, "HTTP 200 but the body lacks 'READY'")


def test_http_big_body_is_searched_in_its_first_64k(base_url: str) -> None:
    assert run_check(http(base_url + "/big", expect_body="READY")) == CheckResult(True, "HTTP 200")
    assert run_check(http(base_url + "/big", expect_body="LATE")) == CheckResult(
        False, "HTTP 200 but the body lacks 'LATE'")


def test_http_slow_server_is_unhealthy_within_the_timeout(base_url: str) -> None:
    result, elapsed = timed_check(http(base_url + "/slow", timeout=0.3))
    assert result == CheckResult(False, "timed out after 0.3s")
    assert 0.25 < elapsed < 1.0


def test_http_refused_and_unresolvable() -> None:
    assert run_check(http(f"http://127.0.0.1:{closed_port()}/ok")) == CheckResult(False, "connection refused")
    result = run_check(http("http://no-such-host.invalid/health"))
    assert not result.ok
    assert result.detail


def test_http_url_without_host_never_raises() -> None:
    assert run_check(http("http:///health")) == CheckResult(
        False, "bad URL: need http:// or https:// and a host")


# ---------------------------------------------------------------- tcp


def tcp(host: str, port: int, timeout: float = 5.0) -> TcpChecker:
    checker = build_checker(TcpHealth(type="tcp", host=host, port=port, timeout=timeout))
    assert isinstance(checker, TcpChecker)
    return checker


def test_tcp_listener_is_healthy() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        checker = tcp("127.0.0.1", port)
        assert checker.description == f"tcp 127.0.0.1:{port}"
        assert run_check(checker) == CheckResult(True, "connected")


def test_tcp_ipv6_listener_is_healthy() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"cannot listen on ::1: {exc}")
    with listener:
        port = listener.getsockname()[1]
        checker = tcp("::1", port)
        assert checker.description == f"tcp [::1]:{port}"
        assert run_check(checker).ok


def test_tcp_closed_port_is_refused() -> None:
    assert run_check(tcp("127.0.0.1", closed_port())) == CheckResult(False, "connection refused")


def test_tcp_unresolvable_host_is_unhealthy_within_the_timeout() -> None:
    result, elapsed = timed_check(tcp("no-such-host.invalid", 80, timeout=0.3))
    assert not result.ok
    assert result.detail.startswith(("connect failed: ", "connect timed out"))
    assert elapsed < 1.0


# ---------------------------------------------------------------- command


def command(*argv: str, timeout: float = 5.0) -> CommandChecker:
    checker = build_checker(CommandHealth(type="command", argv=argv, timeout=timeout))
    assert isinstance(checker, CommandChecker)
    return checker


def test_command_exit_zero_is_healthy() -> None:
    assert run_check(command("/bin/sh", "-c", "echo fine")) == CheckResult(True, "exit 0")


def test_command_nonzero_exit_quotes_stderr() -> None:
    assert run_check(command("/bin/sh", "-c", "echo 'db down' >&2; exit 2")) == CheckResult(False, "exit 2: db down")
    assert run_check(command("/bin/false")) == CheckResult(False, "exit 1")


def test_command_that_hangs_is_killed_and_unhealthy_within_the_timeout() -> None:
    result, elapsed = timed_check(command("/bin/sh", "-c", "sleep 30", timeout=0.3))
    assert result == CheckResult(False, "timed out after 0.3s (process group killed)")
    assert elapsed < 0.3 + 0.5


def test_command_that_cannot_start() -> None:
    assert run_check(command("/nonexistent/check")) == CheckResult(False, "cannot start: No such file or directory")


def test_command_with_huge_output_is_judged_by_exit_status() -> None:
    assert run_check(command("/bin/sh", "-c", "head -c 2000000 /dev/zero")) == CheckResult(True, "exit 0")
    assert run_check(command("/bin/sh", "-c", "head -c 2000000 /dev/zero; exit 4")) == CheckResult(False, "exit 4")


# ---------------------------------------------------------------- none and dispatch


def test_none_is_always_healthy() -> None:
    checker = build_checker(NoHealth(type="none"))
    assert isinstance(checker, NoChecker)
    assert checker.description == "none"
    assert run_check(checker).ok


def test_descriptions() -> None:
    assert http("http://10.0.0.1:8080/healthz").description == "http http://10.0.0.1:8080/healthz"
    assert command("check", "--for", "a b").description == "command check --for 'a b'"
