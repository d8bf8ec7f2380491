"""Structured logs on stderr, stable event names (``event="instance_withdrawn"``).

stdout of an ExaBGP helper process is its command channel, so every log goes
to stderr; ``configure`` must run before anything logs in a helper process.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal, TextIO

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the write.

    Binding the stream object at configure time breaks when it is later
    replaced or closed (a test harness's capture, a daemon redirecting its
    output): every log call would then raise into the code that logs.
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", *, fmt: Literal["json", "console"] = "json", stream: TextIO | None = None) -> None:
    out: Any = stream if stream is not None else _CurrentStderr()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer(sort_keys=False) if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(stream=stream if stream is not None else sys.stderr, level=LEVELS.get(level, logging.INFO),
                        force=True,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
