"""What the task log says about a rate limiter's pace (see :mod:`~airflow_provider_xai_image.engine.ratelimit`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_xai_image.engine.ratelimit import Change

#: Seconds between two reports of the pace in the task log.
REPORT_INTERVAL = 10.0


@dataclass
class PaceReport:
    """What the task log says about the pace: the first change at once, later ones summed up at most
    every ``interval`` seconds, and a last word when the requests are done.

    :param start: The starting pace (requests per second).
    :param interval: Seconds between two reports.
    """

    start: float
    interval: float = REPORT_INTERVAL
    #: 429s seen in all (one slowdown may gather many).
    refusals: int = 0
    _told_at: float = -math.inf
    _told_rate: float = 0.0
    _slowdowns: int = 0
    _speedups: int = 0
    _retry_after: set[float] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._told_rate = self.start

    def refused(self) -> None:
        """One more 429."""
        self.refusals += 1

    def changed(self, change: Change, in_flight: int, now: float) -> str | None:
        """Note ``change``; the report to log now, if one is due."""
        if change.refused:
            self._slowdowns += 1
            if change.retry_after is not None:
                self._retry_after.add(change.retry_after)
        else:
            self._speedups += 1
        if now - self._told_at < self.interval:
            return None
        return self._report(change.after, in_flight, now)

    def final(self, rate: float) -> str:
        """The last word: where the pace ended and how many 429s came."""
        return (
            f"Requests were paced at {rate:.2f} requests/s at the end (started at {self.start:.2f}); "
            f"xAI answered 429 {self.refusals} time(s) (never billed)."
        )

    def _report(self, rate: float, in_flight: int, now: float) -> str:
        reasons = []
        if self._slowdowns:
            waits = ", ".join(f"{seconds:g} s" for seconds in sorted(self._retry_after)) or "none"
            reasons.append(
                f"slowed down {self._slowdowns} time(s) by 429s from xAI (rate limited; Retry-After: {waits})"
            )
        if self._speedups:
            reasons.append(f"sped up {self._speedups} time(s) after runs of successes")
        message = (
            f"Pace {rate:.2f} requests/s (was {self._told_rate:.2f}): {' and '.join(reasons)}; "
            f"{in_flight} request(s) in flight, {self.refusals} 429(s) so far"
        )
        self._told_at, self._told_rate = now, rate
        self._slowdowns = self._speedups = 0
        self._retry_after.clear()
        return message
