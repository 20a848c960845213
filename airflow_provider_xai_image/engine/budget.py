"""Keeping a task within ``max_cost_usd``: estimates reserved before a request, actual costs after."""

from __future__ import annotations

import threading

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.exceptions import XaiBudgetExceededError


def usd(ticks: int) -> str:
    return f"${ticks / USD_TICKS_PER_USD:.4f}"


class CostBudget:
    """A spending limit shared by concurrent requests (thread-safe).

    :param max_cost_usd: The limit in USD, or None for no limit.
    :param spent_usd_ticks: What earlier tries already spent (or possibly spent) on this task's images.
    """

    def __init__(self, max_cost_usd: float | None, spent_usd_ticks: int = 0) -> None:
        self.limit = None if max_cost_usd is None else round(max_cost_usd * USD_TICKS_PER_USD)
        self.spent = spent_usd_ticks
        self._reserved = 0
        self._lock = threading.Lock()

    def check_estimate(self, estimate_usd_ticks: int) -> None:
        """Refuse the whole job up front when its estimate is over the limit."""
        if self.limit is not None and self.spent + estimate_usd_ticks > self.limit:
            raise XaiBudgetExceededError(
                f"Estimated cost {usd(estimate_usd_ticks)} (plus {usd(self.spent)} already spent) is over "
                f"max_cost_usd={usd(self.limit)}; no request was sent."
            )

    def reserve(self, estimate_usd_ticks: int) -> None:
        """Hold ``estimate`` for one request, or fail if it could pass the limit."""
        with self._lock:
            if self.limit is not None and self.spent + self._reserved + estimate_usd_ticks > self.limit:
                raise XaiBudgetExceededError(
                    f"Stopping: {usd(self.spent)} spent, and the next request could pass "
                    f"max_cost_usd={usd(self.limit)}."
                )
            self._reserved += estimate_usd_ticks

    def settle(self, estimate_usd_ticks: int, actual_usd_ticks: int) -> None:
        """Replace a reservation by what was (or may have been) spent; fail once the spend passed the limit."""
        with self._lock:
            self._reserved -= estimate_usd_ticks
            self.spent += actual_usd_ticks
            if self.limit is not None and self.spent > self.limit:
                raise XaiBudgetExceededError(f"Stopping: {usd(self.spent)} spent, over max_cost_usd={usd(self.limit)}.")
