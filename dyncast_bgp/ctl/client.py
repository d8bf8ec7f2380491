"""The client side of the control socket: send one request, read its one-line answer (blocking I/O)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from dyncast_bgp.ctl.protocol import Request, Response

DEFAULT_SOCKET = "/run/dyncast/agent.sock"
DEFAULT_ROUTER_SOCKET = "/run/dyncast/router.sock"
MAX_ANSWER = 256 * 1024 * 1024  # bytes: a router's `instances` answer grows with the RIB


class ClientError(Exception):
    """No answer: the socket is missing, refused, timed out, or sent something that is not an answer."""


def call(path: str | Path, request: Request, *, timeout: float = 10.0, role: str = "agent") -> Response:
    """Send ``request`` to the server at ``path`` and return its answer (``ok`` true or false).

    ``role`` (``agent`` or ``router``) only words the errors.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(str(path))
        except FileNotFoundError:
            raise ClientError(f"{path}: no control socket (is {role}.control_socket set and the {role} running?)"
                              ) from None
        except ConnectionRefusedError:
            raise ClientError(f"{path}: nobody is listening (the {role} is not running?)") from None
        except PermissionError:
            raise ClientError(f"{path}: permission denied (see {role}.control_socket_mode)") from None
        sock.sendall(request.to_json().encode())
        sock.shutdown(socket.SHUT_WR)
        data = _read_line(sock)
    except TimeoutError:
        raise ClientError(f"{path}: no answer within {timeout:g} s") from None
    except OSError as exc:
        raise ClientError(f"{path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise ClientError(f"{path}: answer is not JSON: {data[:200]!r}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
        raise ClientError(f"{path}: answer is not a control answer: {data[:200]!r}")
    return answer


def _read_line(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while b"\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            if not buffer:
                raise ClientError("the server closed the connection without answering")
            break
        buffer += chunk
        if len(buffer) > MAX_ANSWER:
            raise ClientError("answer too long")
    return bytes(buffer.split(b"\n", 1)[0])
