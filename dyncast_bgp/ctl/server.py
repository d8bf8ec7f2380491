"""A local control socket: a unix stream server speaking :mod:`dyncast_bgp.ctl.protocol`.

The server knows nothing of what the verbs do: each valid request goes to the
``handle`` coroutine it was given, and its answer is written back. A malformed
request gets an error answer and the connection stays open; an exception in
``handle`` is logged and answered as an internal error. Nothing a client sends
can stop the server.

The socket file: bound under a temporary name, given its mode, then renamed into
place (no moment where it exists with looser permissions). A socket file left
by a dead process (nobody accepts on it) is replaced; a live one, or a path that
is not a socket, is refused with :class:`ControlSocketError`. On close the file
is removed if it is still the one this server created.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import structlog

from dyncast_bgp.ctl.protocol import (
    LineFramer,
    Overlong,
    Request,
    RequestError,
    Response,
    Verb,
    encode,
    error,
    handle_line,
)

log = structlog.get_logger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
MAX_CONNECTIONS = 32
READ_SIZE = 16 * 1024


class ControlSocketError(Exception):
    """The control socket cannot be opened (the message says why and where)."""


class ControlServer:
    def __init__(self, path: Path, server: asyncio.Server, inode: int, *, verbs: Mapping[str, Verb],
                 handle: Handler) -> None:
        self.path = path
        self._server = server
        self._inode = inode
        self._verbs = verbs
        self._handle = handle
        self._connections: set[asyncio.Task[None]] = set()
        self.requests = 0
        self.rejected = 0  # answered with ok: false

    async def close(self) -> None:
        """Stop accepting, end open connections, remove the socket file if it is still ours."""
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.wait(self._connections, timeout=1.0)
        with contextlib.suppress(OSError):
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    async def serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._connections) >= MAX_CONNECTIONS:
            writer.write(encode(error(f"too many control connections (limit {MAX_CONNECTIONS})")))
            await _close(writer)
            return
        self._connections.add(task)
        try:
            framer = LineFramer()
            while data := await reader.read(READ_SIZE):
                for item in framer.feed(data):
                    writer.write(encode(await self._answer(item)))
                await writer.drain()
            for item in framer.finish():
                writer.write(encode(await self._answer(item)))
            await writer.drain()
        except (ConnectionError, OSError) as exc:
            log.debug("control_connection_lost", error=str(exc))
        finally:
            self._connections.discard(task)
            await _close(writer)

    async def _answer(self, item: bytes | Overlong) -> Response:
        request = handle_line(item, self._verbs)
        self.requests += 1
        if isinstance(request, RequestError):
            self.rejected += 1
            log.info("control_request_rejected", error=request.message)
            return request.response()
        try:
            response = await self._handle(request)
            if response.get("ok") is not True:
                self.rejected += 1
                log.info("control_request_refused", verb=request.verb, error=response.get("error"))
            return response
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server must outlive any handler bug
            self.rejected += 1
            log.exception("control_handler_failed", verb=request.verb)
            return error(f"internal error handling {request.verb!r}: {type(exc).__name__}: {exc}")


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
        await writer.wait_closed()


def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse a live socket or anything that is not a socket."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ControlSocketError(f"{path}: cannot inspect: {exc.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise ControlSocketError(f"{path}: exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        log.info("control_socket_stale_removed", path=str(path))
        return
    except OSError as exc:
        raise ControlSocketError(f"{path}: cannot tell whether it is in use: {exc.strerror or exc}") from None
    finally:
        probe.close()
    raise ControlSocketError(f"{path}: another process is listening on it (another agent running?)")


def _bind(path: Path, mode: int) -> tuple[socket.socket, int]:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        sock.bind(str(temporary))
        os.chmod(temporary, mode)
        os.rename(temporary, path)
        sock.listen(MAX_CONNECTIONS)
        sock.setblocking(False)
        return sock, os.lstat(path).st_ino
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ControlSocketError(f"{path}: cannot listen: {exc.strerror or exc}") from None


async def serve_control(path: str | Path, *, mode: int, verbs: Mapping[str, Verb], handle: Handler) -> ControlServer:
    """Listen on ``path``; requests valid against ``verbs`` go to ``handle``."""
    target = Path(path)
    if len(os.fsencode(target)) > 107:
        raise ControlSocketError(f"{target}: longer than the 107 bytes a unix socket path may have")
    _clear_stale(target)
    sock, inode = _bind(target, mode)
    holder: list[ControlServer] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await holder[0].serve_connection(reader, writer)

    try:
        server = await asyncio.start_unix_server(on_connect, sock=sock, limit=READ_SIZE)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise ControlSocketError(f"{target}: cannot serve: {exc}") from None
    control = ControlServer(target, server, inode, verbs=verbs, handle=handle)
    holder.append(control)
    return control
