"""A scripted ExaBGP API process: relays command lines from a FIFO to ExaBGP, records its replies.

Process side (in an ExaBGP ``process`` block)::

    run /path/to/python -m dyncast_bgp.lab.announcer /dir/commands.fifo /dir/replies.log;

It forwards each complete line written to the FIFO to its stdout (ExaBGP
reads API commands there) and appends every line ExaBGP writes to its stdin
(the ``done``/``error`` acknowledgements, JSON if subscribed) to the reply
log. It opens the FIFO read-write, so writers never see end-of-file trouble,
and exits when ExaBGP closes its stdin.

Test side: :class:`Announcer` creates the FIFO, gives the
:class:`~dyncast_bgp.lab.daemons.exabgp.ApiProcess` to put in the ExaBGP
config, and :meth:`Announcer.send` writes commands and waits for one
acknowledgement per command, raising :class:`AnnounceError` on ``error``.
Useful beyond this harness for rogue-peer tests: it sends whatever it is given.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import sys
from collections.abc import Sequence
from pathlib import Path

from dyncast_bgp.lab.daemons.exabgp import ApiProcess
from dyncast_bgp.lab.errors import LabError
from dyncast_bgp.lab.poll import expect

ACKS = ("done", "error")
_PIPE_BUF = 4096


class AnnounceError(LabError):
    """ExaBGP answered ``error`` to a command (or never answered)."""


class Announcer:
    """The test side: writes commands into the FIFO and reads ExaBGP's acknowledgements."""

    def __init__(self, directory: Path, *, name: str = "announcer") -> None:
        self.name = name
        self.fifo = directory / f"{name}.fifo"
        self.replies = directory / f"{name}.replies"
        if not self.fifo.exists():
            os.mkfifo(self.fifo, 0o600)
        self.replies.touch()
        self.sent: list[str] = []

    def process(self) -> ApiProcess:
        """The ExaBGP ``process`` entry that runs the relay."""
        return ApiProcess(self.name, (sys.executable, "-m", "dyncast_bgp.lab.announcer", str(self.fifo),
                                      str(self.replies)), encoder="text")

    def acks(self) -> list[str]:
        """Every ``done``/``error`` received so far, in order."""
        return [line.strip() for line in self.replies.read_text().splitlines() if line.strip() in ACKS]

    def send(self, *commands: str, timeout: float = 10.0) -> None:
        """Send command lines; return when ExaBGP has acknowledged each, raise if any was refused."""
        for command in commands:
            if "\n" in command or not command.strip() or len(command) >= _PIPE_BUF:
                raise AnnounceError(f"not a single command line: {command!r}")
        before = len(self.acks())
        fd = expect(self._open_writer, lambda opened: opened is not None, timeout=timeout, wait=0.05,
                    what=f"{self.name} relay to open {self.fifo} (is ExaBGP running?)")
        assert fd is not None
        try:
            for command in commands:
                os.write(fd, (command.strip() + "\n").encode())  # < PIPE_BUF: each line written atomically
        finally:
            os.close(fd)
        self.sent += commands
        acks = expect(lambda: self.acks()[before:], lambda got: len(got) >= len(commands), timeout=timeout,
                      what=f"ExaBGP to acknowledge {len(commands)} command(s) sent by {self.name}",
                      diagnose=lambda: "commands: " + " | ".join(commands))
        refused = [command for command, ack in zip(commands, acks, strict=False) if ack != "done"]
        if refused:
            raise AnnounceError(f"ExaBGP refused: {refused} (see its log)")

    def _open_writer(self) -> int | None:
        try:
            return os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no reader yet
                return None
            raise


def relay(fifo: Path, replies: Path) -> int:
    """The process side: FIFO lines -> stdout, stdin lines -> reply log, until stdin closes."""
    source = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    stdin = sys.stdin.fileno()
    selector = selectors.DefaultSelector()
    selector.register(source, selectors.EVENT_READ, "commands")
    selector.register(stdin, selectors.EVENT_READ, "replies")
    pending = b""
    with replies.open("ab", buffering=0) as log:
        while True:
            for key, _ in selector.select():
                if key.data == "replies":
                    data = os.read(stdin, 65536)
                    if not data:
                        return 0
                    log.write(data)
                    continue
                with contextlib.suppress(BlockingIOError):
                    pending += os.read(source, 65536)
                lines, _, pending = pending.rpartition(b"\n")
                if lines:
                    _write_all(sys.stdout.fileno(), lines + b"\n")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m dyncast_bgp.lab.announcer FIFO REPLY_LOG", file=sys.stderr)
        return 2
    return relay(Path(args[0]), Path(args[1]))


if __name__ == "__main__":
    sys.exit(main())
