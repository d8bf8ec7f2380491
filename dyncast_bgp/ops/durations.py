"""Durations as operators write them: ``90``, ``90s``, ``10m``, ``2h``, ``1d``, ``1.5m``. Pure."""

from __future__ import annotations

import math

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | float) -> float:
    """Seconds; raises ValueError naming the input when it is not a finite, non-negative duration."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        seconds = float(text)
    else:
        raw = str(text).strip().lower()
        scale = UNITS.get(raw[-1:]) if raw else None
        number = raw[:-1] if scale is not None else raw
        try:
            seconds = float(number) * (scale or 1.0)
        except ValueError:
            raise ValueError(f"not a duration: {text!r} (seconds, or a number with s, m, h or d)") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {text!r} (must be finite and >= 0)")
    return seconds
