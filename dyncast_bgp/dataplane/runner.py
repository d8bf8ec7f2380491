"""How the backend runs ``nft``, ``ip``, ``conntrack`` and ``sysctl``: a small injected protocol.

:class:`LocalRunner` runs them here; :class:`NetnsRunner` inside a named
network namespace (``ip netns exec NS ...``, used by the integration tests,
the benchmarks and ``dyncast dataplane --netns``). Unit tests pass a fake
that records the commands and fails the test when one breaks an invariant
(tests/unit/test_dataplane_linux.py).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from dyncast_bgp.dataplane.desired import DataplaneError


@dataclass(frozen=True, slots=True)
class Completed:
    """The outcome of one command."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str = ""
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        message = (self.stderr or self.stdout).strip().splitlines()
        tail = " | ".join(message[-5:]) if message else "(no output)"
        return f"`{' '.join(self.argv[:4])}{' ...' if len(self.argv) > 4 else ''}` exited {self.returncode}: {tail}"


class Runner(Protocol):
    """Runs one command (with optional stdin) to completion; never raises for a non-zero exit."""

    def run(self, argv: Sequence[str], *, input: str | None = None) -> Completed:
        ...


class LocalRunner:
    """Runs commands in this process's network namespace."""

    def __init__(self, *, timeout: float = 300.0) -> None:
        self.timeout = timeout

    def prefix(self) -> list[str]:
        return []

    def run(self, argv: Sequence[str], *, input: str | None = None) -> Completed:
        full = [*self.prefix(), *argv]
        try:
            done = subprocess.run(full, input=input, capture_output=True, text=True, timeout=self.timeout,
                                  check=False)
        except subprocess.TimeoutExpired:
            return Completed(tuple(full), -1, "", f"timed out after {self.timeout:g} s")
        except OSError as exc:
            return Completed(tuple(full), -1, "", str(exc))
        return Completed(tuple(full), done.returncode, done.stdout, done.stderr)


class NetnsRunner(LocalRunner):
    """Runs commands inside the network namespace ``namespace`` (``ip netns exec``)."""

    def __init__(self, namespace: str, *, timeout: float = 300.0) -> None:
        super().__init__(timeout=timeout)
        self.namespace = namespace

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.namespace]


def checked(runner: Runner, argv: Sequence[str], *, input: str | None = None, what: str = "") -> Completed:
    """Run ``argv``; raise :class:`DataplaneError` (naming ``what``) when it fails."""
    done = runner.run(argv, input=input)
    if not done.ok:
        raise DataplaneError(f"{what or argv[0]} failed: {done.describe()}")
    return done
