"""``api.batches``: how a batch job is judged (a validating batch, counts short of what was submitted,
xAI's refusal, expiry with a bare-date ``expire_time``, failures summed over the batches of a job), and
reading a page of batch results, every error shape included."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from airflow_provider_xai_image.api.batches import (
    Batch,
    BatchState,
    judge,
    judge_one,
    parse_batch_results_page,
    split_batch_ids,
)

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def batch(batch_id: str = "b1", *, expire_time: str | None = "2026-03-11", **state: int) -> Batch:
    return Batch(batch_id=batch_id, expire_time=expire_time, state=BatchState(**state))


def done(batch_id: str, requests: int, errors: int = 0) -> Batch:
    return batch(batch_id, num_requests=requests, num_success=requests - errors, num_error=errors)


@pytest.mark.parametrize(
    ("batches", "expected", "fraction", "status", "message"),
    [
        pytest.param([batch()], None, 0.0, "pending", "batch b1: xAI is validating the input file", id="validating"),
        pytest.param(
            [batch(num_requests=3, num_success=3)],
            [5],
            0.0,
            "pending",
            "batch b1: 3 succeeded, 0 failed, 0 cancelled, 0 pending of 3 (xAI counts 3 of 5)",
            id="fewer-counted-than-submitted",
        ),
        pytest.param(
            [batch(num_requests=4, num_success=1, num_pending=3)],
            [4],
            0.0,
            "pending",
            "batch b1: 1 succeeded, 0 failed, 0 cancelled, 3 pending of 4",
            id="requests-pending",
        ),
        pytest.param(
            [done("b1", 4), done("b2", 2)],
            [4, 2],
            0.0,
            "success",
            "batch b1: 4 succeeded, 0 failed, 0 cancelled, 0 pending of 4; "
            "batch b2: 2 succeeded, 0 failed, 0 cancelled, 0 pending of 2",
            id="every-part-done",
        ),
        pytest.param(
            [done("b1", 10, errors=2), done("b2", 10, errors=2)],
            None,
            0.15,
            "failed",
            "batch b1: 8 succeeded, 2 failed, 0 cancelled, 0 pending of 10; "
            "batch b2: 8 succeeded, 2 failed, 0 cancelled, 0 pending of 10; "
            "4 failed requests, over max_failed_fraction=0.15 (3 allowed)",
            id="failures-summed-over-parts",
        ),
        pytest.param(
            [done("b1", 10, errors=2), done("b2", 10, errors=2)],
            None,
            0.2,
            "success",
            "batch b1: 8 succeeded, 2 failed, 0 cancelled, 0 pending of 10; "
            "batch b2: 8 succeeded, 2 failed, 0 cancelled, 0 pending of 10",
            id="failures-within-the-fraction",
        ),
        pytest.param(
            [
                done("b1", 10, errors=9),
                Batch(
                    batch_id="b2",
                    cancel_time="2026-03-10T11:00:00Z",
                    cancel_by_xai_message="Invalid input file: line 3",
                    state=BatchState(),
                ),
            ],
            None,
            0.0,
            "refused",
            "batch b1: 1 succeeded, 9 failed, 0 cancelled, 0 pending of 10; "
            "batch b2: 0 succeeded, 0 failed, 0 cancelled, 0 pending of 0; "
            "xAI cancelled it: Invalid input file: line 3",
            id="refused-by-xai-beats-failed",
        ),
        pytest.param(
            [
                Batch(
                    batch_id="b1",
                    cancel_time="2026-03-10T11:00:00Z",
                    state=BatchState(num_requests=2, num_success=1, num_cancelled=1),
                )
            ],
            None,
            1.0,
            "refused",
            "batch b1: 1 succeeded, 0 failed, 1 cancelled, 0 pending of 2; cancelled at 2026-03-10T11:00:00Z",
            id="cancelled",
        ),
        pytest.param(
            [batch(expire_time="2026-03-10", num_requests=2, num_pending=2)],
            None,
            0.0,
            "pending",
            "batch b1: 0 succeeded, 0 failed, 0 cancelled, 2 pending of 2",
            id="bare-date-expires-at-the-end-of-the-day",
        ),
        pytest.param(
            [batch(expire_time="2026-03-09", num_requests=2, num_pending=2)],
            None,
            0.0,
            "failed",
            "batch b1: 0 succeeded, 0 failed, 0 cancelled, 2 pending of 2; expired at 2026-03-09",
            id="expired-while-pending",
        ),
        pytest.param(
            [batch(expire_time="2026-03-10T11:59:59Z")],
            None,
            0.0,
            "failed",
            "batch b1: xAI is validating the input file; expired at 2026-03-10T11:59:59Z",
            id="expired-while-validating",
        ),
        pytest.param(
            [batch(expire_time="2026-03-09", num_requests=2, num_success=2)],
            [2],
            0.0,
            "success",
            "batch b1: 2 succeeded, 0 failed, 0 cancelled, 0 pending of 2",
            id="done-before-it-expired",
        ),
    ],
)
def test_judge(batches: list[Batch], expected: list[int] | None, fraction: float, status: str, message: str) -> None:
    outcome = judge(batches, fraction, expected, now=NOW)

    assert (outcome.status, outcome.message) == (status, message)


def test_a_batch_id_may_name_the_parts_of_a_job() -> None:
    assert split_batch_ids("batch_a, batch_b,,batch_c ") == ["batch_a", "batch_b", "batch_c"]
    assert split_batch_ids(["batch_a", " "]) == ["batch_a"]
    assert judge_one(batch(num_requests=1, num_success=1), expected_requests=1, now=NOW).status == "success"


def image_response(url: str) -> dict[str, Any]:
    return {"data": [{"url": url, "mime_type": "image/jpeg"}], "usage": {"cost_in_usd_ticks": 100_000_000}}


def test_results_page_with_a_response_and_every_error_shape() -> None:
    page = {
        "results": [
            {
                "batch_request_id": "a",
                "batch_result": {"response": {"image_generation": image_response("https://x/a")}},
            },
            {"batch_request_id": "b", "batch_result": {"error": {"code": 3, "message": "boom"}}},
            {"batch_request_id": "c", "batch_result": {"response": {"other_kind": image_response("https://x/c")}}},
            {"batch_request_id": "d", "batch_result": {"error": "plain text error"}},
            {"batch_request_id": "e", "error_message": "top-level error"},
        ],
        "pagination_token": "next-page",
    }

    results, token = parse_batch_results_page(page, "grok-imagine-image")

    assert token == "next-page"
    by_id = {result.batch_request_id: result for result in results}
    assert by_id["a"].result is not None
    assert by_id["a"].result.images[0].url == "https://x/a"
    assert by_id["a"].result.model == "grok-imagine-image"
    assert by_id["a"].result.cost_usd_ticks == 100_000_000
    assert (by_id["b"].result, by_id["b"].error) == (None, "boom (code 3)")
    assert by_id["c"].result is not None  # whichever single kind key is there
    assert by_id["c"].result.images[0].url == "https://x/c"
    assert by_id["d"].error == "plain text error"
    assert by_id["e"].error == "top-level error"
    assert all(result.unreadable is None for result in results)


def test_a_result_in_an_unknown_shape_is_unreadable_not_lost() -> None:
    page = {
        "results": [
            {"batch_request_id": "x", "batch_result": {}},
            {"batch_request_id": "y", "batch_result": {"response": {"a": {}, "b": {}}}},
            {"batch_request_id": "z", "succeeded": True},
        ]
    }

    results, token = parse_batch_results_page(page, "m")

    assert token is None
    assert [result.batch_request_id for result in results] == ["x", "y", "z"]
    assert all(result.unreadable and result.result is None and result.error is None for result in results)


@pytest.mark.parametrize("token", [None, ""])
def test_a_page_without_a_token_is_the_last(token: str | None) -> None:
    page: dict[str, Any] = {"results": []}
    if token is not None:
        page["pagination_token"] = token

    assert parse_batch_results_page(page, "m") == ([], None)


@pytest.mark.parametrize("page", [{}, {"succeeded": [], "failed": []}, {"results": {"a": 1}}])
def test_a_page_without_a_results_list_is_an_error(page: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="'results' list"):
        parse_batch_results_page(page, "m")
