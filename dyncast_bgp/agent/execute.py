"""Run a command (argv, no shell) with a deadline and capture its output.

:func:`run_command` starts the command with stdin from /dev/null in its own
session and waits until it has exited *and* closed stdout and stderr (a
background child still holding them counts as running). Limits: output beyond
``max_output`` bytes per stream (default :data:`~dyncast_bgp.agent.iobase.MAX_BODY`,
1 MiB) is discarded and reported via ``CommandResult.truncated`` for stdout. On
timeout or cancellation the whole process group gets SIGKILL, the call returns
within ``timeout`` plus at most :data:`_REAP_GRACE` seconds and the pipes are
always closed; a descendant that left the session with ``setsid`` is out of reach
and keeps running. Failing to start or timing out raises
:class:`~dyncast_bgp.agent.iobase.FetchError`; a non-zero exit is a normal
:class:`CommandResult` (see :meth:`CommandResult.failure`).
"""

from __future__ import annotations

import asyncio
import os
import signal
from contextlib import suppress
from dataclasses import dataclass

from dyncast_bgp.agent.iobase import MAX_BODY, FetchError


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes
    truncated: bool = False
    """True when stdout was longer than the limit and only its start was kept."""

    def failure(self) -> str:
        """``exit N`` (or ``killed by SIGX``) with the first line of stderr."""
        if self.returncode < 0:
            try:
                what = f"killed by {signal.Signals(-self.returncode).name}"
            except ValueError:
                what = f"killed by signal {-self.returncode}"
        else:
            what = f"exit {self.returncode}"
        lines = self.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return f"{what}: {lines[0][:200]}" if lines else what


_REAP_GRACE = 1.0
"""Seconds to wait for a killed process group to exit before closing its pipes regardless."""


class _Capture(asyncio.SubprocessProtocol):
    """Collects a child's stdout/stderr (up to a limit each) and signals exit and pipe closure."""

    def __init__(self, limit: int) -> None:
        loop = asyncio.get_running_loop()
        self.limit = limit
        self.output: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.overflow: set[int] = set()
        self.exited: asyncio.Future[None] = loop.create_future()
        self.finished: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        kept = self.output[fd]
        room = self.limit - len(kept)
        kept += data[:room]
        if len(data) > room:
            self.overflow.add(fd)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        """Called once the process has exited and all its pipes are closed."""
        if not self.finished.done():
            self.finished.set_result(None)


async def run_command(argv: tuple[str, ...] | list[str], *, timeout: float,
                      max_output: int = MAX_BODY) -> CommandResult:
    """Run ``argv`` (no shell, stdin from /dev/null) and capture its output; raises :class:`FetchError`.

    The command is done when it has exited and closed stdout and stderr (so a
    background child still holding them counts as running). It starts in its
    own session, so on timeout or cancellation its whole process group gets
    SIGKILL; the call returns within ``timeout`` plus at most :data:`_REAP_GRACE`
    and always closes the pipes (a descendant that left the session with
    ``setsid`` is out of reach and keeps running). Output beyond ``max_output``
    bytes per stream is discarded (``truncated`` tells for stdout).
    """
    loop = asyncio.get_running_loop()
    try:
        transport, capture = await loop.subprocess_exec(
            lambda: _Capture(max_output), *argv, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise FetchError(f"cannot start: {exc.strerror or exc}") from None
    finished = False
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(capture.finished)
        finished = True
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g}s (process group killed)") from None
    finally:
        if not finished:
            await _kill_group(transport.get_pid(), capture)
        transport.close()
    returncode = transport.get_returncode()
    if returncode is None:  # pragma: no cover - connection_lost implies the process exited
        raise FetchError("exit status unknown")
    return CommandResult(returncode, bytes(capture.output[1]), bytes(capture.output[2]), 1 in capture.overflow)


async def _kill_group(pid: int, capture: _Capture) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with suppress(TimeoutError):
        async with asyncio.timeout(_REAP_GRACE):
            await asyncio.shield(capture.exited)
