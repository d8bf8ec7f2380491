"""What the agent's I/O helpers share: the error they raise and the default size cap.

:mod:`dyncast_bgp.agent.httpclient` and :mod:`dyncast_bgp.agent.execute` raise
:class:`FetchError`; its message says what went wrong, never which source or
check it was for, so callers (collectors, health checkers) add that context.
:data:`MAX_BODY` is their default limit on what they read and also what the
metric collectors accept from a file.
"""

from __future__ import annotations

MAX_BODY = 1 << 20
"""Largest HTTP body, command output or file (bytes) a collector accepts."""


class FetchError(Exception):
    """An HTTP request or command failed; the message says what went wrong, not where."""
