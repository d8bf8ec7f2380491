"""When a probe reply reached this host: the kernel's receive timestamp, in the prober's monotonic time.

The prober shares its event loop with whatever else runs there: in the router, a
slice of a large recompute or the desired state built for an apply can hold the
loop for a few hundred milliseconds. A reply that arrived meanwhile waits in its
socket, and timed when it is *read* its RTT would grow by the hold; past the
probe timeout it would count as lost. A router would then see every path worse
after each of its own recomputes.

So the probe sockets ask the kernel to stamp each datagram when it arrives
(``SO_TIMESTAMPNS``, an ``SCM_TIMESTAMPNS`` control message holding a
``struct timespec`` of ``CLOCK_REALTIME``). The prober reads both clocks after
each reply it reads and moves the stamp onto its monotonic clock: arrival =
monotonic now - (real-time now - stamp). A stamp from the future or more than
:data:`MAX_HOLD` old (the wall clock stepped meanwhile) is not trusted: the read
time is used, as without a stamp.

Python's :mod:`socket` does not name ``SO_TIMESTAMPNS``. Its value is 35 on the
architectures that use Linux's generic socket options (x86, ARM, RISC-V,
PowerPC); others (MIPS, SPARC, PA-RISC, Alpha) number it differently, and there
the sockets go without stamps.
"""

from __future__ import annotations

import platform
import socket
import struct
import sys
from collections.abc import Iterable
from typing import Final

SO_TIMESTAMPNS: Final = 35
"""Linux ``SO_TIMESTAMPNS`` (``SO_TIMESTAMPNS_OLD``), also the type of its control message."""
_GENERIC_MACHINES: Final = frozenset({"x86_64", "amd64", "i386", "i686", "aarch64", "arm64", "armv6l", "armv7l",
                                      "armv8l", "riscv64", "ppc64le", "ppc64"})
_TIMESPEC: Final = struct.Struct("@ll")  # struct timespec: tv_sec, tv_nsec (native longs)
CONTROL_SPACE: Final = socket.CMSG_SPACE(_TIMESPEC.size)
"""The control buffer ``recvmsg`` needs for one timestamp."""
MAX_HOLD: Final = 60.0
"""Seconds: a stamp older than this at reading is not trusted (the wall clock may have stepped)."""


def supported() -> bool:
    """Whether this platform's ``SO_TIMESTAMPNS`` is the value this module knows."""
    return sys.platform.startswith("linux") and platform.machine().lower() in _GENERIC_MACHINES


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp what ``sock`` receives; whether it agreed."""
    if not supported():
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def pack(seconds: int, nanoseconds: int) -> tuple[int, int, bytes]:
    """The control message the kernel attaches (for tests)."""
    return socket.SOL_SOCKET, SO_TIMESTAMPNS, _TIMESPEC.pack(seconds, nanoseconds)


def arrival(control: Iterable[tuple[int, int, bytes]], real_now: float, monotonic_now: float) -> float:
    """The monotonic time the datagram arrived: its stamp in ``control`` (``recvmsg``'s ancillary data) moved
    from the real-time clock (read as ``real_now``) onto the monotonic one (read as ``monotonic_now``);
    ``monotonic_now`` itself when there is no stamp, or one not to trust."""
    for level, kind, data in control:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            seconds, nanoseconds = _TIMESPEC.unpack_from(data)
            held: float = real_now - (seconds + nanoseconds / 1e9)
            if 0.0 <= held <= MAX_HOLD:
                return monotonic_now - held
            return monotonic_now
    return monotonic_now
