"""Logging rejected input without letting a hostile or broken peer flood the log.

Every rejection is counted (by the RIB, by reason); it is *logged* at most
once per (peer, D-SID, D-BID, reason) per ``interval`` (a minute), the line
saying how many like it were not logged since. :class:`LogLimiter` is pure
(time passed in) and bounded: entries older than the interval are swept when
it grows past ``max_keys``, and beyond that new keys are not logged at all
(still counted).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from dyncast_bgp.engine.trust import Rejection

LOG_INTERVAL = 60.0
MAX_KEYS = 10_000

_Key = tuple[str, str, str, str]


class _Logger(Protocol):
    def warning(self, event: str, **fields: object) -> object: ...


class LogLimiter:
    """``allow(key, now)``: None when the key was logged within ``interval``, else the number held back."""

    def __init__(self, *, interval: float = LOG_INTERVAL, max_keys: int = MAX_KEYS) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[_Key, float] = {}
        self._held: dict[_Key, int] = {}
        self.suppressed = 0

    def allow(self, key: _Key, now: float) -> int | None:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            self.suppressed += 1
            return None
        if last is None and len(self._last) >= self.max_keys:
            self._sweep(now)
            if len(self._last) >= self.max_keys:
                self.suppressed += 1
                return None
        self._last[key] = now
        return self._held.pop(key, 0)

    def _sweep(self, now: float) -> None:
        for key in [key for key, last in self._last.items() if now - last >= self.interval]:
            del self._last[key]
            self._held.pop(key, None)


def log_rejections(rejections: Iterable[Rejection], limiter: LogLimiter, now: float, log: _Logger) -> None:
    """One ``input_rejected`` warning per rejection the limiter lets through."""
    for rejection in rejections:
        held = limiter.allow((rejection.peer, rejection.service, rejection.binding, rejection.reason), now)
        if held is None:
            continue
        fields: dict[str, object] = {"reason": rejection.reason, "peer": rejection.peer,
                                     "service": rejection.service, "binding": rejection.binding,
                                     "detail": rejection.detail[:200]}
        if rejection.rule is not None:
            fields["rule"] = rejection.rule
        if held:
            fields["not_logged_since"] = held
        log.warning("input_rejected", **fields)
