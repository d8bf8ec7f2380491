"""`dyncast agent --config FILE`: the agent as an ExaBGP helper process.

stdout carries ExaBGP commands only; logs go to stderr (ExaBGP shows a
helper's stderr in its own log). SIGTERM and SIGINT stop the agent after it
has withdrawn everything it announced (``agent.withdraw_on_exit``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from typing import Any

import structlog
import uvloop

from dyncast_bgp.agent.runtime import AgentRuntime
from dyncast_bgp.config.loader import ConfigError, load
from dyncast_bgp.obs.log import configure

log = structlog.get_logger(__name__)


def register(subparsers: Any) -> None:
    agent = subparsers.add_parser("agent", help="run the metric agent as an ExaBGP process (D-MA)")
    agent.add_argument("--config", required=True, help="YAML config file")
    agent.add_argument("--log-format", choices=("json", "console"), default="json")
    agent.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default=None,
                       help="overrides agent.log_level")
    agent.set_defaults(handler=_run)


class PipeWriter:
    """Writes to a pipe without blocking the event loop; a closed pipe is logged once, not raised."""

    def __init__(self, writer: asyncio.StreamWriter | None, fd: int) -> None:
        self._writer = writer
        self._fd = fd
        self.broken = False

    async def write(self, text: str) -> None:
        if self.broken:
            return
        data = text.encode()
        try:
            if self._writer is not None:
                self._writer.write(data)
                await self._writer.drain()
            else:
                os.write(self._fd, data)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            self.broken = True
            log.error("exabgp_output_closed", error=str(exc), lost_bytes=len(data))


def _is_stream(fd: int) -> bool:
    """Pipes, sockets and terminals can be watched by the event loop; regular files cannot."""
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


async def open_stdout() -> PipeWriter:
    loop = asyncio.get_running_loop()
    if not _is_stream(sys.stdout.fileno()):  # a regular file: plain blocking writes are fine there
        return PipeWriter(None, sys.stdout.fileno())
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, sys.stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    return PipeWriter(writer, sys.stdout.fileno())


STDIN_LIMIT = 1 << 20
OVERLONG_LINE = f"(a line over {STDIN_LIMIT} bytes, dropped)\n"
"""What :func:`stdin_lines` yields for a line over the limit (no reader takes it for a command or a route)."""


async def stdin_lines() -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=STDIN_LIMIT)
    if not _is_stream(sys.stdin.fileno()):  # a regular file: read it line by line in a thread
        while line := await asyncio.to_thread(sys.stdin.readline):
            yield line
        return
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        try:
            line_bytes = await reader.readline()
        except ValueError:  # over the limit: asyncio dropped what it held; the line's tail comes next
            yield OVERLONG_LINE
            continue
        if not line_bytes:
            return
        yield line_bytes.decode(errors="replace")


async def _main(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    configure(args.log_level or config.agent.log_level, fmt=args.log_format)
    runtime = AgentRuntime(config, writer=await open_stdout(), replies=stdin_lines())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _stop, runtime, signum)
    await runtime.run()
    return 0


def _stop(runtime: AgentRuntime, signum: int) -> None:
    log.info("agent_signal", signal=signal.Signals(signum).name)
    runtime.stopping.set()


def _run(args: argparse.Namespace) -> int:
    configure(args.log_level or "info", fmt=args.log_format)
    return uvloop.run(_main(args))
