"""Errors raised by the lab harness; each says what failed and shows the evidence."""

from __future__ import annotations

from collections.abc import Sequence


class LabError(RuntimeError):
    """Base class: something in a lab could not be built, started, queried or awaited."""


class CommandError(LabError):
    """A command exited non-zero (or could not run); carries its argv, status and output."""

    def __init__(self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        status = "timed out" if returncode is None else f"exited {returncode}"
        detail = (stderr.strip() or stdout.strip())[-2000:]
        super().__init__(f"command {' '.join(self.argv)!r} {status}" + (f": {detail}" if detail else ""))


class DaemonError(LabError):
    """A daemon did not start, died, or answered with output that could not be read."""


class WaitTimeoutError(LabError):
    """A bounded wait ran out; the message holds the last observation."""


class ParseError(LabError):
    """A daemon's RIB or state output did not have the expected shape."""
