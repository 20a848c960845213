"""The provider's parsers and request builders against real wire messages it did not write."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pytest
from wire_support import FIXTURES, fixture, response

from airflow_provider_xai_image.api.batches import Batch, judge, parse_batch_results_page
from airflow_provider_xai_image.api.images import NO_IMAGE_ERROR, ImageRequest, parse_image_response
from airflow_provider_xai_image.api.prices import ImageModel
from airflow_provider_xai_image.exceptions import XaiAuthError
from airflow_provider_xai_image.hooks.batch_api import _batches_page
from airflow_provider_xai_image.hooks.http_core import error_from_response
from airflow_provider_xai_image.storage.image_checks import ImageWriter

NOW = datetime(2026, 11, 21, tzinfo=timezone.utc)


def test_every_fixture_names_its_source() -> None:
    names = sorted(path.stem for path in FIXTURES.glob("*.json"))
    assert len(names) >= 18
    for name in names:
        fixture(name)


def test_generate_url() -> None:
    result = parse_image_response(response("generate_url"), "grok-imagine-image")
    assert [(image.url, image.filtered) for image in result.images] == [("https://imgen.x.ai/example.jpeg", False)]
    assert result.cost_usd_ticks == 200_000_000
    assert result.images[0].revised_prompt is None  # absent: recorded as null, never invented
    assert result.error is None


@pytest.mark.parametrize(("name", "mime_type"), [("generate_b64", "image/png"), ("generate_b64_raw", "image/jpeg")])
def test_generate_b64_with_and_without_data_uri_prefix(name: str, mime_type: str) -> None:
    result = parse_image_response(response(name), "grok-imagine-image")
    (image,) = result.images
    writer = ImageWriter(io.BytesIO(), name)
    writer.write(image.data or b"")
    assert writer.result().image_type.mime_type == mime_type


def test_generate_blocked_per_image() -> None:
    result = parse_image_response(response("generate_blocked"), "grok-imagine-image")
    assert [image.filtered for image in result.images] == [True]
    assert result.error is None


def test_an_empty_answer_is_an_error_not_a_prompt_done() -> None:
    assert parse_image_response({"data": [], "block_reason": ""}, "m").error == NO_IMAGE_ERROR
    blocked = parse_image_response({"data": [], "block_reason": "input moderated"}, "m", expected_images=2)
    assert ([image.filtered for image in blocked.images], blocked.error) == ([True, True], None)


def test_edit_request_bodies_match_public_clients() -> None:
    data = fixture("edit_request")
    one = data["request_variants"]["one_image_data_uri"]
    request = ImageRequest.build(
        prompt=one["prompt"], model=one["model"], n=1, response_format="b64_json", source_images=(one["image"]["url"],)
    )
    assert request.body() == one
    several = data["request_variants"]["several_images_data_uri"]
    sources = tuple(source["url"] for source in several["images"])
    request = ImageRequest.build(
        prompt=several["prompt"], model=several["model"], n=1, response_format="b64_json", source_images=sources
    )
    assert request.body() == several
    assert request.path == data["request"]["path"].removeprefix("/v1/")


def test_batch_line_matches_public_client() -> None:
    line = fixture("batch_line")["request"]["jsonl_line"]
    body = {name: value for name, value in line["body"].items() if name != "quality"}  # "high" is refused (rev. 2)
    request = ImageRequest.build(**body)
    assert request.batch_line(line["custom_id"]) == {**line, "body": body}


def test_models_without_image_price_give_no_price() -> None:
    (model,) = [ImageModel.model_validate(item) for item in response("models_list")["models"]]
    assert model.price_usd_ticks(None, None) is None  # the hook then estimates with the highest known price


def test_models_pricing_matrix_beats_image_price() -> None:
    models = {item["id"]: ImageModel.model_validate(item) for item in response("models_list_pricing")["models"]}
    assert models["grok-imagine-image"].price_usd_ticks(None, "2k") == 200_000_000
    quality = models["grok-imagine-image-quality"]
    tiers = {(tier.quality, tier.resolution): tier.price_per_image for tier in quality.pricing}
    assert quality.price_usd_ticks("medium", "1k") == tiers[("medium", "1k")]
    assert quality.price_usd_ticks(None, None) == max(tiers.values())


def test_files_upload_answer_has_an_id() -> None:
    assert response("files_upload")["id"].startswith("file_")


def test_batch_while_validating_is_not_done() -> None:
    batch = Batch.model_validate(response("batch_validating"))
    assert batch.is_validating
    assert judge([batch], 0.0, [2], now=datetime(2025, 11, 11, 12, tzinfo=timezone.utc)).status == "pending"


def test_bare_date_expire_time_is_the_end_of_that_day() -> None:
    batch = Batch.model_validate(response("batch_validating"))
    assert batch.expires_at() == datetime(2025, 11, 12, 23, 59, 59, 999999, tzinfo=timezone.utc)


def test_running_done_and_refused_batches() -> None:
    running = Batch.model_validate(response("batch_running"))
    done = Batch.model_validate(response("batch_done"))
    refused = Batch.model_validate(response("batch_cancelled_by_xai"))
    assert judge([running], 0.0, now=NOW).status == "pending"
    assert judge([done], 0.0, [2], now=NOW).status == "success"
    assert judge([done], 0.0, [3], now=NOW).status == "pending"  # xAI counts fewer than were submitted
    outcome = judge([refused], 0.0, now=NOW)
    assert outcome.status == "refused"
    assert "Model grok-nope is not supported" in outcome.message


def test_batch_list_page() -> None:
    batches, token = _batches_page(response("batch_list"))
    assert len(batches) == 2
    assert token is None
    assert judge([batches[1]], 0.0, now=NOW).status == "refused"


def test_results_page_mixing_success_and_every_error_shape() -> None:
    results, token = parse_batch_results_page(response("results_page"), "grok-imagine-image")
    by_id = {result.batch_request_id: result for result in results}
    assert token == "next/page"
    success = by_id["image-1"]
    assert success.error is None
    assert success.unreadable is None
    assert success.result is not None
    assert success.result.cost_usd_ticks == 42
    assert by_id["failed"].error == "Invalid request. (code 3)"
    assert by_id["cancelled"].error == "Cancelled. (code 1)"
    assert by_id["string-error"].error
    assert by_id["string-error"].result is None
    assert all(result.unreadable is None for result in results)


def test_unknown_result_shape_is_reported_not_lost() -> None:
    page = {"results": [{"batch_request_id": "7", "batch_result": {"response": {"a": {}, "b": {}}}}, {"x": 1}]}
    results, _ = parse_batch_results_page(page, "m")
    assert [result.unreadable is not None for result in results] == [True, True]


@pytest.mark.parametrize("name", ["error_400", "error_400_percent_encoded", "error_401"])
def test_a_refused_key_is_an_auth_error(name: str) -> None:
    data = fixture(name)
    error = error_from_response("GET", "api-key", data["status"], json.dumps(data["response"]), None)
    assert isinstance(error, XaiAuthError)
    assert "key was refused" in str(error)
