"""A small asyncio HTTP/1.1 GET client for metric sources and health checks.

:func:`http_get` speaks HTTP/1.1 over :func:`asyncio.open_connection` (http://
and https://) with one overall deadline covering connect, TLS, request and the
whole response, so a slow or dripping server cannot hold it past ``timeout``, and
cancelling the calling task really stops the request.

Limits: GET only, one request per connection (``Connection: close``), no
redirects followed, no proxies, no compression. Bodies may use Content-Length,
chunked or read-until-close framing; the body is capped at ``max_body`` bytes
(default :data:`~dyncast_bgp.agent.iobase.MAX_BODY`, 1 MiB) — beyond that it is
an error, or with ``truncate=True`` cut to the cap — and at most
:data:`_MAX_HEADERS` response headers are read. https:// checks the certificate
and hostname against ``ssl_context`` (default: the system trust store);
``user:password@`` in the URL becomes Basic auth and :func:`redact_url` hides the
password for logs. Every failure is a :class:`~dyncast_bgp.agent.iobase.FetchError`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import ssl
import urllib.parse
from dataclasses import dataclass

from dyncast_bgp.agent.iobase import MAX_BODY, FetchError


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    reason: str
    body: bytes
    truncated: bool = False
    """True when the body was longer than the limit and only its start was read."""


async def http_get(url: str, *, timeout: float, max_body: int = MAX_BODY, truncate: bool = False,
                   ssl_context: ssl.SSLContext | None = None) -> HttpResponse:
    """GET ``url`` with one overall deadline; raises :class:`FetchError`.

    A small HTTP/1.1 client on :func:`asyncio.open_connection` rather than
    ``urllib`` in a thread: the deadline covers the whole exchange (urllib's
    timeout is per socket operation, so a slowly dripping server could hold it
    for ever) and cancelling the task really stops the request (a thread cannot
    be cancelled). It sends ``Connection: close``, understands Content-Length,
    chunked and read-until-close bodies and does not follow redirects. A body
    above ``max_body`` is an error, or with ``truncate`` is cut to ``max_body``
    bytes (``HttpResponse.truncated``). https:// uses ``ssl_context`` (default: system
    trust store, hostname checked); user:password in the URL becomes Basic auth.
    """
    target = _parse_url(url)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            context = (ssl_context or default_tls_context()) if target.tls else None
            reader, writer = await asyncio.open_connection(
                target.host, target.port, ssl=context, server_hostname=target.host if context else None,
                limit=MAX_BODY)
            writer.write(target.request())
            await writer.drain()
            response = await _read_response(reader, max_body)
            if response.truncated and not truncate:
                raise FetchError(f"body exceeds the {max_body}-byte limit")
            return response
    except TimeoutError:
        raise FetchError(f"timed out after {timeout:g}s") from None
    except ssl.SSLError as exc:
        raise FetchError(f"TLS error: {getattr(exc, 'verify_message', None) or exc.reason or exc}") from None
    except OSError as exc:
        raise FetchError(_os_problem(exc)) from None
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise FetchError(f"malformed HTTP response: {exc}") from None
    finally:
        if writer is not None:
            writer.transport.abort()


@functools.cache
def default_tls_context() -> ssl.SSLContext:
    """System trust store with hostname checks, built once (loading the CA bundle is not free)."""
    return ssl.create_default_context()


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for descriptions and logs."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:***@{host}"))


def _os_problem(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return exc.strerror or str(exc) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class _Target:
    tls: bool
    host: str
    port: int
    host_header: str
    path: str
    authorization: str | None

    def request(self) -> bytes:
        lines = [f"GET {self.path} HTTP/1.1", f"Host: {self.host_header}", "User-Agent: dyncast-agent",
                 "Accept: application/json, */*;q=0.5", "Connection: close"]
        if self.authorization:
            lines.append(f"Authorization: {self.authorization}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _parse_url(url: str) -> _Target:
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchError(f"bad URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError("bad URL: need http:// or https:// and a host")
    tls = parts.scheme == "https"
    host_header = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if any(ord(char) < 33 for char in path + host_header):
        raise FetchError("bad URL: control characters or spaces")
    authorization = None
    if parts.username is not None:
        credentials = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(credentials.encode()).decode("ascii")
    return _Target(tls, parts.hostname, port or (443 if tls else 80), host_header, path, authorization)


_MAX_HEADERS = 100


async def _read_response(reader: asyncio.StreamReader, max_body: int) -> HttpResponse:
    status_line = (await reader.readline()).decode("latin-1").strip()
    version, _, rest = status_line.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise FetchError(f"malformed HTTP status line {status_line[:80]!r}")
    headers: dict[str, str] = {}
    while True:
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        if len(headers) >= _MAX_HEADERS:
            raise FetchError(f"more than {_MAX_HEADERS} response headers")
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body, truncated = await _read_chunked(reader, max_body)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if length < 0:
            raise FetchError(f"malformed HTTP response: Content-Length {length}")
        body, truncated = await reader.readexactly(min(length, max_body)), length > max_body
    else:
        body, truncated = await _read_to_eof(reader, max_body)
    return HttpResponse(int(code), reason, body, truncated)


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bool]:
    """The de-chunked body, stopping once it passes ``max_body`` (then True)."""
    body = bytearray()
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            return bytes(body), False
        if len(body) + size > max_body:
            body += await reader.readexactly(max_body - len(body))
            return bytes(body), True
        body += await reader.readexactly(size)
        await reader.readexactly(2)


async def _read_to_eof(reader: asyncio.StreamReader, max_body: int) -> tuple[bytes, bool]:
    """The body of a response without length, read until the server closes (or past ``max_body``)."""
    body = bytearray()
    while len(body) <= max_body and (chunk := await reader.read(65536)):
        body += chunk
    return bytes(body[:max_body]), len(body) > max_body
