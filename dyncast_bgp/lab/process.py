"""Child processes of a lab: start with output to a log file, stop by process group.

Every process is started in its own session (``start_new_session``), so its
process-group id equals its pid and :func:`stop_all` can signal the process
and every child that stayed in its group. Stopping never reaps the leader
before the last ``SIGKILL`` to its group: while the leader is an unreaped
zombie its pid (= the group id) cannot be reused, so the group signal can only
reach processes we started. Children that left the group (ExaBGP puts each API
process in a group of its own) are reached by the namespace sweep in
:mod:`dyncast_bgp.lab.netns`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

_POLL_INTERVAL = 0.02


class Process:
    """A started child process whose stdout and stderr go to ``log_path``."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, popen: subprocess.Popen[bytes]) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.log_path = log_path
        self._popen = popen

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: killed by that signal), else ``None``."""
        return self._popen.returncode

    def alive(self) -> bool:
        """True while the process has not exited (a zombie counts as exited)."""
        if self._popen.returncode is not None:
            return False
        try:
            status = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False
        return status is None

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the process output (for error messages)."""
        return tail(self.log_path, lines)

    def describe(self) -> str:
        state = "running" if self.alive() else f"exited ({self._exit_text()})"
        return f"{self.name} (pid {self.pid}, {state}, log {self.log_path})"

    def _exit_text(self) -> str:
        code = self._popen.poll()
        if code is None:
            return "not yet reaped"
        return f"killed by signal {-code}" if code < 0 else f"status {code}"

    def send_signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process's group: the process and what it started (a node's ``sh -c`` cmd)."""
        self._signal_group(sig)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self._popen.returncode is not None:  # reaped: the group id may belong to someone else now
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)

    def _reap(self) -> None:
        self._popen.wait()


def spawn(name: str, argv: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None) -> Process:
    """Start ``argv`` in a new session; stdin is ``/dev/null``, output appends to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        popen = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 env=None if env is None else dict(env), cwd=cwd, start_new_session=True)
    return Process(name, argv, log_path, popen)


def stop_all(processes: Iterable[Process], *, grace: float = 3.0) -> None:
    """Stop processes in parallel: SIGTERM each group, wait up to ``grace`` s, SIGKILL the groups, reap."""
    pending = list(processes)
    for process in pending:
        process._signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(p.alive() for p in pending) and time.monotonic() < deadline:
        time.sleep(_POLL_INTERVAL)
    for process in pending:
        process._signal_group(signal.SIGKILL)  # also the members left behind by a leader that exited
    for process in pending:
        process._reap()


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file, or a note that it is missing."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"({path} does not exist)"
    text = data[-65536:].decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])
