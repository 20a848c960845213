"""``engine.budget.CostBudget``: estimates refused up front, holds while requests run, spend after."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from airflow_provider_xai_image.api.prices import USD_TICKS_PER_USD
from airflow_provider_xai_image.engine.budget import CostBudget, usd
from airflow_provider_xai_image.exceptions import XaiBudgetExceededError

CENT = USD_TICKS_PER_USD // 100


def test_usd_shows_ticks_as_dollars_to_four_places() -> None:
    assert usd(7 * CENT) == "$0.0700"
    assert usd(USD_TICKS_PER_USD * 3 // 2) == "$1.5000"


def test_no_limit_refuses_nothing() -> None:
    budget = CostBudget(None, spent_usd_ticks=10**6 * USD_TICKS_PER_USD)

    budget.check_estimate(10**6 * USD_TICKS_PER_USD)
    budget.reserve(10**6 * USD_TICKS_PER_USD)
    budget.settle(10**6 * USD_TICKS_PER_USD, 10**6 * USD_TICKS_PER_USD)

    assert budget.spent == 2 * 10**6 * USD_TICKS_PER_USD


def test_an_estimate_over_the_limit_with_what_was_spent_is_refused_naming_both() -> None:
    budget = CostBudget(0.10, spent_usd_ticks=4 * CENT)

    budget.check_estimate(6 * CENT)  # exactly at the limit
    with pytest.raises(XaiBudgetExceededError) as raised:
        budget.check_estimate(7 * CENT)

    assert str(raised.value) == (
        "Estimated cost $0.0700 (plus $0.0400 already spent) is over max_cost_usd=$0.1000; no request was sent."
    )


def test_holds_count_against_the_limit_until_they_are_settled() -> None:
    budget = CostBudget(0.10)
    budget.reserve(7 * CENT)

    with pytest.raises(XaiBudgetExceededError, match=r"next request could pass max_cost_usd=\$0\.1000"):
        budget.reserve(7 * CENT)

    budget.settle(7 * CENT, 2 * CENT)  # the request cost less than its estimate: the rest is free again
    budget.reserve(7 * CENT)
    assert budget.spent == 2 * CENT


def test_a_failed_request_settled_at_zero_frees_its_hold() -> None:
    budget = CostBudget(0.05)
    budget.reserve(5 * CENT)

    budget.settle(5 * CENT, 0)

    budget.reserve(5 * CENT)
    assert budget.spent == 0


def test_settling_past_the_limit_records_the_spend_and_stops() -> None:
    budget = CostBudget(0.05)
    budget.reserve(5 * CENT)

    with pytest.raises(XaiBudgetExceededError, match=r"\$0\.0600 spent, over max_cost_usd=\$0\.0500"):
        budget.settle(5 * CENT, 6 * CENT)

    assert budget.spent == 6 * CENT


def test_concurrent_holds_never_let_the_limit_be_passed() -> None:
    budget = CostBudget(1.00)

    def reserve_and_settle(_: int) -> bool:
        try:
            budget.reserve(3 * CENT)
        except XaiBudgetExceededError:
            return False
        budget.settle(3 * CENT, 3 * CENT)
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        accepted = sum(pool.map(reserve_and_settle, range(200)))

    assert accepted == 33  # 33 x $0.03 = $0.99: one more would pass $1.00
    assert budget.spent == 33 * 3 * CENT
