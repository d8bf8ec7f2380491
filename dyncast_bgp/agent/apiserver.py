"""The registration API's HTTP/1.1 server on asyncio streams: one request per connection, JSON in and out.

It knows no resources: it frames a request (request line, headers, a body of
``Content-Length`` bytes), parses the body as JSON and hands an
:class:`ApiRequest` to ``handle``; ``GET /openapi.json`` it answers itself.
Whatever the bytes, it answers 4xx (never 5xx for a client's mistake) and
keeps running: a head over 16 KiB gets 431, a body over 256 KiB 413, a
chunked body 411, a client that stops sending is dropped after 10 s, and at
most 64 connections are served at a time (more wait in the kernel's backlog).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from dyncast_bgp.agent.api import ApiRequest, ApiResponse, parse_body, refuse
from dyncast_bgp.ctl.apiclient import split_listen

log = structlog.get_logger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 256 * 1024
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 400: "Bad Request", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 411: "Length Required", 413: "Payload Too Large",
           422: "Unprocessable Content", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}

Handler = Callable[[ApiRequest], Awaitable[ApiResponse]]


class ApiListenError(Exception):
    """The API could not listen on its address."""


class _Bad(Exception):  # noqa: N818 - an HTTP answer, not a programming error
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class ApiServer:
    server: asyncio.Server
    requests: int = 0
    rejected: int = 0

    @property
    def port(self) -> int:
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        self.server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):
                await self.server.wait_closed()


async def serve_api(listen: str, handle: Handler, *, openapi: dict[str, Any]) -> ApiServer:
    host, port = split_listen(listen)
    slots = asyncio.Semaphore(MAX_CONNECTIONS)
    spec = _encode(ApiResponse(200, openapi))
    holder: list[ApiServer] = []

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with slots:
            try:
                await _serve_one(reader, writer, handle, spec, holder[0])
            except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
                pass
            except Exception as exc:  # a bug in one request must not stop the API
                log.error("api_handler_failed", error=repr(exc))
                with contextlib.suppress(ConnectionError):
                    writer.write(_encode(refuse(500, "internal error (logged by the agent)")))
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        await writer.wait_closed()

    try:
        server = await asyncio.start_server(connection, host, port, limit=MAX_HEAD, reuse_address=True)
    except OSError as exc:
        raise ApiListenError(f"{listen}: {exc.strerror or exc}") from None
    holder.append(ApiServer(server))
    return holder[0]


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, handle: Handler, spec: bytes,
                     counters: ApiServer) -> None:
    counters.requests += 1
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            method, target, headers = await _read_head(reader)
            body = await _read_body(reader, headers)
        if method == "GET" and target.split("?", 1)[0] == "/openapi.json":
            writer.write(spec)
            await writer.drain()
            return
        try:
            parsed = parse_body(body)
        except ValueError as exc:
            raise _Bad(400, str(exc)) from None
        response = await handle(ApiRequest.of(method, target, parsed))
    except _Bad as exc:
        counters.rejected += 1
        response = refuse(exc.status, str(exc))
    if response.status >= 400:
        counters.rejected += 1
    writer.write(_encode(response))
    await writer.drain()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str, dict[str, str]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise _Bad(431, f"request head longer than {MAX_HEAD} bytes") from None
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise
        raise _Bad(400, "request head not terminated by an empty line") from None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1].startswith("/"):
        raise _Bad(400, "bad request line (expected `METHOD /path HTTP/1.1`)")
    if parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise _Bad(505, f"unsupported protocol {parts[2][:20]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _Bad(400, f"bad header line {line[:40]!r}")
        headers[name.lower()] = value.strip()
    return parts[0].upper(), parts[1], headers


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "transfer-encoding" in headers:
        raise _Bad(411, "chunked bodies are not accepted; send Content-Length")
    text = headers.get("content-length", "0")
    if not text.isdigit():
        raise _Bad(400, f"bad Content-Length {text[:20]!r}")
    length = int(text)
    if length > MAX_BODY:
        raise _Bad(413, f"body of {length} bytes, longer than the limit of {MAX_BODY}")
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise _Bad(400, f"body shorter than its Content-Length ({length})") from None


def _encode(response: ApiResponse) -> bytes:
    payload = json.dumps(response.body, separators=(",", ":"), allow_nan=False).encode()
    extra = ""
    allow = response.body.get("allow")
    if response.status == 405 and isinstance(allow, (list, tuple)):
        extra = f"Allow: {', '.join(str(a) for a in allow)}\r\n"
    head = (f"HTTP/1.1 {response.status} {REASONS.get(response.status, 'Unknown')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n{extra}"
            "Connection: close\r\n\r\n")
    return head.encode() + payload
