"""Health checkers: one probe of one instance per call, never raising.

One checker per configured check (:data:`dyncast_bgp.config.schema.HealthCheck`):
HTTP (status in ``expect_status``, optional body substring), TCP connect,
command (exit 0), and none (always healthy). Every :meth:`Checker.check` is
bounded by the check's ``timeout`` (a hanging command is killed with its
process group) and turns every failure into ``CheckResult(ok=False, detail=...)``.
Rise/fall hysteresis is not here: see :mod:`dyncast_bgp.agent.risefall`.
"""

from __future__ import annotations

import asyncio
import shlex
import ssl
from dataclasses import dataclass
from typing import Protocol, assert_never

from dyncast_bgp.agent.execute import run_command
from dyncast_bgp.agent.httpclient import http_get, redact_url
from dyncast_bgp.agent.iobase import FetchError
from dyncast_bgp.config.schema import CommandHealth, HealthCheck, HttpHealth, NoHealth, TcpHealth

MAX_HEALTH_BODY = 64 * 1024
"""Bytes of an HTTP health response that are read (and searched for ``expect_body``)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One health probe's outcome; ``detail`` says what was seen, for logs and ``ctl``."""

    ok: bool
    detail: str


class Checker(Protocol):
    """Probes one instance's health."""

    description: str

    async def check(self) -> CheckResult:
        """One probe; never raises (cancellation excepted)."""
        ...


def build_checker(health: HealthCheck) -> Checker:
    """The checker for one configured health check; does no I/O until ``check``."""
    if isinstance(health, HttpHealth):
        return HttpChecker(health)
    if isinstance(health, TcpHealth):
        return TcpChecker(health)
    if isinstance(health, CommandHealth):
        return CommandChecker(health)
    if isinstance(health, NoHealth):
        return NoChecker()
    assert_never(health)


class HttpChecker:
    """GET the URL: healthy when the status is in ``expect_status`` and, if set,
    ``expect_body`` occurs in the first :data:`MAX_HEALTH_BODY` bytes of the body
    (decoded as UTF-8, undecodable bytes replaced). Redirects are not followed,
    so a 3xx is healthy only when listed in ``expect_status``.
    """

    def __init__(self, health: HttpHealth, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.description = f"http {redact_url(health.url)}"
        self._health = health
        self._ssl = ssl_context

    async def check(self) -> CheckResult:
        """One GET under the check's timeout."""
        health = self._health
        try:
            response = await http_get(health.url, timeout=health.timeout, max_body=MAX_HEALTH_BODY,
                                      truncate=True, ssl_context=self._ssl)
        except FetchError as exc:
            return CheckResult(False, str(exc))
        status = f"HTTP {response.status}"
        if response.status not in health.expect_status:
            expected = ", ".join(str(code) for code in health.expect_status)
            return CheckResult(False, f"{status} (expected {expected})")
        if health.expect_body is not None and health.expect_body not in response.body.decode("utf-8", "replace"):
            return CheckResult(False, f"{status} but the body lacks {health.expect_body!r}")
        return CheckResult(True, status)


class TcpChecker:
    """Healthy when a TCP connection to ``host:port`` opens within the timeout.

    The connection is closed at once; nothing is sent. Host names are resolved
    on every check (within the same timeout).
    """

    def __init__(self, health: TcpHealth) -> None:
        host = f"[{health.host}]" if ":" in health.host else health.host
        self.description = f"tcp {host}:{health.port}"
        self._health = health

    async def check(self) -> CheckResult:
        """One connect under the check's timeout."""
        health = self._health
        try:
            async with asyncio.timeout(health.timeout):
                _, writer = await asyncio.open_connection(health.host, health.port)
        except TimeoutError:
            return CheckResult(False, f"connect timed out after {health.timeout:g}s")
        except ConnectionRefusedError:
            return CheckResult(False, "connection refused")
        except OSError as exc:
            return CheckResult(False, f"connect failed: {exc.strerror or exc}")
        writer.transport.abort()
        return CheckResult(True, "connected")


class CommandChecker:
    """Healthy when the command (argv, no shell) exits 0 within the timeout.

    A command still running at the timeout is killed with its whole process
    group; the detail quotes the exit status and the first line of stderr.
    """

    def __init__(self, health: CommandHealth) -> None:
        self.description = f"command {shlex.join(health.argv)}"
        self._health = health

    async def check(self) -> CheckResult:
        """Run the command once."""
        try:
            result = await run_command(self._health.argv, timeout=self._health.timeout,
                                       max_output=MAX_HEALTH_BODY)
        except FetchError as exc:
            return CheckResult(False, str(exc))
        if result.returncode != 0:
            return CheckResult(False, result.failure())
        return CheckResult(True, "exit 0")


class NoChecker:
    """No health check configured: always healthy."""

    description = "none"

    async def check(self) -> CheckResult:
        """Always ``ok``."""
        return CheckResult(True, "no health check configured")
