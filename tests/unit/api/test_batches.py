"""``api.batches``: reading a page of batch results, every error shape included."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_xai_image.api.batches import parse_batch_results_page


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
