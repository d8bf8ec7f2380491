"""The log lines of changed decisions, bounded per recompute.

Every changed decision used to be logged at info, one line each: at 10,000 services a full recompute wrote
10,000 lines and spent more time building and rendering them (1.0-1.4 s in ``bench_engine.py``'s set-up) than
deciding (about 0.5 s). No router logs every route it changes by default; BIRD logs them with
``debug { routes }``. Here:

- a decision with a fallback in force (``service_fallback``) is always logged, at warning, one line each: a
  service with no eligible instance must be loud;
- of the other changed decisions (``decision_changed``), the first ``router.decision_log_lines`` of each
  recompute are logged at info, the rest at debug. At log level info those are not built at all, and the
  recompute ends with one ``decision_lines_limited`` line at info that counts them and says where they are:
  every change is in ``dyncast ctl show decisions``, the status file and the audit log.

A recompute is what the router decides between two moments with nothing pending
(:class:`~dyncast_bgp.router.runtime.RouterRuntime`): one step, or the slices of a large one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from dyncast_bgp.engine.decide import Outcome
from dyncast_bgp.engine.owner import decision_line

WHERE = "dyncast ctl show decisions, the status file, the audit log, or log_level debug"


class DecisionLog:
    """Logs changed decisions to ``logger`` (a structlog logger), at most ``lines`` at info per recompute."""

    def __init__(self, logger: Any, lines: int) -> None:
        if lines < 0:
            raise ValueError(f"decision log lines must be 0 or more, not {lines}")
        self._log = logger
        self.lines = lines
        self.logged = 0  # decision_changed lines at info in the recompute under way
        self.limited = 0  # the others
        self.fallbacks = 0

    def changed(self, outcomes: Iterable[Outcome]) -> None:
        """Log the changed decisions of one step (in the order given)."""
        debug: bool | None = None  # asked once per step, when first needed: the level can change at run time
        for outcome in outcomes:
            if outcome.fallback is not None:
                self.fallbacks += 1
                self._log.warning("service_fallback", fallback=outcome.fallback, status=outcome.status,
                                  **decision_line(outcome.decision))
            elif self.logged < self.lines:
                self.logged += 1
                self._log.info("decision_changed", status=outcome.status, **decision_line(outcome.decision))
            else:
                self.limited += 1
                if debug is None:
                    debug = self._log.bind().is_enabled_for(logging.DEBUG)
                if debug:
                    self._log.debug("decision_changed", status=outcome.status, **decision_line(outcome.decision))

    def finished(self) -> None:
        """The recompute is over: count what was not logged at info, and start again."""
        if self.limited:
            self._log.info("decision_lines_limited", changed=self.logged + self.limited + self.fallbacks,
                           logged=self.logged, fallbacks=self.fallbacks, limited=self.limited,
                           limit=self.lines, where=WHERE)
        self.logged = self.limited = self.fallbacks = 0
