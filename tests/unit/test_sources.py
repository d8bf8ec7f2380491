"""Metric collectors against real I/O: a local HTTP(S) server, real commands, files,
fake procfs/cgroup trees in tmp_path, and the machine's own /proc and cgroup v2."""

from __future__ import annotations

import asyncio
import json
import math
import os
import shlex
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from dyncast_bgp.agent.execute import run_command
from dyncast_bgp.agent.httpclient import http_get
from dyncast_bgp.agent.iobase import FetchError
from dyncast_bgp.agent.sources import (
    CgroupCollector,
    Collector,
    CommandCollector,
    ContentError,
    FileCollector,
    HttpCollector,
    ProcCollector,
    SourceError,
    build_collector,
    check_metric,
    count_cpus,
)
from dyncast_bgp.config.schema import (
    CgroupSource,
    CommandSource,
    FileSource,
    HttpSource,
    MetricSource,
    ProcSource,
)
from tests.unit.netutil import closed_port

# ---------------------------------------------------------------- a real HTTP server


@dataclass
class Route:
    body: bytes
    status: int = 200
    delay: float = 0.0
    chunked: bool = False
    no_length: bool = False  # no Content-Length: the body ends when the server closes


@dataclass
class Server:
    base: str
    routes: dict[str, Route]
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return self.base + path


def _handler(routes: dict[str, Route], release: threading.Event) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            route = routes.get(self.path)
            if route is None:
                route = Route(b"no such route", status=404)
            if route.delay:
                release.wait(route.delay)
            self.send_response(route.status)
            self.send_header("Content-Type", "application/json")
            if route.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for start in range(0, len(route.body), 5):
                    piece = route.body[start:start + 5]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            elif route.no_length:
                self.close_connection = True
                self.end_headers()
                self.wfile.write(route.body)
            else:
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                self.wfile.write(route.body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    routes: dict[str, Route] = {}
    release = threading.Event()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(routes, release))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_address[1]}", routes, release)
    finally:
        release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def http_source(url: str, timeout: float = 5.0, **fields: str) -> HttpSource:
    """Room to answer: short timeouts that are not under test fail on a CI host at 50-70 % steal."""
    return HttpSource(type="http", url=url, timeout=timeout, fields=fields)


def collect(collector: Collector) -> dict[str, float]:
    return asyncio.run(collector.collect())


def collect_error(collector: Collector) -> SourceError:
    with pytest.raises(SourceError) as caught:
        collect(collector)
    return caught.value


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(("name", "raw", "expected"), [
    ("cpu_utilization", 12.5, 12.5),
    ("cpu_utilization", 100.00001, 100.0),
    ("cpu_utilization", -1e-9, 0.0),
    ("memory_utilization", 0, 0.0),
    ("active_sessions", 7, 7.0),
    ("service_delay", 1500, 1500.0),
    ("overall_score", 10.000001, 10.0),
])
def test_check_metric_accepts_and_clamps_float_error(name: str, raw: object, expected: float) -> None:
    assert check_metric(name, raw) == expected


@pytest.mark.parametrize(("name", "raw", "problem"), [
    ("cpu_utilization", 250.0, "cpu_utilization: 250 exceeds the maximum 100"),
    ("cpu_utilization", -3, "cpu_utilization: -3 is below the minimum 0"),
    ("active_sessions", -1, "active_sessions: -1 is below the minimum 0"),
    ("overall_score", 11, "overall_score: 11 exceeds the maximum 10"),
    ("queued_requests", 2**40, "queued_requests: 1.09951e+12 exceeds the maximum 4.29497e+09"),
    ("cpu_utilization", math.nan, "cpu_utilization: not finite: nan"),
    ("cpu_utilization", math.inf, "cpu_utilization: not finite: inf"),
    ("cpu_utilization", True, "cpu_utilization: not a number: True"),
    ("cpu_utilization", "12", "cpu_utilization: not a number: '12'"),
    ("cpu_utilization", None, "cpu_utilization: not a number: None"),
    ("active_sessions", 10**400, "active_sessions: out of range"),
])
def test_check_metric_rejects_with_the_field_name(name: str, raw: object, problem: str) -> None:
    with pytest.raises(ContentError) as caught:
        check_metric(name, raw)
    assert str(caught.value).startswith(problem)


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-3", 4), ("0-3,6,8-9\n", 7), ("2,4", 2), ("\n", 0)])
def test_count_cpus(text: str, count: int) -> None:
    assert count_cpus(text) == count


# ---------------------------------------------------------------- http


def test_http_top_level_metric_names_are_taken_and_other_keys_ignored(server: Server) -> None:
    server.routes["/m"] = Route(json.dumps({"cpu_utilization": 12.5, "active_sessions": 7, "build": "abc"}).encode())
    assert collect(build_collector(http_source(server.url("/m")))) == {"cpu_utilization": 12.5,
                                                                      "active_sessions": 7.0}


def test_http_fields_follow_dotted_paths_into_objects_and_lists(server: Server) -> None:
    body = {"stats": {"sessions": {"active": 42}}, "load": [{"cpu": 30.5}], "cpu_utilization": 99}
    server.routes["/m"] = Route(json.dumps(body).encode())
    source = http_source(server.url("/m"), active_sessions="stats.sessions.active", cpu_utilization="load.0.cpu")
    assert collect(build_collector(source)) == {"active_sessions": 42.0, "cpu_utilization": 30.5}


def test_http_chunked_body(server: Server) -> None:
    server.routes["/c"] = Route(b'{"queued_requests": 3, "service_delay": 1200}', chunked=True)
    assert collect(build_collector(http_source(server.url("/c")))) == {"queued_requests": 3.0,
                                                                      "service_delay": 1200.0}


@pytest.mark.parametrize(("body", "status", "problem"), [
    (b"<html>oops</html>", 200, "invalid JSON"),
    (b"", 200, "invalid JSON"),
    (b'{"cpu_utilization": NaN}', 200, "cpu_utilization: not finite: nan"),
    (b'{"cpu_utilization": 250}', 200, "cpu_utilization: 250 exceeds the maximum 100"),
    (b'{"active_sessions": -4}', 200, "active_sessions: -4 is below the minimum 0"),
    (b'{"active_sessions": "4"}', 200, "active_sessions: not a number: '4'"),
    (b"[1, 2]", 200, "expected a JSON object, got list"),
    (b'{"requests": 5}', 200, "no known metric names at the top level (keys: requests)"),
    (b'{"cpu_utilization": 5}', 500, "HTTP 500 Internal Server Error"),
    (b"\xff\xfe", 200, "body is not UTF-8"),
    (b"[" * 100_000, 200, "invalid JSON"),
])
def test_http_bad_responses_raise_source_error_naming_url_and_problem(
        server: Server, body: bytes, status: int, problem: str) -> None:
    server.routes["/bad"] = Route(body, status=status)
    url = server.url("/bad")
    error = collect_error(build_collector(http_source(url)))
    assert error.source == f"http {url}"
    assert problem in error.problem
    assert str(error).startswith(f"http {url}: ")


def test_http_missing_field_names_the_path(server: Server) -> None:
    server.routes["/m"] = Route(b'{"stats": {"sessions": {}}}')
    error = collect_error(build_collector(http_source(server.url("/m"), active_sessions="stats.sessions.active")))
    assert error.problem == "missing field 'stats.sessions.active'"


def test_http_bad_value_at_a_path_names_metric_and_path(server: Server) -> None:
    server.routes["/m"] = Route(b'{"a": {"b": 250}}')
    error = collect_error(build_collector(http_source(server.url("/m"), cpu_utilization="a.b")))
    assert error.problem == "cpu_utilization: 250 exceeds the maximum 100 (field 'a.b')"


def test_http_slow_server_times_out_within_the_timeout(server: Server) -> None:
    server.routes["/slow"] = Route(b'{"cpu_utilization": 1}', delay=5.0)
    started = time.monotonic()
    error = collect_error(build_collector(http_source(server.url("/slow"), timeout=0.3)))
    elapsed = time.monotonic() - started
    assert error.problem == "timed out after 0.3s"
    assert 0.25 < elapsed < 1.0


def test_http_connection_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/metrics"
    assert collect_error(build_collector(http_source(url))).problem == "connection refused"


def test_http_body_without_length_is_read_until_the_server_closes(server: Server) -> None:
    padding = "x" * 300_000
    server.routes["/eof"] = Route(json.dumps({"pad": padding, "capacity": 500}).encode(), no_length=True)
    assert collect(build_collector(http_source(server.url("/eof")))) == {"capacity": 500.0}


@pytest.mark.parametrize("framing", [{}, {"chunked": True}, {"no_length": True}])
def test_http_body_above_the_limit_is_refused_or_truncated(server: Server, framing: dict[str, bool]) -> None:
    server.routes["/big"] = Route(b"0123456789" * 200, **framing)
    with pytest.raises(FetchError, match=r"^body exceeds the 1000-byte limit$"):
        asyncio.run(http_get(server.url("/big"), timeout=5, max_body=1000))
    response = asyncio.run(http_get(server.url("/big"), timeout=5, max_body=1000, truncate=True))
    assert (response.status, response.body, response.truncated) == (200, b"0123456789" * 100, True)


def test_http_response_carries_status_and_body(server: Server) -> None:
    server.routes["/t"] = Route(b"teapot", status=418)
    response = asyncio.run(http_get(server.url("/t"), timeout=5))
    assert (response.status, response.reason, response.body) == (418, "I'm a Teapot", b"teapot")


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=10)
    return key, cert


@pytest.fixture
def tls_server(server: Server, tls_files: tuple[Path, Path]) -> Iterator[Server]:
    key, cert = tls_files
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server.routes, server.release))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield Server(f"https://127.0.0.1:{httpd.server_address[1]}", server.routes, server.release)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_https_with_a_trusted_certificate(tls_server: Server, tls_files: tuple[Path, Path]) -> None:
    tls_server.routes["/m"] = Route(b'{"cpu_utilization": 40}')
    trust = ssl.create_default_context(cafile=str(tls_files[1]))
    collector = HttpCollector(http_source(tls_server.url("/m")), ssl_context=trust)
    assert collect(collector) == {"cpu_utilization": 40.0}


def test_https_with_an_untrusted_certificate_fails_verification(tls_server: Server) -> None:
    tls_server.routes["/m"] = Route(b'{"cpu_utilization": 40}')
    error = collect_error(build_collector(http_source(tls_server.url("/m"))))
    assert error.problem.startswith("TLS error: ")
    assert "certificate" in error.problem


class AuthHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"active_sessions": len(self.headers.get("Authorization", ""))}).encode()
        ok = self.headers.get("Authorization") == "Basic YWdlbnQ6czNjcmV0"  # agent:s3cret
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_http_credentials_in_the_url_become_basic_auth_and_are_redacted() -> None:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), AuthHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        port = httpd.server_address[1]
        collector = build_collector(http_source(f"http://agent:s3cret@127.0.0.1:{port}/m"))
        assert collector.description == f"http http://agent:***@127.0.0.1:{port}/m"
        assert collect(collector) == {"active_sessions": 22.0}  # len("Basic YWdlbnQ6czNjcmV0")
        error = collect_error(build_collector(http_source(f"http://agent:wrong@127.0.0.1:{port}/m")))
        assert error.problem == "HTTP 401 Unauthorized"
        assert "wrong" not in str(error)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# ---------------------------------------------------------------- command


def command_source(*argv: str, timeout: float = 5.0, **fields: str) -> CommandSource:
    return CommandSource(type="command", argv=argv, timeout=timeout, fields=fields)


def test_command_json_stdout() -> None:
    source = command_source("/bin/echo", '{"cpu_utilization": 33, "capacity": 1000, "note": "x"}')
    assert collect(build_collector(source)) == {"cpu_utilization": 33.0, "capacity": 1000.0}


def test_command_name_value_lines_with_fields() -> None:
    script = "printf '# load\\nload = 71.5\\n\\nsessions=12\\nother=1\\n'"
    source = command_source("/bin/sh", "-c", script, cpu_utilization="load", active_sessions="sessions")
    assert collect(build_collector(source)) == {"cpu_utilization": 71.5, "active_sessions": 12.0}


@pytest.mark.parametrize(("script", "problem"), [
    ("echo boom >&2; exit 3", "exit 3: boom"),
    ("kill -9 $$", "killed by SIGKILL"),
    ("printf 'cpu_utilization=5\\nnonsense\\n'", "line 2: expected name=value, got 'nonsense'"),
    ("printf 'cpu_utilization=5\\ncpu_utilization=6\\n'", "line 2: 'cpu_utilization' given twice"),
    ("printf 'cpu_utilization=lots\\n'", "line 1: cpu_utilization: not a number: 'lots'"),
    ("printf 'cpu_utilization=inf\\n'", "cpu_utilization: not finite: inf"),
    ("printf 'cpu_utilization=-0.5\\n'", "cpu_utilization: -0.5 is below the minimum 0"),
    ("true", "empty output"),
    ("echo '{\"cpu_utilization\": 5'", "invalid JSON"),
    ("head -c 1100000 /dev/zero", "stdout exceeds 1048576 bytes"),
])
def test_command_failures_name_command_and_problem(script: str, problem: str) -> None:
    collector = build_collector(command_source("/bin/sh", "-c", script))
    error = collect_error(collector)
    assert error.source == f"command /bin/sh -c {_quoted(script)}"
    assert problem in error.problem


def _quoted(text: str) -> str:
    return shlex.quote(text)


def test_command_that_cannot_start() -> None:
    error = collect_error(build_collector(command_source("/nonexistent/metrics-tool")))
    assert error.problem == "cannot start: No such file or directory"


def _gone_or_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def test_command_hang_is_killed_with_its_process_group_within_the_timeout(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    started = time.monotonic()
    error = collect_error(build_collector(command_source("/bin/sh", "-c", script, timeout=0.3)))
    elapsed = time.monotonic() - started
    assert error.problem == "timed out after 0.3s (process group killed)"
    assert elapsed < 0.3 + 0.5
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 2
    while not _gone_or_zombie(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    if not _gone_or_zombie(child):
        os.kill(child, 9)
        pytest.fail(f"background child {child} survived the timeout")


def test_command_background_child_holding_stdout_counts_as_running(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(FetchError, match="timed out"):
        asyncio.run(run_command(["/bin/sh", "-c", "sleep 30 & echo early"], timeout=0.3))
    assert time.monotonic() - started < 0.8


# ---------------------------------------------------------------- file


def file_collector(path: Path, **fields: str) -> FileCollector:
    collector = build_collector(FileSource(type="file", path=str(path), timeout=5.0, fields=fields))
    assert isinstance(collector, FileCollector)
    return collector


def test_file_json_and_lines_are_reread_every_collect(tmp_path: Path) -> None:
    path = tmp_path / "metrics"
    collector = file_collector(path)
    path.write_text('{"cpu_utilization": 10, "gpu_utilization": 20}')
    assert collect(collector) == {"cpu_utilization": 10.0, "gpu_utilization": 20.0}
    path.write_text("cpu_utilization=11\n# comment\ngpu_utilization = 21\n")
    assert collect(collector) == {"cpu_utilization": 11.0, "gpu_utilization": 21.0}


def test_file_fields_with_dotted_json_path(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_text('{"gpu": {"util": 64}}')
    assert collect(file_collector(path, gpu_utilization="gpu.util")) == {"gpu_utilization": 64.0}


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read: No such file or directory"),
    ("", "empty output"),
    ("cpu_utilization=250\n", "cpu_utilization: 250 exceeds the maximum 100"),
    ('{"cpu_utilization": Infinity}', "cpu_utilization: not finite: inf"),
    ("x" * (1 << 20) + "y", "larger than 1048576 bytes"),
])
def test_file_failures_name_path_and_problem(tmp_path: Path, content: str | None, problem: str) -> None:
    path = tmp_path / "metrics"
    if content is not None:
        path.write_text(content)
    error = collect_error(file_collector(path))
    assert error.source == f"file {path}"
    assert problem in error.problem


def test_file_that_is_a_directory(tmp_path: Path) -> None:
    assert collect_error(file_collector(tmp_path)).problem == "cannot read: Is a directory"


# ---------------------------------------------------------------- fake time


class FakeTime:
    """Clock and sleep for the CPU-rate collectors; ``on_sleep`` changes the files mid-sample."""

    def __init__(self, on_sleep: Callable[[], None] = lambda: None) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.on_sleep = on_sleep

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        self.on_sleep()


# ---------------------------------------------------------------- procfs


def write_stat(root: Path, user: int, system: int, idle: int, *, iowait: int = 0, steal: int = 0) -> None:
    (root / "stat").write_text(
        f"cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 50 0\n"
        f"cpu0 {user} 0 {system} {idle} {iowait} 0 0 {steal} 50 0\nintr 1 2 3\nctxt 99\n")


def write_meminfo(root: Path, total_kb: int, available_kb: int | None) -> None:
    lines = [f"MemTotal:       {total_kb} kB", "MemFree:         1000 kB"]
    if available_kb is not None:
        lines.append(f"MemAvailable:   {available_kb} kB")
    lines.append("HugePages_Total:       0")
    (root / "meminfo").write_text("\n".join(lines) + "\n")


def proc_collector(root: Path, fake: FakeTime) -> ProcCollector:
    return ProcCollector(ProcSource(type="procfs", proc_root=str(root)), sleep=fake.sleep)


def test_procfs_first_collect_samples_then_later_collects_use_the_previous_one(tmp_path: Path) -> None:
    write_stat(tmp_path, user=100, system=100, idle=800, iowait=0)
    write_meminfo(tmp_path, total_kb=1000, available_kb=250)
    fake = FakeTime(on_sleep=lambda: write_stat(tmp_path, user=130, system=110, idle=850, iowait=10))
    collector = proc_collector(tmp_path, fake)
    # busy +40 of total +100 (iowait counts as idle)
    assert collect(collector) == {"cpu_utilization": 40.0, "memory_utilization": 75.0}
    assert fake.sleeps == [0.1]
    write_stat(tmp_path, user=150, system=110, idle=920, iowait=10, steal=20)
    # busy +40 (20 user + 20 steal) of total +110
    assert collect(collector)["cpu_utilization"] == pytest.approx(100 * 40 / 110)
    assert fake.sleeps == [0.1]


def test_procfs_counters_going_backwards_restart_sampling(tmp_path: Path) -> None:
    write_stat(tmp_path, user=500, system=0, idle=500)
    write_meminfo(tmp_path, total_kb=1000, available_kb=1000)
    fake = FakeTime(on_sleep=lambda: write_stat(tmp_path, user=510, system=0, idle=510))
    collector = proc_collector(tmp_path, fake)
    assert collect(collector)["cpu_utilization"] == 50.0
    write_stat(tmp_path, user=1, system=0, idle=1)
    fake.on_sleep = lambda: write_stat(tmp_path, user=4, system=0, idle=2)
    assert collect(collector)["cpu_utilization"] == pytest.approx(100 * 3 / 4)
    assert len(fake.sleeps) == 2


@pytest.mark.parametrize(("setup", "problem"), [
    (lambda root: write_meminfo(root, 1000, None), "meminfo: no MemAvailable field"),
    (lambda root: write_meminfo(root, 0, 0), "meminfo: MemTotal is 0"),
    (lambda root: (root / "stat").write_text("intr 1\n"), "stat: no aggregate 'cpu' line"),
    (lambda root: (root / "stat").write_text("cpu 1 2 x 4 5\n"), "stat: malformed cpu line"),
    (lambda root: (root / "stat").unlink(), "cannot read"),
])
def test_procfs_bad_files_name_the_file(tmp_path: Path, setup: Callable[[Path], object], problem: str) -> None:
    write_stat(tmp_path, user=1, system=1, idle=1)
    write_meminfo(tmp_path, total_kb=1000, available_kb=500)
    setup(tmp_path)  # stat problems show before the internal sample, meminfo ones after it
    fake = FakeTime(on_sleep=lambda: write_stat(tmp_path, user=2, system=2, idle=2))
    error = collect_error(proc_collector(tmp_path, fake))
    assert error.source == f"procfs {tmp_path}"
    assert problem in error.problem


def test_procfs_no_tick_since_the_previous_collect_samples_again(tmp_path: Path) -> None:
    write_stat(tmp_path, user=1, system=1, idle=1)
    write_meminfo(tmp_path, total_kb=1000, available_kb=500)
    ticks = iter([(2, 2, 2), (3, 2, 4)])
    fake = FakeTime(on_sleep=lambda: write_stat(tmp_path, *next(ticks)))
    collector = proc_collector(tmp_path, fake)
    assert collect(collector)["cpu_utilization"] == pytest.approx(200 / 3)
    assert collect(collector)["cpu_utilization"] == pytest.approx(100 / 3)
    assert fake.sleeps == [0.1, 0.1]


def test_procfs_no_tick_during_the_internal_sample(tmp_path: Path) -> None:
    write_stat(tmp_path, user=1, system=1, idle=1)
    write_meminfo(tmp_path, total_kb=1000, available_kb=500)
    error = collect_error(proc_collector(tmp_path, FakeTime()))
    assert error.problem == "stat: CPU counters did not advance in 0.1s"


def test_procfs_real_host() -> None:
    if not (os.access("/proc/stat", os.R_OK) and os.access("/proc/meminfo", os.R_OK)):
        pytest.skip("/proc/stat or /proc/meminfo not readable")
    collector = build_collector(ProcSource(type="procfs"))
    for _ in range(2):
        metrics = collect(collector)
        assert set(metrics) == {"cpu_utilization", "memory_utilization"}
        assert all(0.0 <= value <= 100.0 for value in metrics.values())


# ---------------------------------------------------------------- cgroup v2


def make_cgroup(root: Path, *, usage: int, cpu_max: str | None = "50000 100000",
                current: int | None = 256 << 20, memory_max: str | None = str(1 << 30),
                cpuset: str | None = None) -> Path:
    group = root / "web.service"
    group.mkdir(exist_ok=True)
    write_usage(group, usage)
    for name, value in (("cpu.max", cpu_max), ("memory.current", None if current is None else str(current)),
                        ("memory.max", memory_max), ("cpuset.cpus.effective", cpuset)):
        if value is not None:
            (group / name).write_text(value + "\n")
    return group


def write_usage(group: Path, usage: int) -> None:
    (group / "cpu.stat").write_text(f"usage_usec {usage}\nuser_usec {usage // 2}\nsystem_usec {usage // 2}\n"
                                    "nr_periods 0\nnr_throttled 0\nthrottled_usec 0\n")


def cgroup_collector(group: Path, fake: FakeTime, proc_root: Path | None = None,
                     cpus: int = 8) -> CgroupCollector:
    source = CgroupSource(type="cgroup", path=str(group))
    return CgroupCollector(source, clock=fake.clock, sleep=fake.sleep,
                           proc_root=str(proc_root or group), cpu_count=lambda: cpus)


def test_cgroup_cpu_against_quota_and_memory_against_limit(tmp_path: Path) -> None:
    group = make_cgroup(tmp_path, usage=1_000_000)
    fake = FakeTime(on_sleep=lambda: write_usage(group, 1_025_000))
    collector = cgroup_collector(group, fake)
    # 25 ms of CPU in 100 ms with half a CPU allowed: 50 %; 256 MiB of 1 GiB: 25 %
    assert collect(collector) == {"cpu_utilization": pytest.approx(50.0), "memory_utilization": 25.0}
    fake.now += 5.0
    write_usage(group, 1_025_000 + 500_000)
    # 0.5 s of CPU in 5 s with half a CPU: 20 %, no new internal sample
    assert collect(collector)["cpu_utilization"] == pytest.approx(20.0)
    assert fake.sleeps == [0.1]


def test_cgroup_unlimited_cpu_uses_the_effective_cpuset(tmp_path: Path) -> None:
    group = make_cgroup(tmp_path, usage=0, cpu_max="max 100000", cpuset="0-3")
    fake = FakeTime(on_sleep=lambda: write_usage(group, 200_000))
    assert collect(cgroup_collector(group, fake))["cpu_utilization"] == pytest.approx(50.0)


def test_cgroup_unlimited_cpu_without_cpuset_uses_the_cpu_count(tmp_path: Path) -> None:
    group = make_cgroup(tmp_path, usage=0, cpu_max="max 100000")
    fake = FakeTime(on_sleep=lambda: write_usage(group, 100_000))
    assert collect(cgroup_collector(group, fake, cpus=2))["cpu_utilization"] == pytest.approx(50.0)


def test_cgroup_burst_above_quota_reports_100(tmp_path: Path) -> None:
    group = make_cgroup(tmp_path, usage=0, cpu_max="10000 100000")
    fake = FakeTime(on_sleep=lambda: write_usage(group, 50_000))
    assert collect(cgroup_collector(group, fake))["cpu_utilization"] == 100.0


def test_cgroup_unlimited_memory_uses_host_memtotal(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    proc.mkdir()
    write_meminfo(proc, total_kb=4 << 20, available_kb=1 << 20)  # 4 GiB
    group = make_cgroup(tmp_path, usage=0, memory_max="max", current=1 << 30)
    fake = FakeTime(on_sleep=lambda: write_usage(group, 1000))
    assert collect(cgroup_collector(group, fake, proc_root=proc))["memory_utilization"] == 25.0


def test_cgroup_without_memory_controller_reports_cpu_only(tmp_path: Path) -> None:
    group = make_cgroup(tmp_path, usage=0, current=None, memory_max=None, cpu_max=None)
    fake = FakeTime(on_sleep=lambda: write_usage(group, 40_000))
    assert collect(cgroup_collector(group, fake, cpus=1)) == {"cpu_utilization": pytest.approx(40.0)}


@pytest.mark.parametrize(("change", "problem"), [
    (lambda group: (group / "cpu.stat").unlink(), "cannot read"),
    (lambda group: (group / "cpu.stat").write_text("user_usec 5\n"), "cpu.stat: no usage_usec line"),
    (lambda group: (group / "cpu.max").write_text("lots 100000\n"), "cpu.max: malformed 'lots 100000'"),
    (lambda group: (group / "cpu.max").write_text("0 100000\n"), "cpu.max: quota and period must be positive"),
    (lambda group: (group / "memory.current").write_text("-5\n"), "memory.current: not a byte count: '-5'"),
    (lambda group: (group / "memory.max").write_text("0\n"), "memory.max is 0"),
    (lambda group: (group / "cpuset.cpus.effective").write_text("3-1\n"), "malformed range '3-1'"),
])
def test_cgroup_bad_files_name_the_file(tmp_path: Path, change: Callable[[Path], object], problem: str) -> None:
    group = make_cgroup(tmp_path, usage=0)
    change(group)
    fake = FakeTime(on_sleep=lambda: write_usage(group, 1000))  # cpu.stat problems show before the sample
    error = collect_error(cgroup_collector(group, fake))
    assert error.source == f"cgroup {group}"
    assert problem in error.problem


def own_cgroup_v2() -> Path | None:
    """This process's cgroup v2 directory, from /proc/self/cgroup and /proc/self/mountinfo."""
    try:
        membership = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    relative = next((line[3:] for line in membership if line.startswith("0::")), None)
    mount = next((line.split()[4] for line in mounts if " - cgroup2 " in line), None)
    if relative is None or mount is None:
        return None
    return Path(mount) / relative.lstrip("/")


def test_cgroup_real_own_cgroup() -> None:
    group = own_cgroup_v2()
    if group is None or not os.access(group / "cpu.stat", os.R_OK):
        pytest.skip("no readable cgroup v2 for this process")
    collector = build_collector(CgroupSource(type="cgroup", path=str(group)))
    for _ in range(2):
        metrics = collect(collector)
        assert 0.0 <= metrics["cpu_utilization"] <= 100.0
        assert 0.0 <= metrics.get("memory_utilization", 0.0) <= 100.0


# ---------------------------------------------------------------- dispatch


def test_build_collector_dispatches_on_type_and_describes_the_source(tmp_path: Path) -> None:
    cases: list[tuple[MetricSource, type, str]] = [
        (ProcSource(type="procfs"), ProcCollector, "procfs /proc"),
        (CgroupSource(type="cgroup", path="/sys/fs/cgroup/a"), CgroupCollector, "cgroup /sys/fs/cgroup/a"),
        (HttpSource(type="http", url="http://10.0.0.1:8080/m"), HttpCollector, "http http://10.0.0.1:8080/m"),
        (CommandSource(type="command", argv=("tool", "--json", "a b")), CommandCollector,
         "command tool --json 'a b'"),
        (FileSource(type="file", path="/run/m"), FileCollector, "file /run/m"),
    ]
    for source, kind, description in cases:
        collector = build_collector(source)
        assert isinstance(collector, kind)
        assert collector.description == description
