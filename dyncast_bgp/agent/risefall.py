"""Rise/fall hysteresis of health results, as a pure state machine.

An instance turns unhealthy after ``fall`` consecutive failed checks and healthy
again after ``rise`` consecutive successful ones; a result that agrees with the
current state resets the count. While a change is in progress (some contrary
results seen) checks run at the fast interval, as in ExaBGP's healthcheck and
anycast-healthchecker, so a real failure is confirmed quickly while one flaky
result costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RiseFall:
    """Where one instance's health stands.

    ``streak`` counts consecutive results contradicting ``healthy``; it is
    always below the threshold for a flip (``fall`` when healthy, ``rise``
    when not), because reaching it flips ``healthy`` and resets the streak.
    """

    healthy: bool
    streak: int
    rise: int
    fall: int

    def __post_init__(self) -> None:
        if self.rise < 1 or self.fall < 1:
            raise ValueError(f"rise ({self.rise}) and fall ({self.fall}) must be at least 1")
        if not 0 <= self.streak < self.needed:
            raise ValueError(f"streak {self.streak} must be in 0..{self.needed - 1}")

    @property
    def needed(self) -> int:
        """Consecutive contrary results that flip ``healthy`` from here on a zero streak."""
        return self.fall if self.healthy else self.rise

    @property
    def changing(self) -> bool:
        """True while a flip is in progress (at least one contrary result pending)."""
        return self.streak > 0


def initial(rise: int, fall: int, start_healthy: bool) -> RiseFall:
    """The state before any result: ``start_healthy`` with no streak."""
    return RiseFall(healthy=start_healthy, streak=0, rise=rise, fall=fall)


def observe(state: RiseFall, ok: bool) -> tuple[RiseFall, bool]:
    """Feed one check result; returns the new state and whether ``healthy`` flipped."""
    if ok == state.healthy:
        return (replace(state, streak=0) if state.streak else state), False
    streak = state.streak + 1
    if streak >= state.needed:
        return replace(state, healthy=ok, streak=0), True
    return replace(state, streak=streak), False


def next_interval(state: RiseFall, interval: float, fast_interval: float) -> float:
    """Seconds until the next check: ``fast_interval`` while changing, else ``interval``."""
    return fast_interval if state.changing else interval
